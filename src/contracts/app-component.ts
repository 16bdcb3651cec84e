import type { DesiredApp } from './messages.ts';

/**
 * What a site runs for an app. The stream engine (rules, src/edge/rules.ts), the industrial
 * sources (src/edge/sources/) and the model runtimes (src/inference/host.ts) each register an
 * AppComponent; the supervisor (src/edge/apps.ts) starts, updates and stops them as the desired
 * state changes. Lifecycle per app: start → update* → stop.
 *
 * It lives here, not beside the supervisor, so that inference can implement it without importing
 * the agent (the agent imports inference: that way round only).
 */
export interface AppComponent {
  readonly name: string;
  start(app: DesiredApp): Promise<void>;
  update(prev: DesiredApp, next: DesiredApp): Promise<void>;
  stop(app: DesiredApp): Promise<void>;
  /**
   * Optional, before any component starts a new app: claim what must not be missed while the
   * others start (the rule host claims its streams' records in the journal while models load).
   */
  prepare?(app: DesiredApp): void;
}
