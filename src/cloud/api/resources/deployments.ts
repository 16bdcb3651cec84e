import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { EwError } from '../../../contracts/errors.ts';
import type { Fleet } from '../../fleet.ts';
import type { Strategy } from '../../rollout/reconcile.ts';
import type { RolloutController } from '../../rollout/controller.ts';
import type { Store } from '../../store/store.ts';
import type { DeploymentService } from '../../services/deployments.ts';
import {
  DeploymentBody,
  DeploymentCreated,
  DeploymentList,
  DeploymentView,
  deploymentView,
  errors,
  RolloutList,
  RolloutView,
} from '../schemas.ts';

/** The API's strategy body (after defaults) as the rollout's strategy. */
export function toStrategy(b: DeploymentBody['strategy']): Strategy {
  return b.type === 'all'
    ? { type: 'all' }
    : b.type === 'rolling'
      ? { type: 'rolling', maxUnavailable: b.maxUnavailable }
      : {
          type: 'canary',
          canary: b.canary,
          canaryPercent: b.canaryPercent,
          bakeTimeS: b.bakeTimeS,
          gates: b.gates,
          then: b.then,
          maxUnavailable: b.maxUnavailable,
        };
}

/** Deployments: app@version to a pool of sites, each with its rollout. */
export const deploymentRoutes: FastifyPluginAsyncZod<{
  store: Pick<Store, 'listDeployments' | 'getDeployment' | 'deleteDeployment'>;
  fleet: Pick<Fleet, 'reconcileTenant'>;
  deployments: Pick<DeploymentService, 'create'>;
}> = async (app, { store, fleet, deployments }) => {
  app.post(
    '/api/v1/deployments',
    {
      schema: {
        tags: ['deployments'],
        summary: 'Deploy app@version to the pool of sites a selector picks, with a rollout strategy',
        body: DeploymentBody,
        response: { 200: DeploymentCreated, 201: DeploymentCreated, ...errors },
      },
    },
    async (req, reply) => {
      const b = req.body;
      const out = await deployments.create(req.tenantId, {
        app: b.app,
        version: b.version,
        selector: b.selector,
        strategy: toStrategy(b.strategy),
        options: { stepTimeoutS: b.stepTimeoutS, onFailure: b.onFailure },
      });
      // 200 when the same submission was already there (idempotent), 201 when it is new.
      void reply.status(out.created ? 201 : 200);
      return { ...deploymentView(out.deployment), sites: out.sites, rollout: out.rollout };
    },
  );

  app.get(
    '/api/v1/deployments',
    { schema: { tags: ['deployments'], summary: 'List deployments', response: { 200: DeploymentList } } },
    async (req) => ({ items: (await store.listDeployments(req.tenantId)).map(deploymentView) }),
  );

  app.get(
    '/api/v1/deployments/:id',
    {
      schema: {
        tags: ['deployments'],
        summary: 'One deployment',
        params: z.object({ id: z.string() }),
        response: { 200: DeploymentView, ...errors },
      },
    },
    async (req) => {
      const dep = await store.getDeployment(req.tenantId, req.params.id);
      if (!dep) throw new EwError('DEPLOYMENT_NOT_FOUND', `no deployment "${req.params.id}"`, { path: 'id' });
      return deploymentView(dep);
    },
  );

  app.delete(
    '/api/v1/deployments/:id',
    {
      schema: {
        tags: ['deployments'],
        summary: 'Remove a deployment: its app leaves the sites it was on',
        params: z.object({ id: z.string() }),
        response: { 204: z.null(), ...errors },
      },
    },
    async (req, reply) => {
      if (!(await store.deleteDeployment(req.tenantId, req.params.id)))
        throw new EwError('DEPLOYMENT_NOT_FOUND', `no deployment "${req.params.id}"`, { path: 'id' });
      await fleet.reconcileTenant(req.tenantId);
      void reply.status(204);
      return null;
    },
  );
};

/** Rollouts: read, and pause, resume, abort or undo. */
export const rolloutRoutes: FastifyPluginAsyncZod<{
  store: Pick<Store, 'listRollouts' | 'getRollout'>;
  rollouts: Pick<RolloutController, 'act'>;
}> = async (app, { store, rollouts }) => {
  app.get(
    '/api/v1/rollouts',
    { schema: { tags: ['deployments'], summary: 'Rollouts, newest last', response: { 200: RolloutList } } },
    async (req) => ({ items: (await store.listRollouts(req.tenantId)).map((x) => x.state) }),
  );

  app.get(
    '/api/v1/rollouts/:id',
    {
      schema: {
        tags: ['deployments'],
        summary: 'One rollout with its per-site state and history',
        params: z.object({ id: z.string() }),
        response: { 200: RolloutView, ...errors },
      },
    },
    async (req) => {
      const row = await store.getRollout(req.tenantId, req.params.id);
      if (!row) throw new EwError('DEPLOYMENT_NOT_FOUND', `no rollout for deployment "${req.params.id}"`, { path: 'id' });
      return row.state;
    },
  );

  app.post(
    '/api/v1/rollouts/:id/:action',
    {
      schema: {
        tags: ['deployments'],
        summary: 'pause, resume, abort (back to the previous version) or undo (after it ended)',
        params: z.object({ id: z.string(), action: z.enum(['pause', 'resume', 'abort', 'undo']) }),
        response: { 200: RolloutView, ...errors },
      },
    },
    async (req) => rollouts.act(req.tenantId, req.params.id, req.params.action),
  );
};
