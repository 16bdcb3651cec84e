import { PAYLOAD_LIMITS, SiteStatusBody } from '../contracts/messages.ts';
import { clipText, fitToSchema } from '../contracts/bounds.ts';
import type { Clock } from '../lib/clock.ts';
import type { Logger } from '../lib/logger.ts';
import type { AcceleratorInfo } from './accelerators.ts';
import type { AppSupervisor } from './apps.ts';
import type { DeviceSource } from './devices.ts';
import type { Outbox } from './outbox.ts';
import type { RuleHost } from './rules.ts';
import type { DeadLetters } from './record-router.ts';
import type { SourceHost } from './sources/host.ts';
import type { WriteHost } from './writes.ts';
import type { ModelHost } from '../inference/host.ts';
import type { RoutedInference } from './rpc-infer.ts';
import { systemFacts } from './system.ts';

/** What the site's status is assembled from (each part reports its own piece). */
export interface StatusParts {
  agentVersion: string;
  bootId: string;
  startedAt: number;
  heartbeatIntervalS: number;
  dataDir: string;
  clock: Clock;
  log: Logger;
  supervisor: AppSupervisor;
  /** Runtimes and accelerators, probed once at start. */
  runtimes: string[];
  accelerators: string[];
  accel: AcceleratorInfo;
  outbox: Outbox;
  devices: DeviceSource;
  rules: RuleHost;
  dead: DeadLetters;
  sources: SourceHost;
  writes: WriteHost;
  models: ModelHost;
  routed: RoutedInference;
}

/** Optional lists left out, in this order, when a status would pass its payload bound. */
const SHED = ['writes', 'sources', 'models', 'applyErrors', 'rules', 'acceleratorInfo'] as const;
/** Room kept for the envelope around the body. */
const ENVELOPE_ROOM = 512;

/**
 * The site's status (heartbeats, `/api/v1/status`): assembled from its parts, then made to fit
 * the contract the cloud checks it against (`SiteStatusBody` and the `reported` payload bound),
 * so a long error or a long list costs its own field, never the whole heartbeat — a heartbeat the
 * cloud refused would show the site offline.
 */
export function createStatus(p: StatusParts): () => SiteStatusBody {
  const warned = new Set<string>();
  return () =>
    boundStatus(assembleStatus(p), (what, detail) => {
      // Said once per kind of cut: a status goes every few seconds.
      if (warned.has(what)) return;
      warned.add(what);
      p.log.warn({ ...detail }, what);
    });
}

export function assembleStatus(p: StatusParts): SiteStatusBody {
  const { supervisor, models, routed, outbox } = p;
  return {
    agentVersion: p.agentVersion,
    bootId: p.bootId,
    uptimeS: (p.clock.now() - p.startedAt) / 1000,
    heartbeatIntervalS: p.heartbeatIntervalS,
    generation: supervisor.generation,
    applyError: supervisor.error,
    applyErrors: supervisor.errors(),
    apps: supervisor.running(),
    system: systemFacts(p.dataDir),
    runtimes: p.runtimes,
    accelerators: p.accelerators,
    acceleratorInfo: p.accel,
    outbox: { pending: outbox.pending, dropped: outbox.dropped },
    devices: p.devices.stats,
    rules: p.rules.statuses(),
    deadLetters: p.dead.total,
    sources: p.sources.statuses(),
    writes: p.writes.statuses(),
    models: models.list().map((m) => {
      const dl = models.progress.get(`${m.app}/${m.name}`);
      return {
        app: m.app,
        name: m.name,
        version: m.version,
        state: m.state,
        ...(m.model ? { device: m.model.device } : {}),
        ...(m.model?.llm ? { runtime: m.model.llm.health() } : {}),
        ...(m.error ? { error: m.error } : {}),
        ...(dl ? { download: dl } : {}),
        stats: m.stats.summary(),
        queued: m.batcher?.queueLength ?? 0,
      };
    }),
    routed: { inFlight: routed.inFlight, requests: routed.stats.requests, errors: routed.stats.errors },
  };
}

/**
 * Fits a status to the contract: fields cut to their bounds (fitToSchema), then optional lists
 * shed while the whole would pass the `reported` payload bound. `said` hears what was cut.
 */
export function boundStatus(
  body: SiteStatusBody,
  said: (what: string, detail: Record<string, unknown>) => void = () => {},
): SiteStatusBody {
  // The legacy one-text error is the likeliest to be long (every app's every failure).
  let b: SiteStatusBody =
    body.applyError && body.applyError.length > 2000 ? { ...body, applyError: clipText(body.applyError, 2000) } : body;
  const fit = fitToSchema(SiteStatusBody, b);
  if (fit.ok) {
    if (fit.fixed.length) said("status fields cut to the contract's bounds before sending", { fields: fit.fixed.slice(0, 20) });
    b = fit.value;
  } else {
    // Cannot happen for what the agent assembles unless a part breaks its own type: the field's
    // list is shed below rather than the heartbeat refused.
    said('a status field does not fit the contract; left out', { path: fit.path, issue: fit.message });
    const top = fit.path.split(/[.[]/)[0] as keyof SiteStatusBody;
    if ((SHED as readonly string[]).includes(top)) b = { ...b, [top]: undefined };
  }
  for (const field of SHED) {
    if (Buffer.byteLength(JSON.stringify(b)) <= PAYLOAD_LIMITS.reported - ENVELOPE_ROOM) break;
    said('status over its payload bound: detail lists left out', { field, limit: PAYLOAD_LIMITS.reported });
    b = { ...b, [field]: undefined };
  }
  return b;
}
