import type { FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import type { Clock } from '../../lib/clock.ts';
import type { Store } from '../store/store.ts';
import type { Fleet } from '../fleet.ts';
import type { Hub } from '../hub/hub.ts';
import type { FileArtifactStore } from '../artifacts.ts';
import type { RolloutController } from '../rollout/controller.ts';
import { DeploymentService } from '../services/deployments.ts';
import { appRoutes } from './resources/apps.ts';
import { artifactRoutes } from './resources/artifacts.ts';
import { deploymentRoutes, rolloutRoutes } from './resources/deployments.ts';
import { healthRoutes } from './resources/health.ts';
import { keyRoutes } from './resources/keys.ts';
import { resultRoutes } from './resources/results.ts';
import { siteRoutes } from './resources/sites.ts';
import { tokenRoutes } from './resources/tokens.ts';

export { RESULTS_PAGE_BYTES } from './resources/results.ts';
export { siteView } from './schemas.ts';

/** Everything the control-plane API's resources need, together; each plugin takes only its part. */
export interface RouteDeps {
  store: Store;
  rollouts: RolloutController;
  artifacts: FileArtifactStore;
  fleet: Fleet;
  hub: Hub;
  clock: Clock;
  registry: Registry;
  /** The cloud's public HTTP URL, for the install command printed with a token. */
  publicUrl: () => string;
  heartbeatIntervalS: number;
  version: string;
}

/**
 * The control-plane API: one fastify plugin per resource (src/cloud/api/resources/*), each given
 * only what it uses; multi-step operations live in services (src/cloud/services/*) so they can be
 * tested without HTTP. The plugins are registered here and load when the server gets ready.
 */
export function registerRoutes(app: FastifyInstance, d: RouteDeps): void {
  const { store, fleet, clock } = d;
  void app.register(healthRoutes, { version: d.version, registry: d.registry, hub: d.hub, storeKind: store.kind });
  void app.register(keyRoutes, { store, clock });
  void app.register(tokenRoutes, { store, fleet, hub: d.hub, clock, publicUrl: d.publicUrl, heartbeatIntervalS: d.heartbeatIntervalS });
  void app.register(siteRoutes, { store, fleet, clock });
  void app.register(appRoutes, { store, artifacts: d.artifacts, clock });
  void app.register(artifactRoutes, { store, artifacts: d.artifacts, clock });
  void app.register(deploymentRoutes, { store, fleet, deployments: new DeploymentService({ store, rollouts: d.rollouts, fleet, clock }) });
  void app.register(rolloutRoutes, { store, rollouts: d.rollouts });
  void app.register(resultRoutes, { store });
}
