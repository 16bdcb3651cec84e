import type { AppError, DesiredApp } from '../contracts/messages.ts';
import { isEwError } from '../contracts/errors.ts';
import type { Logger } from '../lib/logger.ts';
import type { AppComponent } from '../contracts/app-component.ts';

export interface ApplyResult {
  generation: number;
  error?: string;
}

/**
 * Applies a desired state: the diff against what runs decides which apps start, update in place
 * (a new version) or stop. One app's failure is reported and does not stop the others.
 */
export class AppSupervisor {
  private runningApps = new Map<string, DesiredApp>();
  private readonly components: AppComponent[] = [];
  private applied = 0;
  private lastErrors: AppError[] = [];

  constructor(private readonly log: Logger) {}

  register(c: AppComponent): void {
    this.components.push(c);
  }

  get generation(): number {
    return this.applied;
  }
  /** The last apply's failures as data, one per app and component (what the cloud reads). */
  errors(): AppError[] {
    return [...this.lastErrors];
  }
  /** The same as one text, for clouds of contract 1.0 (which read only `applyError`). */
  get error(): string | undefined {
    return this.lastErrors.length ? this.lastErrors.map((e) => `${e.app}@${e.version}: ${e.message}`).join('; ') : undefined;
  }

  /** A component of `app` recovered by itself (a model loaded on a retry): its apply error is gone. */
  recovered(app: string, component: string): void {
    this.lastErrors = this.lastErrors.filter((e) => !(e.app === app && e.component === component));
  }
  /** The apps running now, with their manifests (their egress policies, endpoints). */
  apps(): DesiredApp[] {
    return [...this.runningApps.values()];
  }
  running(): { name: string; version: string }[] {
    return [...this.runningApps.values()].map((a) => ({ name: a.name, version: a.version }));
  }

  async apply(generation: number, apps: readonly DesiredApp[]): Promise<ApplyResult> {
    const next = new Map(apps.map((a) => [a.name, a]));
    const errors: AppError[] = [];
    const failed = (app: DesiredApp, c: AppComponent, what: string, e: unknown) =>
      errors.push({
        app: app.name,
        version: app.version,
        component: c.name,
        code: isEwError(e) ? e.code : 'INTERNAL',
        message: `${c.name} failed to ${what}: ${(e as Error).message}`,
      });
    const step = async (what: string, app: DesiredApp, fn: (c: AppComponent) => Promise<void>) => {
      for (const c of this.components) {
        try {
          await fn(c);
        } catch (e) {
          failed(app, c, what, e);
        }
      }
    };
    for (const [name, cur] of this.runningApps) {
      if (!next.has(name)) {
        await step('stop', cur, (c) => c.stop(cur));
        this.log.info({ app: name, version: cur.version }, 'app stopped');
      }
    }
    for (const [name, app] of next) {
      const cur = this.runningApps.get(name);
      if (!cur) {
        for (const c of this.components) {
          try {
            c.prepare?.(app);
          } catch (e) {
            failed(app, c, 'prepare', e);
          }
        }
        await step('start', app, (c) => c.start(app));
        this.log.info({ app: name, version: app.version, generation }, 'app started');
      } else if (cur.version !== app.version || cur.deploymentId !== app.deploymentId) {
        for (const c of this.components) {
          try {
            c.prepareUpdate?.(cur, app);
          } catch (e) {
            failed(app, c, 'prepare', e);
          }
        }
        await step('update', app, (c) => c.update(cur, app));
        this.log.info({ app: name, from: cur.version, to: app.version, generation }, 'app updated');
      }
    }
    this.runningApps = next;
    this.applied = generation;
    this.lastErrors = errors;
    return { generation, error: this.error };
  }
}
