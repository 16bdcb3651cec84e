import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { EwError } from '../../../contracts/errors.ts';
import type { Clock } from '../../../lib/clock.ts';
import type { FileArtifactStore } from '../../artifacts.ts';
import type { Store } from '../../store/store.ts';
import { pushApp } from '../../services/apps.ts';
import { AppList, AppView, appView, errors } from '../schemas.ts';

/** App versions: pushed once (immutable), listed, read with their manifest. */
export const appRoutes: FastifyPluginAsyncZod<{
  store: Pick<Store, 'ownsArtifact' | 'createApp' | 'getApp' | 'listApps'>;
  artifacts: Pick<FileArtifactStore, 'exists'>;
  clock: Clock;
}> = async (app, d) => {
  app.post(
    '/api/v1/apps',
    {
      schema: {
        tags: ['apps'],
        summary: 'Push an app version (immutable once pushed)',
        body: z.object({ manifest: z.unknown() }),
        response: { 201: AppView, ...errors },
      },
    },
    async (req, reply) => {
      const a = await pushApp(d, req.tenantId, req.body.manifest);
      void reply.status(201);
      return appView(a);
    },
  );

  app.get('/api/v1/apps', { schema: { tags: ['apps'], summary: 'List app versions', response: { 200: AppList } } }, async (req) => ({
    items: (await d.store.listApps(req.tenantId)).map((a) => ({
      name: a.name,
      version: a.version,
      digest: a.digest,
      createdAt: a.createdAt,
    })),
  }));

  app.get(
    '/api/v1/apps/:name/versions/:version',
    {
      schema: {
        tags: ['apps'],
        summary: 'One app version with its manifest',
        params: z.object({ name: z.string(), version: z.string() }),
        response: { 200: AppView, ...errors },
      },
    },
    async (req) => {
      const a = await d.store.getApp(req.tenantId, req.params.name, req.params.version);
      if (!a) throw new EwError('APP_NOT_FOUND', `no app ${req.params.name}@${req.params.version}; push it first`);
      return appView(a);
    },
  );
};
