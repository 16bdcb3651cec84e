import type { Readable } from 'node:stream';
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { EwError } from '../../../contracts/errors.ts';
import { matches } from '../../../contracts/selector.ts';
import type { Clock } from '../../../lib/clock.ts';
import type { FileArtifactStore } from '../../artifacts.ts';
import type { Store } from '../../store/store.ts';
import { ArtifactStatus, errors } from '../schemas.ts';

type ArtifactStore = Pick<Store, 'ownsArtifact' | 'addArtifactOwner' | 'getSiteById' | 'listDeployments' | 'getApp'>;

const Sha = z.object({ sha256: z.string().regex(/^[a-f0-9]{64}$/, 'a lower-case hex sha256') });

/** The model files of every app deployed to a site (whatever its rollout says: it may prefetch). */
export async function siteArtifacts(
  store: Pick<Store, 'getSiteById' | 'listDeployments' | 'getApp'>,
  siteId: string,
): Promise<Set<string>> {
  const site = await store.getSiteById(siteId);
  const out = new Set<string>();
  if (!site || site.revokedAt !== null) return out;
  const seen = new Set<string>();
  for (const dep of await store.listDeployments(site.tenantId)) {
    const k = `${dep.appName}@${dep.appVersion}`;
    if (seen.has(k) || !matches(dep.selector, site)) continue;
    seen.add(k);
    const a = await store.getApp(site.tenantId, dep.appName, dep.appVersion);
    for (const m of a?.manifest.spec.models ?? []) if (m.sha256) out.add(m.sha256);
  }
  return out;
}

/** Model files by sha256: resumable uploads per tenant, downloads by the tenant or by a site they are deployed to. */
export const artifactRoutes: FastifyPluginAsyncZod<{
  store: ArtifactStore;
  artifacts: Pick<FileArtifactStore, 'status' | 'write' | 'open'>;
  clock: Clock;
}> = async (app, { store, artifacts, clock }) => {
  app.get(
    '/api/v1/artifacts/:sha256/status',
    {
      schema: {
        tags: ['artifacts'],
        summary: 'How much of an artifact this tenant has uploaded (to resume an upload)',
        params: Sha,
        response: { 200: ArtifactStatus, ...errors },
      },
    },
    async (req) => artifacts.status(req.params.sha256, req.tenantId, await store.ownsArtifact(req.tenantId, req.params.sha256)),
  );

  app.put(
    '/api/v1/artifacts/:sha256',
    {
      bodyLimit: Number.MAX_SAFE_INTEGER, // the store enforces its own limit while streaming
      schema: {
        tags: ['artifacts'],
        summary: 'Upload a model file (streamed; resumable with Content-Range: bytes start-end/total)',
        params: Sha,
        headers: z.object({ 'content-range': z.string().optional() }).passthrough(),
        response: { 200: ArtifactStatus, 201: ArtifactStatus, ...errors },
      },
    },
    async (req, reply) => {
      const sha = req.params.sha256;
      // The octet-stream parser (server.ts) hands the route the request's stream, not a buffer.
      const body = req.body as Readable;
      if (await store.ownsArtifact(req.tenantId, sha)) {
        body.resume();
        return artifacts.status(sha, req.tenantId, true);
      }
      const range = req.headers['content-range'];
      let start = 0;
      let total: number | undefined;
      if (range !== undefined) {
        const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(range));
        if (!m) throw new EwError('VALIDATION_FAILED', 'Content-Range must be "bytes start-end/total"', { path: 'Content-Range' });
        start = Number(m[1]);
        total = Number(m[3]);
      }
      // Each tenant uploads into its own partial file and owns the artifact once its bytes hashed
      // right, even when another tenant had uploaded the same file before.
      const st = await artifacts.write(sha, start, body, total, req.tenantId);
      if (st.complete) await store.addArtifactOwner(req.tenantId, sha, clock.now());
      void reply.status(st.complete ? 201 : 200);
      return st;
    },
  );

  app.get(
    '/api/v1/artifacts/:sha256',
    {
      config: { siteAccess: true },
      schema: {
        tags: ['artifacts'],
        summary:
          'Download an artifact (admin key of a tenant that uploaded it, or the credentials of a site it is deployed to; Range supported)',
        params: Sha,
      },
    },
    async (req, reply) => {
      const sha = req.params.sha256;
      if (req.siteId) {
        if (!(await siteArtifacts(store, req.siteId)).has(sha))
          throw new EwError('ARTIFACT_NOT_ALLOWED', `no deployment targeting site ${req.siteId} references artifact ${sha}`, {
            path: 'sha256',
          });
      } else if (!(await store.ownsArtifact(req.tenantId, sha))) {
        throw new EwError('ARTIFACT_NOT_FOUND', `this tenant has no artifact ${sha}`, { path: 'sha256' });
      }
      const st = artifacts.status(sha);
      if (!st.complete) throw new EwError('ARTIFACT_NOT_FOUND', `no complete artifact ${sha}`, { path: 'sha256' });
      const body = () =>
        reply.header('accept-ranges', 'bytes').header('content-type', 'application/octet-stream').header('x-content-sha256', sha);
      const rangeHeader = req.headers.range;
      if (rangeHeader !== undefined) {
        // One range, bytes=start-[end] or bytes=-suffix (RFC 9110 §14.1.2); anything else, or a
        // range that starts past the end or after its own end, is 416 with the size.
        const m = /^bytes=(\d*)-(\d*)$/.exec(rangeHeader.trim());
        let start = NaN;
        let end = NaN;
        if (m && m[1] !== '') {
          start = Number(m[1]);
          end = m[2] ? Math.min(Number(m[2]), st.size - 1) : st.size - 1;
          if (m[2] && Number(m[2]) < start) start = NaN;
        } else if (m && m[2] !== '' && Number(m[2]) > 0) {
          start = Math.max(0, st.size - Number(m[2]));
          end = st.size - 1;
        }
        if (!Number.isSafeInteger(start) || start >= st.size || end < start) {
          void reply.header('content-range', `bytes */${st.size}`);
          throw new EwError(
            'RANGE_NOT_SATISFIABLE',
            `Range "${rangeHeader.slice(0, 100)}" cannot be served: the artifact has ${st.size} bytes; ask for bytes=start-end with start <= end < ${st.size}`,
            { path: 'Range' },
          );
        }
        const { stream } = artifacts.open(sha, { start, end });
        void body()
          .status(206)
          .header('content-range', `bytes ${start}-${end}/${st.size}`)
          .header('content-length', end - start + 1);
        return reply.send(stream);
      }
      const { stream, size } = artifacts.open(sha);
      void body().header('content-length', size);
      return reply.send(stream);
    },
  );
};
