import { readSiteSecret } from '../secrets.ts';
import { join } from 'node:path';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { AppComponent } from '../../contracts/app-component.ts';
import type { DesiredApp } from '../../contracts/messages.ts';
import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/logger.ts';
import { parse } from '../../stream/parser.ts';
import type { StreamRouter } from '../record-router.ts';
import { ModbusSource } from './modbus.ts';
import { OpcuaSource } from './opcua.ts';
import type { IndustrialSource, SourceDeps, SourceStatus } from './source.ts';

export interface SourceHostDeps {
  router: StreamRouter;
  /** The site's data dir: PKI in pki/opcua, secrets in secrets/. */
  dataDir: string;
  clock: Clock;
  log: Logger;
  registry?: Registry;
  /**
   * The durable path into a stream (the site's journal, then the rules): a reading is journaled
   * before any rule sees it, so a crash replays it. Absent: straight to the rules (tools, tests).
   */
  ingest?: (app: string, stream: string, records: readonly unknown[]) => Promise<unknown>;
}

/**
 * Runs the industrial sources of the apps a site has been given: one per stream that declares a
 * `source` and that a rule reads. Their records enter the stream through the site's journal (the
 * `ingest` path: the same checks, durability and replay as MQTT and HTTP records). A new app version restarts only the sources whose
 * stream definition changed. Registered after the rules, so a source's first record finds them.
 */
export class SourceHost implements AppComponent {
  readonly name = 'sources';
  private readonly running = new Map<string, { app: string; source: IndustrialSource; fingerprint: string }>();
  private readonly values?: Counter<'protocol'>;
  private readonly errors?: Counter<'protocol' | 'code'>;

  constructor(private readonly d: SourceHostDeps) {
    if (d.registry) {
      this.values = new Counter({
        name: 'ew_edge_source_values_total',
        help: 'Values read from industrial sources (OPC UA, Modbus)',
        labelNames: ['protocol'],
        registers: [d.registry],
      });
      this.errors = new Counter({
        name: 'ew_edge_source_errors_total',
        help: 'Industrial source errors by protocol and code',
        labelNames: ['protocol', 'code'],
        registers: [d.registry],
      });
      const self = this;
      new Gauge({
        name: 'ew_edge_sources_connected',
        help: 'Industrial sources connected now',
        registers: [d.registry],
        collect() {
          this.set(self.statuses().filter((s) => s.state === 'connected').length);
        },
      });
    }
  }

  statuses(): SourceStatus[] {
    return [...this.running.values()].map((r) => ({
      ...r.source.status,
      ...(r.source.status.lastError ? { lastError: { ...r.source.status.lastError } } : {}),
    }));
  }

  private wanted(app: DesiredApp): Map<string, { stream: DesiredApp['manifest']['spec']['streams'][number]; fingerprint: string }> {
    const read = new Set<string>();
    for (const r of app.manifest.spec.rules) {
      try {
        read.add(parse(r.sql).from.name);
      } catch {
        /* the rule host reports it */
      }
    }
    const out = new Map<string, { stream: DesiredApp['manifest']['spec']['streams'][number]; fingerprint: string }>();
    for (const s of app.manifest.spec.streams) {
      if (s.source && read.has(s.name))
        out.set(`${app.name}/${s.name}`, { stream: s, fingerprint: JSON.stringify([s.source, s.timestamp]) });
    }
    return out;
  }

  async start(app: DesiredApp): Promise<void> {
    await this.sync(app);
  }

  async update(_prev: DesiredApp, next: DesiredApp): Promise<void> {
    await this.sync(next);
  }

  async stop(app: DesiredApp): Promise<void> {
    await Promise.all([...this.running].filter(([, r]) => r.app === app.name).map(([k]) => this.unload(k)));
  }

  private async sync(app: DesiredApp): Promise<void> {
    const want = this.wanted(app);
    for (const [k, r] of [...this.running]) {
      if (r.app !== app.name) continue;
      if (want.get(k)?.fingerprint !== r.fingerprint) await this.unload(k);
    }
    for (const [k, w] of want) {
      if (this.running.has(k)) continue;
      const src = w.stream.source!;
      const protocol = 'opcua' in src ? 'opcua' : 'modbus';
      const deps: SourceDeps = {
        app: app.name,
        stream: w.stream.name,
        timestampField: w.stream.timestamp,
        clock: this.d.clock,
        log: this.d.log,
        pkiDir: join(this.d.dataDir, 'pki', 'opcua'),
        secret: (name) => readSiteSecret(this.d.dataDir, name),
        emit: (rec) => {
          this.values?.inc({ protocol }, Object.keys(rec).length - (w.stream.timestamp ? 1 : 0));
          // A rule that failed to start reads nothing: its records would only fill the dead letters.
          if (!this.d.router.hasSubscriber(app.name, w.stream.name)) return;
          if (!this.d.ingest) {
            this.d.router.push(app.name, w.stream.name, [rec]);
            return;
          }
          // A poll cannot be slowed like a device: a reading the site cannot make durable (its
          // intake over its bound, shutting down) is counted as a source error, not silently lost.
          this.d.ingest(app.name, w.stream.name, [rec]).catch((e: Error & { code?: string }) => {
            this.errors?.inc({ protocol, code: e.code ?? 'INTAKE_FULL' });
            this.d.log.warn(
              { app: app.name, stream: w.stream.name, protocol, err: e.message },
              'industrial reading not made durable; dropped',
            );
          });
        },
        onError: (code, message) => {
          this.errors?.inc({ protocol, code });
          this.d.log.warn({ app: app.name, stream: w.stream.name, protocol, code, err: message }, 'industrial source error');
        },
      };
      const source = 'opcua' in src ? new OpcuaSource(src.opcua, deps) : new ModbusSource(src.modbus, deps);
      this.running.set(k, { app: app.name, source, fingerprint: w.fingerprint });
      source.start();
      this.d.log.info({ app: app.name, stream: w.stream.name, protocol, endpoint: source.status.endpoint }, 'industrial source started');
    }
  }

  private async unload(key: string): Promise<void> {
    const r = this.running.get(key);
    if (!r) return;
    this.running.delete(key);
    await r.source.close().catch((e: Error) => this.d.log.warn({ key, err: e.message }, 'closing an industrial source failed'));
  }

  async close(): Promise<void> {
    await Promise.all([...this.running.keys()].map((k) => this.unload(k)));
  }
}
