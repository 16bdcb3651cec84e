import { join } from 'node:path';
import type { Registry } from 'prom-client';
import type { Store } from '../store/store.ts';
import type { Fleet } from '../fleet.ts';
import type { Hub } from '../hub/hub.ts';
import type { FileArtifactStore } from '../artifacts.ts';
import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/logger.ts';
import { Forwarder } from './forwarder.ts';
import { RouterCatalog } from './catalog.ts';
import { CloudRuntime } from './cloud-runtime.ts';
import { RouterAudit } from './audit.ts';
import { KeyLimiter } from './limits.ts';
import { InferenceRouter } from './router.ts';
import type { ModelRuntime } from '../../inference/runtime.ts';
import { GgufRuntime } from '../../inference/llm/gguf.ts';
import { RemoteRuntime } from '../../inference/llm/remote.ts';
import { siteSecret } from '../../edge/secrets.ts';

/** The router's wiring: one place where the cloud's config becomes the router's parts. */
export function startRouter(o: {
  store: Store;
  fleet: Fleet;
  hub: Hub;
  clock: Clock;
  log: Logger;
  registry: Registry;
  artifacts: FileArtifactStore;
  dataDir: string;
  region: string;
  rate?: number;
  burst?: number;
  concurrency?: number;
  cloudRuntime: boolean;
  runtimes?: ModelRuntime[];
  /** The largest packet a site may send to the hub (embedded: its guard's maxPacketBytes); unknown for an external broker. */
  maxPacketBytes?: number;
}) {
  // Room for the MQTT fixed header and the topic name.
  const forwarder = new Forwarder(o.hub, o.clock, 10_000, o.maxPacketBytes === undefined ? undefined : o.maxPacketBytes - 1024);
  o.fleet.onFrame = forwarder.onResponse;
  const catalog = new RouterCatalog(o.store, o.clock);
  const cloudRuntime = o.cloudRuntime
    ? new CloudRuntime({
        artifactFile: (sha) => o.artifacts.file(sha),
        clock: o.clock,
        log: o.log,
        registry: o.registry,
        // The endpoint's own GGUF model, or a larger one through an OpenAI-compatible upstream.
        runtimes: o.runtimes ?? [new GgufRuntime({ log: o.log, clock: o.clock }), new RemoteRuntime({ log: o.log, clock: o.clock })],
        // A remote model's key: EW_SECRET_<NAME> or {dataDir}/secrets/<name>, as on a site.
        secret: (name) => siteSecret(o.dataDir, name),
      })
    : undefined;
  const audit = new RouterAudit({ file: join(o.dataDir, 'router-audit.jsonl') });
  const limiter = new KeyLimiter({ ratePerS: o.rate ?? 100, burst: o.burst ?? 200, concurrency: o.concurrency ?? 64, clock: o.clock });
  const router = new InferenceRouter({
    catalog,
    fleet: o.fleet,
    forwarder,
    cloudRuntime,
    audit,
    clock: o.clock,
    log: o.log,
    registry: o.registry,
    region: o.region,
  });
  return {
    router,
    forwarder,
    cloudRuntime,
    audit,
    limiter,
    catalog,
    async close() {
      o.fleet.onFrame = undefined;
      await cloudRuntime?.close();
      await audit.close();
    },
  };
}
