import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { EwError } from '../../../contracts/errors.ts';
import type { Clock } from '../../../lib/clock.ts';
import type { Fleet } from '../../fleet.ts';
import type { Hub } from '../../hub/hub.ts';
import type { Store } from '../../store/store.ts';
import { createJoinToken, enrollSite } from '../../services/enrollment.ts';
import { EnrollRequest } from '../../../contracts/enroll.ts';
import { checkContractVersion, CONTRACT_VERSION } from '../../../contracts/messages.ts';
import { Enrollment, errors, Labels, TokenCreated, TokenList, tokenView } from '../schemas.ts';

/** Join tokens, and enrollment: a new site exchanges one for its own credentials. */
export const tokenRoutes: FastifyPluginAsyncZod<{
  store: Pick<Store, 'createJoinToken' | 'listJoinTokens' | 'deleteJoinToken' | 'enrollSite'>;
  fleet: Pick<Fleet, 'reconcileSites'>;
  hub: Pick<Hub, 'agentUrl' | 'agentProtocolVersion' | 'agentTopicPrefix'>;
  clock: Clock;
  /** The cloud's public HTTP URL, for the install command printed with a token. */
  publicUrl: () => string;
  heartbeatIntervalS: number;
}> = async (app, d) => {
  const { store } = d;

  app.post(
    '/api/v1/tokens',
    {
      schema: {
        tags: ['enrollment'],
        summary: 'Create a one-time join token for a new site',
        body: z.object({
          labels: Labels.default({}),
          region: z.string().min(1).max(128).default('default'),
          ttlSeconds: z
            .number()
            .int()
            .min(60)
            .max(30 * 24 * 3600)
            .default(24 * 3600),
          description: z.string().max(500).default(''),
        }),
        response: { 201: TokenCreated, ...errors },
      },
    },
    async (req, reply) => {
      const { token, secret } = await createJoinToken(d, req.tenantId, req.body);
      void reply.status(201);
      return {
        ...tokenView(token),
        token: secret,
        installCommand: `EW_JOIN_TOKEN=${secret} npx edgeweave edge --cloud ${d.publicUrl()} --data-dir /var/lib/edgeweave`,
      };
    },
  );

  app.get(
    '/api/v1/tokens',
    { schema: { tags: ['enrollment'], summary: 'List join tokens (never their secrets)', response: { 200: TokenList } } },
    async (req) => ({ items: (await store.listJoinTokens(req.tenantId)).map(tokenView) }),
  );

  app.delete(
    '/api/v1/tokens/:id',
    {
      schema: {
        tags: ['enrollment'],
        summary: 'Delete an unused join token so it can no longer enroll a site',
        params: z.object({ id: z.string() }),
        response: { 204: z.null(), ...errors },
      },
    },
    async (req, reply) => {
      if (!(await store.deleteJoinToken(req.tenantId, req.params.id))) {
        throw new EwError(
          'TOKEN_NOT_FOUND',
          `no unused join token "${req.params.id}" in this tenant (a used token stays as the record of its site's enrollment)`,
          { path: 'id' },
        );
      }
      void reply.status(204);
      return null;
    },
  );

  app.post(
    '/api/v1/enroll',
    {
      config: { public: true },
      schema: {
        tags: ['enrollment'],
        summary: 'Exchange a join token for site credentials (called by the agent)',
        security: [],
        body: EnrollRequest,
        response: { 201: Enrollment, ...errors },
      },
    },
    async (req, reply) => {
      // Before the token is spent: an agent this cloud cannot talk to keeps its token for later.
      checkContractVersion(req.body.contractVersion, 'enrollment');
      const { site, secret } = await enrollSite(d, req.body.token, req.body.name);
      req.log.info({ siteId: site.id, region: site.region }, 'site enrolled');
      void reply.status(201);
      return {
        siteId: site.id,
        tenantId: site.tenantId,
        region: site.region,
        labels: site.labels,
        heartbeatIntervalS: d.heartbeatIntervalS,
        mqtt: {
          url: d.hub.agentUrl,
          username: site.id,
          password: secret,
          clientId: site.id,
          protocolVersion: d.hub.agentProtocolVersion,
          ...(d.hub.agentTopicPrefix ? { topicPrefix: d.hub.agentTopicPrefix } : {}),
        },
        contractVersion: CONTRACT_VERSION,
      };
    },
  );
};
