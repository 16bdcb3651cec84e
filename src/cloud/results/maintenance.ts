import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import { Counter, type Registry } from 'prom-client';
import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/logger.ts';
import type { Store } from '../store/store.ts';
import { planRetention } from './retention.ts';

export interface ResultsMaintenanceOptions {
  store: Store;
  clock: Clock;
  log: Logger;
  registry?: Registry;
  /** This replica's name for the lease (several replicas: one maintains at a time). Default host-pid-random. */
  holder?: string;
  /** Cloud-wide retention in days for streams no policy names; undefined or 0: keep. */
  defaultDays?: number;
  /** How often a pass runs (ms). Default one hour; a pass also runs at start. */
  everyMs?: number;
  /** Rows per DELETE statement. Default 10,000. */
  batch?: number;
}

export interface MaintenanceReport {
  created: number;
  dropped: number;
  deleted: number;
}

/**
 * The I/O shell around retention.ts: on one replica at a time (a lease in the store), keeps
 * PostgreSQL's daily partitions ready, drops the days every policy has let go, and deletes the
 * older results of the tenants and streams whose policies are shorter.
 */
export class ResultsMaintenance {
  private cancel: (() => void) | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = false;
  private readonly deleted?: Counter;
  private readonly dropped?: Counter;

  /** This replica's name on the lease. */
  readonly holder: string;

  constructor(private readonly o: ResultsMaintenanceOptions) {
    this.holder = o.holder ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
    if (o.registry) {
      this.deleted = new Counter({ name: 'ew_cloud_results_deleted_total', help: 'Results deleted by retention', registers: [o.registry] });
      this.dropped = new Counter({
        name: 'ew_cloud_results_partitions_dropped_total',
        help: 'Daily result partitions dropped by retention (PostgreSQL)',
        registers: [o.registry],
      });
    }
  }

  start(): void {
    const tick = () => {
      if (this.stopped) return;
      this.running = this.runOnce()
        .catch((e) => this.o.log.warn({ err: (e as Error).message }, 'results maintenance failed; retrying at the next pass'))
        .finally(() => {
          if (!this.stopped) this.cancel = this.o.clock.setTimer(this.o.everyMs ?? 3_600_000, tick);
        });
    };
    tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.cancel?.();
    await this.running;
  }

  /** One pass; undefined when another replica holds the lease. */
  async runOnce(): Promise<MaintenanceReport | undefined> {
    const { store, clock } = this.o;
    const every = this.o.everyMs ?? 3_600_000;
    if (!(await store.acquireLease('results-maintenance', this.holder, clock.now(), 2 * every))) return undefined;
    const now = clock.now();
    const { created } = await store.maintainResultPartitions(now);
    const tenants = (await store.listTenants()).map((t) => t.id);
    const plan = planRetention(tenants, await store.listRetention(), this.o.defaultDays, now);
    const dropped = plan.dropBefore !== undefined ? await store.dropResultPartitionsBefore(plan.dropBefore) : 0;
    let deleted = 0;
    for (const step of plan.steps) deleted += await store.deleteResults(step, this.o.batch ?? 10_000);
    this.deleted?.inc(deleted);
    this.dropped?.inc(dropped);
    if (created || dropped || deleted) this.o.log.info({ created, dropped, deleted }, 'results maintenance');
    return { created, dropped, deleted };
  }
}
