import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Site, Store } from '../src/cloud/store/store.ts';
import { siteRecord } from './support/store.ts';
import { hashSecret } from '../src/lib/secrets.ts';
import { isEwError } from '../src/contracts/errors.ts';
import type { AppManifest } from '../src/contracts/manifest.ts';

/**
 * One behaviour suite that every Store implementation must pass (SQLite and PostgreSQL).
 * `open` returns a fresh, empty store; `skip` is a reason to skip (stated in the output).
 */
export function runStoreConformance(name: string, open: () => Promise<Store>, skip?: string): void {
  describe(`Store conformance: ${name}`, { skip }, () => {
    let store: Store;
    const T = 'ten-a';
    const T2 = 'ten-b';
    before(async () => {
      store = await open();
      await store.migrate();
      await store.migrate(); // idempotent
      await store.createTenant({ id: T, name: 'first', createdAt: 1 });
      await store.createTenant({ id: T2, name: 'second', createdAt: 2 });
    });
    after(async () => {
      await store?.close();
    });

    const manifest: AppManifest = {
      apiVersion: 'edgeweave/v1',
      kind: 'App',
      metadata: { name: 'demo', version: '1.0.0' },
      spec: { models: [], streams: [], rules: [], endpoints: [], policy: {} },
    };

    async function enroll(tokenSecret: string, siteId: string, tenantId = T, expiresAt = 10_000): Promise<Site> {
      await store.createJoinToken({
        id: `tok-${siteId}`,
        tenantId,
        hash: hashSecret(tokenSecret),
        labels: { city: 'hangzhou' },
        region: 'cn-east',
        description: 'x',
        createdAt: 1,
        expiresAt,
        usedAt: null,
        siteId: null,
      });
      const r = await store.enrollSite(hashSecret(tokenSecret), 100, (t) =>
        siteRecord(siteId, t.tenantId, 100, { region: t.region, labels: t.labels }),
      );
      assert.equal(r.ok, true);
      return r.site!;
    }

    it('lists tenants in creation order', async () => {
      assert.deepEqual(
        (await store.listTenants()).map((t) => t.name),
        ['first', 'second'],
      );
    });

    it('finds an API key by its hash only', async () => {
      await store.createApiKey({
        id: 'key-1',
        tenantId: T,
        name: 'admin',
        hash: hashSecret('k1'),
        role: 'admin',
        createdAt: 5,
        revokedAt: null,
      });
      assert.equal((await store.findApiKeyByHash(hashSecret('k1')))?.id, 'key-1');
      assert.equal(await store.findApiKeyByHash(hashSecret('k2')), undefined);
      assert.deepEqual(
        (await store.listApiKeys(T)).map((k) => k.id),
        ['key-1'],
      );
      assert.equal(await store.revokeApiKey(T, 'key-1', 9), 'last-admin', 'the last admin key stays');
      await store.createApiKey({
        id: 'key-1b',
        tenantId: T,
        name: 'second',
        hash: hashSecret('k1b'),
        role: 'admin',
        createdAt: 6,
        revokedAt: null,
      });
      assert.equal(await store.revokeApiKey(T2, 'key-1', 9), 'not-found', 'not across tenants');
      assert.equal(await store.revokeApiKey(T, 'key-1', 9), 'revoked');
      assert.equal(await store.revokeApiKey(T, 'key-1', 10), 'not-found', 'once');
      assert.equal((await store.findApiKeyByHash(hashSecret('k1')))?.revokedAt, 9);
      assert.equal(await store.revokeApiKey(T, 'key-1b', 11), 'last-admin');
    });

    it('never revokes both of the last two admin keys, even when two revocations race', async () => {
      await store.createTenant({ id: 'ten-race', name: 'race', createdAt: 3 });
      for (const id of ['race-1', 'race-2'])
        await store.createApiKey({
          id,
          tenantId: 'ten-race',
          name: id,
          hash: hashSecret(id),
          role: 'admin',
          createdAt: 5,
          revokedAt: null,
        });
      const results = await Promise.all([store.revokeApiKey('ten-race', 'race-1', 9), store.revokeApiKey('ten-race', 'race-2', 9)]);
      assert.deepEqual(results.sort(), ['last-admin', 'revoked']);
      assert.equal((await store.listApiKeys('ten-race')).filter((k) => k.revokedAt === null).length, 1);
    });

    it('refuses a NUL in any value as VALIDATION_FAILED, alike on every engine, storing nothing of that statement', async () => {
      const rec = (id: string, extra: Partial<{ app: string; stream: string }> = {}) => ({
        siteId: 'site-nul',
        msgId: id,
        stream: extra.stream ?? 's',
        app: extra.app,
        at: 1,
        receivedAt: 2,
        data: { v: 'a\u0000b' },
      });
      // A NUL inside the JSON data is fine: it is stored as the escape \u0000 and read back.
      assert.equal(await store.insertUplink([rec('ok-1')]), 1);
      assert.deepEqual(
        (await store.queryUplink(T, { siteId: 'site-nul', limit: 10 })).map((r) => r.data),
        [],
        'no such site in the tenant: nothing',
      );
      for (const bad of [[rec('ok-2'), rec('bad\u0000id')], [rec('ok-3', { app: 'a\u0000' })], [rec('ok-4', { stream: 's\u0000' })]]) {
        await assert.rejects(store.insertUplink(bad), (e: unknown) => isEwError(e, 'VALIDATION_FAILED'));
      }
      assert.equal(await store.countUplink('site-nul'), 1, 'the whole refused statement stored nothing');
      await assert.rejects(store.queryUplink(T, { stream: 'x\u0000', limit: 1 }), (e: unknown) => isEwError(e, 'VALIDATION_FAILED'));
      await assert.rejects(store.getSite(T, 'site\u0000'), (e: unknown) => isEwError(e, 'VALIDATION_FAILED'));
      assert.equal(await store.insertUplink([rec('ok-2')]), 1, 'the good message alone goes in');
    });

    it('records which tenant uploaded an artifact', async () => {
      const sha = 'a'.repeat(64);
      assert.equal(await store.ownsArtifact(T, sha), false);
      await store.addArtifactOwner(T, sha, 1);
      await store.addArtifactOwner(T, sha, 2); // idempotent
      assert.equal(await store.ownsArtifact(T, sha), true);
      assert.equal(await store.ownsArtifact(T2, sha), false, 'per tenant');
    });

    it('enrolls a site with a join token once, and refuses used, expired and unknown tokens', async () => {
      const site = await enroll('tok-secret-1', 'site-1');
      assert.deepEqual(site.labels, { city: 'hangzhou' });
      const again = await store.enrollSite(hashSecret('tok-secret-1'), 200, () => {
        throw new Error('must not be called');
      });
      assert.deepEqual(again, { ok: false, reason: 'used' });
      await store.createJoinToken({
        id: 'tok-exp',
        tenantId: T,
        hash: hashSecret('expired'),
        labels: {},
        region: 'r',
        description: '',
        createdAt: 1,
        expiresAt: 50,
        usedAt: null,
        siteId: null,
      });
      assert.deepEqual(
        await store.enrollSite(hashSecret('expired'), 50, () => {
          throw new Error('no');
        }),
        { ok: false, reason: 'expired' },
      );
      assert.deepEqual(
        await store.enrollSite(hashSecret('nope'), 50, () => {
          throw new Error('no');
        }),
        { ok: false, reason: 'unknown' },
      );
      const tokens = await store.listJoinTokens(T);
      assert.equal(tokens.find((t) => t.id === 'tok-site-1')?.siteId, 'site-1');
    });

    it('deletes only unused tokens of its own tenant', async () => {
      await store.createJoinToken({
        id: 'tok-del',
        tenantId: T,
        hash: hashSecret('del'),
        labels: {},
        region: 'r',
        description: '',
        createdAt: 1,
        expiresAt: 10_000,
        usedAt: null,
        siteId: null,
      });
      assert.equal(await store.deleteJoinToken(T2, 'tok-del'), false);
      assert.equal(await store.deleteJoinToken(T, 'tok-site-1'), false, 'a used token stays');
      assert.equal(await store.deleteJoinToken(T, 'tok-del'), true);
      assert.deepEqual(
        await store.enrollSite(hashSecret('del'), 5, () => {
          throw new Error('no');
        }),
        { ok: false, reason: 'unknown' },
      );
    });

    it('lets exactly one of two concurrent enrollments with the same token win', async () => {
      await store.createJoinToken({
        id: 'tok-race',
        tenantId: T,
        hash: hashSecret('race'),
        labels: {},
        region: 'r',
        description: '',
        createdAt: 1,
        expiresAt: 10_000,
        usedAt: null,
        siteId: null,
      });
      const mk = (id: string) => (t: { tenantId: string; region: string }) => siteRecord(id, t.tenantId, 1, { region: t.region });
      const results = await Promise.all([
        store.enrollSite(hashSecret('race'), 10, mk('race-a')),
        store.enrollSite(hashSecret('race'), 10, mk('race-b')),
      ]);
      assert.equal(results.filter((r) => r.ok).length, 1);
    });

    it('scopes sites to their tenant', async () => {
      await enroll('tok-other', 'site-other', T2);
      assert.equal(await store.getSite(T, 'site-other'), undefined);
      assert.equal((await store.getSite(T2, 'site-other'))?.id, 'site-other');
      assert.ok(!(await store.listSites(T)).some((s) => s.id === 'site-other'));
      assert.equal((await store.getSiteById('site-other'))?.tenantId, T2);
    });

    it('relabels and revokes a site', async () => {
      const s = await store.setSiteLabels(T, 'site-1', { city: 'ningbo', tier: 'gold' });
      assert.deepEqual(s?.labels, { city: 'ningbo', tier: 'gold' });
      const r = await store.revokeSite(T, 'site-1', 500);
      assert.equal(r?.revokedAt, 500);
      // A second revoke keeps the first time.
      assert.equal((await store.revokeSite(T, 'site-1', 900))?.revokedAt, 500);
      assert.equal(await store.revokeSite(T2, 'site-1', 900), undefined);
      // What replicas ask each other's revocations by (fleet/revocations.ts): by time, bounded.
      assert.ok((await store.listSitesRevokedSince(500, 100)).includes('site-1'));
      assert.ok(!(await store.listSitesRevokedSince(501, 100)).includes('site-1'), 'revoked before the window');
      assert.ok((await store.listSitesRevokedSince(0, 1)).length <= 1, 'at most the limit');
      assert.ok(!(await store.listSitesRevokedSince(0, 100)).includes('site-other'), 'a live site is never listed');
    });

    it('bumps the desired generation only when the digest changes', async () => {
      await enroll('tok-gen', 'site-gen');
      await enroll('tok-gen2', 'site-gen2');
      const one = async (digest: string) => (await store.bumpDesired([{ siteId: 'site-gen', digest }]))[0];
      assert.deepEqual(await one('aaa'), { generation: 1, changed: true });
      assert.deepEqual(await one('aaa'), { generation: 1, changed: false });
      assert.deepEqual(await one('bbb'), { generation: 2, changed: true });
      const [a, b] = await Promise.all([one('ccc'), one('ddd')]);
      assert.deepEqual([a!.generation, b!.generation].sort(), [3, 4]);
      assert.deepEqual(
        await store.bumpDesired([
          { siteId: 'site-gen2', digest: 'x' },
          { siteId: 'site-gen', digest: 'eee' },
          { siteId: 'site-gen', digest: 'eee' },
        ]),
        [
          { generation: 1, changed: true },
          { generation: 5, changed: true },
          { generation: 5, changed: false },
        ],
      );
      await assert.rejects(
        store.bumpDesired([
          { siteId: 'site-gen2', digest: 'y' },
          { siteId: 'nope', digest: 'z' },
        ]),
        /does not exist/,
      );
      assert.equal((await store.getSite(T, 'site-gen2'))!.desiredGeneration, 1, 'a failed batch changes nothing');
    });

    it('writes heartbeat statuses in a batch', async () => {
      await store.updateSiteStatuses([{ siteId: 'site-gen', online: true, lastSeenAt: 777, reportedGeneration: 4 }]);
      const s = await store.getSite(T, 'site-gen');
      assert.equal(s?.online, true);
      assert.equal(s?.lastSeenAt, 777);
      assert.equal(s?.reportedGeneration, 4);
      await store.updateSiteStatuses([{ siteId: 'site-gen', online: false }]);
      assert.equal((await store.getSite(T, 'site-gen'))?.online, false);
      assert.equal((await store.getSite(T, 'site-gen'))?.lastSeenAt, 777, 'going offline keeps the last heartbeat time');
      assert.equal((await store.getSite(T, 'site-gen'))?.reportedGeneration, 4);
    });

    it('writes a heartbeat with a digest only when it says something new or the row is stale (one writer among replicas)', async () => {
      await store.updateSiteStatuses([
        { siteId: 'site-gen', online: true, lastSeenAt: 1000, reportedGeneration: 5, digest: 'd1', refreshBefore: 0 },
      ]);
      assert.equal((await store.getSite(T, 'site-gen'))?.lastSeenAt, 1000);
      // The other replica's copy of the same heartbeat: fresh, same digest — nothing written.
      await store.updateSiteStatuses([
        { siteId: 'site-gen', online: true, lastSeenAt: 1001, reportedGeneration: 5, digest: 'd1', refreshBefore: 1001 - 15_000 },
      ]);
      assert.equal((await store.getSite(T, 'site-gen'))?.lastSeenAt, 1000);
      // Something new: written.
      await store.updateSiteStatuses([
        { siteId: 'site-gen', online: true, lastSeenAt: 2000, reportedGeneration: 6, digest: 'd2', refreshBefore: 2000 - 15_000 },
      ]);
      assert.equal((await store.getSite(T, 'site-gen'))?.reportedGeneration, 6);
      // Same digest but the row is older than the refresh bound: written.
      await store.updateSiteStatuses([
        { siteId: 'site-gen', online: true, lastSeenAt: 40_000, reportedGeneration: 6, digest: 'd2', refreshBefore: 40_000 - 15_000 },
      ]);
      assert.equal((await store.getSite(T, 'site-gen'))?.lastSeenAt, 40_000);
      // Liveness: the offline flag is written once, and a digest write brings it back.
      await store.updateSiteStatuses([{ siteId: 'site-gen', online: false }]);
      await store.updateSiteStatuses([{ siteId: 'site-gen', online: false }]);
      assert.equal((await store.getSite(T, 'site-gen'))?.online, false);
      await store.updateSiteStatuses([
        { siteId: 'site-gen', online: true, lastSeenAt: 41_000, reportedGeneration: 6, digest: 'd2', refreshBefore: 41_000 - 15_000 },
      ]);
      assert.equal((await store.getSite(T, 'site-gen'))?.online, true);
    });

    it('lists site refs per tenant and for all, without status or secret, and reads stored statuses of given sites', async () => {
      const refs = await store.listSiteRefs(T);
      const full = await store.listSites(T);
      assert.deepEqual(
        refs,
        full.map((s) => ({ id: s.id, tenantId: s.tenantId, name: s.name, region: s.region, labels: s.labels, revokedAt: s.revokedAt })),
        'the same sites, in the same order, as listSites',
      );
      assert.ok(!refs.some((r) => 'status' in r || 'secretHash' in r));
      const all = await store.listSiteRefs();
      assert.ok(all.some((s) => s.id === 'site-other' && s.tenantId === T2) && all.some((s) => s.tenantId === T));
      const status = { ...(await store.getSite(T, 'site-gen'))!.status, uptimeS: 5 } as never;
      await store.updateSiteStatuses([{ siteId: 'site-gen2', online: true, lastSeenAt: 50_000, reportedGeneration: 1, status }]);
      const got = await store.getSiteStatuses(['site-gen2', 'site-other', 'nope']);
      assert.deepEqual([...got.keys()], ['site-gen2'], 'sites without a stored status, or unknown, are left out');
      assert.deepEqual(got.get('site-gen2'), status);
      // More ids than one statement takes on SQLite.
      assert.equal((await store.getSiteStatuses([...Array.from({ length: 1200 }, (_, i) => `x${i}`), 'site-gen2'])).size, 1);
    });

    it('keeps app versions immutable', async () => {
      assert.equal(await store.createApp({ tenantId: T, name: 'demo', version: '1.0.0', manifest, digest: 'd1', createdAt: 1 }), 'created');
      assert.equal(await store.createApp({ tenantId: T, name: 'demo', version: '1.0.0', manifest, digest: 'd2', createdAt: 2 }), 'exists');
      assert.equal((await store.getApp(T, 'demo', '1.0.0'))?.digest, 'd1');
      assert.deepEqual((await store.getApp(T, 'demo', '1.0.0'))?.manifest, manifest);
      assert.equal(await store.getApp(T2, 'demo', '1.0.0'), undefined);
      assert.equal((await store.listApps(T)).length, 1);
    });

    it('creates, lists and deletes deployments per tenant', async () => {
      await store.createDeployment({
        id: 'dep-1',
        tenantId: T,
        appName: 'demo',
        appVersion: '1.0.0',
        selector: { city: 'ningbo' },
        createdAt: 3,
      });
      assert.deepEqual((await store.getDeployment(T, 'dep-1'))?.selector, { city: 'ningbo' });
      assert.equal(await store.getDeployment(T2, 'dep-1'), undefined);
      assert.equal((await store.listDeployments(T)).length, 1);
      assert.equal(await store.deleteDeployment(T2, 'dep-1'), false);
      assert.equal(await store.deleteDeployment(T, 'dep-1'), true);
      assert.equal((await store.listDeployments(T)).length, 0);
    });

    it('gives a lease to one holder at a time, renewable, taken over when it expires', async () => {
      assert.equal(await store.acquireLease('rollouts', 'replica-a', 1000, 5000), true);
      assert.equal(await store.acquireLease('rollouts', 'replica-b', 2000, 5000), false, 'held by a');
      assert.equal(await store.acquireLease('rollouts', 'replica-a', 3000, 5000), true, 'renewed by a');
      assert.equal(await store.acquireLease('rollouts', 'replica-b', 7000, 5000), false, 'a renewed until 8000');
      assert.equal(await store.acquireLease('rollouts', 'replica-b', 8001, 5000), true, 'expired: b takes over');
      assert.equal(await store.acquireLease('rollouts', 'replica-a', 9000, 5000), false);
      const [x, y] = await Promise.all([store.acquireLease('other', 'a', 1, 100), store.acquireLease('other', 'b', 1, 100)]);
      assert.equal(Number(x) + Number(y), 1, 'exactly one of two racing replicas');
    });

    it('lists unexpired leases by name prefix, and lets only the holder give one back', async () => {
      assert.equal(await store.acquireLease('replica:r1', 'r1-a', 1000, 5000), true);
      assert.equal(await store.acquireLease('replica:r2', 'r2-a', 1000, 5000), true);
      assert.equal(await store.acquireLease('replica_x', 'x', 1000, 5000), true);
      assert.deepEqual(
        (await store.listLeases('replica:', 2000)).map((l) => [l.name, l.holder]),
        [
          ['replica:r1', 'r1-a'],
          ['replica:r2', 'r2-a'],
        ],
      );
      assert.deepEqual((await store.listLeases('replica:', 6000)).length, 0, 'expired ones are left out');
      await store.releaseLease('replica:r1', 'someone-else');
      assert.equal((await store.listLeases('replica:', 2000)).length, 2, 'not given back by another holder');
      await store.releaseLease('replica:r1', 'r1-a');
      assert.deepEqual(
        (await store.listLeases('replica:', 2000)).map((l) => l.name),
        ['replica:r2'],
      );
      assert.equal(await store.acquireLease('replica:r1', 'r1-b', 2000, 5000), true, 'free again at once');
    });

    it('saves, replaces and lists rollout state per tenant', async () => {
      const state = {
        id: 'dep-r',
        app: 'a',
        version: '2.0.0',
        strategy: { type: 'all' as const },
        options: { stepTimeoutS: 60, onFailure: 'rollback' as const },
        phase: 'progressing' as const,
        startedAt: 1,
        updatedAt: 1,
        admitted: ['s1'],
        canaries: [],
        sites: { s1: { phase: 'updating' as const, since: 1 } },
        history: [],
      };
      await store.saveRollout({ id: 'dep-r', tenantId: T, state });
      await store.saveRollout({ id: 'dep-r', tenantId: T, state: { ...state, phase: 'succeeded', updatedAt: 5 } });
      assert.equal((await store.getRollout(T, 'dep-r'))?.state.phase, 'succeeded');
      assert.equal(await store.getRollout(T2, 'dep-r'), undefined);
      assert.deepEqual(
        (await store.listRollouts(T)).map((r) => r.id),
        ['dep-r'],
      );
      assert.equal((await store.listRollouts()).length, 1);
      assert.equal((await store.listRollouts(undefined, { activeOnly: true })).length, 0, 'a succeeded rollout is no longer active');
      await store.saveRollout({ id: 'dep-r2', tenantId: T, state: { ...state, id: 'dep-r2' } });
      assert.deepEqual(
        (await store.listRollouts(undefined, { activeOnly: true })).map((r) => r.id),
        ['dep-r2'],
      );
      assert.deepEqual(
        (await store.listRollouts(T, { ids: ['dep-r'] })).map((r) => r.id),
        ['dep-r'],
      );
      assert.deepEqual(await store.listRollouts(T, { ids: [] }), []);
      const read = (await store.getRollout(T, 'dep-r2'))!;
      assert.equal(await store.saveRollout({ ...read, state: { ...read.state, phase: 'paused' } }), true, 'saved against the rev it read');
      assert.equal(await store.saveRollout({ ...read, state: { ...read.state, phase: 'aborted' } }), false, 'a stale rev is refused');
      assert.equal((await store.getRollout(T, 'dep-r2'))!.state.phase, 'paused');
    });

    it('stores each uplink message once and filters by site, stream and time', async () => {
      const recs = Array.from({ length: 1200 }, (_, i) => ({
        siteId: 'site-gen',
        msgId: `m${i}`,
        stream: i % 2 ? 'alerts' : 'counts',
        at: 1000 + i,
        receivedAt: 5000,
        data: { i, nested: { ok: true } },
      }));
      assert.equal(await store.insertUplink(recs), 1200);
      assert.equal(await store.insertUplink(recs.slice(0, 700)), 0);
      assert.equal(await store.insertUplink([...recs.slice(1199), { ...recs[0]!, msgId: 'new' }]), 1);
      assert.equal(await store.countUplink('site-gen'), 1201);
      assert.equal(await store.countUplink('site-gen', 'alerts'), 600);
      const page = await store.queryUplink(T, { siteId: 'site-gen', stream: 'alerts', since: 1100, until: 1110, limit: 100 });
      assert.deepEqual(
        page.map((r) => r.at),
        [1101, 1103, 1105, 1107, 1109],
      );
      assert.deepEqual(page[0]!.data, { i: 101, nested: { ok: true } });
      const next = await store.queryUplink(T, { limit: 2, afterSeq: page[0]!.seq });
      assert.ok(next.every((r) => r.seq > page[0]!.seq));
      assert.equal((await store.queryUplink(T2, { siteId: 'site-gen', limit: 10 })).length, 0, 'another tenant sees nothing');
      await store.insertUplink([
        { siteId: 'site-gen', msgId: 'r1', stream: 'alerts', app: 'vib', rule: 'hot', at: 1, receivedAt: 2, data: 1 },
        { siteId: 'site-gen', msgId: 'r2', stream: 'alerts', app: 'vib', rule: 'cold', at: 1, receivedAt: 2, data: 2 },
      ]);
      const byRule = await store.queryUplink(T, { app: 'vib', rule: 'hot', limit: 10 });
      assert.deepEqual(
        byRule.map((r) => [r.msgId, r.app, r.rule]),
        [['r1', 'vib', 'hot']],
      );
      assert.equal((await store.queryUplink(T, { app: 'vib', limit: 10 })).length, 2);
      const latest = await store.latestUplinkSeq();
      assert.equal(
        latest,
        Math.max(...(await store.queryUplink(T, { limit: 5000 })).map((r) => r.seq)),
        'the newest seq, where a live feed starts',
      );
      assert.equal((await store.queryUplink(T, { afterSeq: latest, limit: 10 })).length, 0);
    });

    describe('tenancy: two tenants side by side', () => {
      const X = 'ten-x';
      const Y = 'ten-y';
      const siteOf = (id: string, tenantId: string, labels: Record<string, string> = {}): Site => siteRecord(id, tenantId, 100, { labels });
      const token = async (tenantId: string, secret: string, expiresAt = 1e15) =>
        store.createJoinToken({
          id: `tok-${secret}`,
          tenantId,
          hash: hashSecret(secret),
          labels: {},
          region: 'r',
          description: '',
          createdAt: 1,
          expiresAt,
          usedAt: null,
          siteId: null,
        });

      before(async () => {
        await store.createTenant({ id: X, name: 'x-city', createdAt: 10, quotas: { sites: 2, apps: 1 } });
        await store.createTenant({ id: Y, name: 'y-plant', createdAt: 11 });
      });

      it("keeps a tenant's state and quotas; names are unique", async () => {
        assert.deepEqual(await store.getTenant(X), {
          id: X,
          name: 'x-city',
          createdAt: 10,
          state: 'active',
          suspendedAt: null,
          quotas: { sites: 2, apps: 1 },
        });
        assert.equal((await store.getTenant(Y))?.state, 'active');
        assert.equal(await store.getTenant('nope'), undefined);
        await assert.rejects(store.createTenant({ id: 'ten-z', name: 'x-city', createdAt: 12 }), (e) => isEwError(e, 'TENANT_EXISTS'));
        assert.deepEqual((await store.setTenantQuotas(X, { sites: 2, apps: 1, resultsPerDay: 5 }))?.quotas, {
          sites: 2,
          apps: 1,
          resultsPerDay: 5,
        });
      });

      it("stores a key's role, limits and expiry, and gives its tenant's state with it", async () => {
        await store.createApiKey({
          id: 'key-x-dev',
          tenantId: X,
          name: 'dev',
          hash: hashSecret('kxd'),
          role: 'developer',
          createdAt: 1,
          revokedAt: null,
          expiresAt: 5000,
          scope: { apps: ['vib'], labels: { line: '1' } },
        });
        await store.createApiKey({
          id: 'key-x-admin',
          tenantId: X,
          name: 'admin',
          hash: hashSecret('kxa'),
          role: 'admin',
          createdAt: 1,
          revokedAt: null,
        });
        await store.createApiKey({
          id: 'key-y-admin',
          tenantId: Y,
          name: 'admin',
          hash: hashSecret('kya'),
          role: 'admin',
          createdAt: 1,
          revokedAt: null,
        });
        const k = (await store.findApiKeyByHash(hashSecret('kxd')))!;
        assert.equal(k.role, 'developer');
        assert.equal(k.expiresAt, 5000);
        assert.deepEqual(k.scope, { apps: ['vib'], labels: { line: '1' } });
        assert.equal(k.tenantState, 'active');
        assert.equal((await store.findApiKeyByHash(hashSecret('kxa')))!.scope, null);
        assert.deepEqual(
          (await store.listApiKeys(Y)).map((x) => x.id),
          ['key-y-admin'],
          "one tenant's keys only",
        );
        assert.equal(await store.revokeApiKey(Y, 'key-x-dev', 9), 'not-found', 'another tenant cannot revoke it');
        assert.equal(await store.revokeApiKey(X, 'key-x-dev', 9), 'revoked', 'a developer key is not the last admin');
        assert.equal(await store.revokeApiKey(X, 'key-x-admin', 9), 'last-admin');
      });

      it('refuses enrollment past the sites quota and while suspended, leaving the token unused', async () => {
        for (const n of [1, 2, 3]) await token(X, `x-tok-${n}`);
        for (const n of [1, 2])
          assert.equal(
            (await store.enrollSite(hashSecret(`x-tok-${n}`), 200, (t) => siteOf(`x-site-${n}`, t.tenantId, { line: '1' }))).ok,
            true,
          );
        assert.deepEqual(
          await store.enrollSite(hashSecret('x-tok-3'), 200, () => {
            throw new Error('not called');
          }),
          { ok: false, reason: 'quota' },
        );
        await store.revokeSite(X, 'x-site-2', 300);
        await store.setTenantState(X, 'suspended', 400);
        assert.equal((await store.getTenant(X))?.suspendedAt, 400);
        assert.equal((await store.findApiKeyByHash(hashSecret('kxa')))!.tenantState, 'suspended');
        assert.deepEqual(
          await store.enrollSite(hashSecret('x-tok-3'), 500, () => {
            throw new Error('not called');
          }),
          { ok: false, reason: 'suspended' },
        );
        await store.setTenantState(X, 'active', 600);
        assert.equal((await store.getTenant(X))?.suspendedAt, null);
        assert.equal(
          (await store.enrollSite(hashSecret('x-tok-3'), 700, (t) => siteOf('x-site-3', t.tenantId))).ok,
          true,
          'a revoked site frees its place; the same token works',
        );
        await token(Y, 'y-tok-1');
        assert.equal(
          (await store.enrollSite(hashSecret('y-tok-1'), 200, (t) => siteOf('y-site-1', t.tenantId))).ok,
          true,
          'no quota: unlimited',
        );
      });

      it("holds a suspended tenant's rollouts out of the controller's active list", async () => {
        const state = (id: string) =>
          ({
            id,
            app: 'a',
            version: '1',
            phase: 'progressing',
            startedAt: 1,
            updatedAt: 1,
            admitted: [],
            canaries: [],
            sites: {},
            history: [],
            strategy: { type: 'all' },
            options: { stepTimeoutS: 60, onFailure: 'rollback' },
          }) as never;
        await store.saveRollout({ id: 'dep-x-1', tenantId: X, state: state('dep-x-1') });
        await store.saveRollout({ id: 'dep-y-1', tenantId: Y, state: state('dep-y-1') });
        const active = async () =>
          (await store.listRollouts(undefined, { activeOnly: true }))
            .map((r) => r.id)
            .filter((id) => id.startsWith('dep-x') || id.startsWith('dep-y'))
            .sort();
        assert.deepEqual(await active(), ['dep-x-1', 'dep-y-1']);
        await store.setTenantState(X, 'suspended', 1);
        assert.deepEqual(await active(), ['dep-y-1'], 'held while suspended');
        assert.equal((await store.listRollouts(X)).length, 1, 'still readable');
        await store.setTenantState(X, 'active', 2);
        assert.deepEqual(await active(), ['dep-x-1', 'dep-y-1'], 'stepped again once resumed');
      });

      it("keeps the same artifact per tenant, and lists a tenant's own", async () => {
        const shared = 'c'.repeat(64);
        const onlyX = 'd'.repeat(64);
        await store.addArtifactOwner(X, shared, 1);
        await store.addArtifactOwner(Y, shared, 1);
        await store.addArtifactOwner(X, onlyX, 1);
        assert.deepEqual(await store.listArtifacts(X), [shared, onlyX]);
        assert.deepEqual(await store.listArtifacts(Y), [shared]);
        assert.equal(await store.ownsArtifact(Y, onlyX), false, 'knowing the sha256 grants nothing');
      });

      it('appends audit entries and reads them per tenant, oldest first, after a cursor; never updates or deletes them', async () => {
        const e = (tenantId: string | null, at: number) => ({
          at,
          tenantId,
          keyId: 'k',
          role: 'admin',
          siteId: null,
          action: 'POST /api/v1/x',
          target: '/api/v1/x',
          status: 201,
          outcome: 'ok' as const,
          code: null,
          address: '127.0.0.1',
          requestId: `r${at}`,
        });
        await store.appendAudit(e(X, 1));
        await store.appendAudit(e(Y, 2));
        await store.appendAudit({ ...e(X, 3), status: 403, outcome: 'denied', code: 'PERMISSION_DENIED' });
        await store.appendAudit(e(null, 4));
        const xs = await store.queryAudit({ tenantId: X, limit: 10 });
        assert.deepEqual(
          xs.map((a) => [a.at, a.outcome, a.code]),
          [
            [1, 'ok', null],
            [3, 'denied', 'PERMISSION_DENIED'],
          ],
        );
        assert.deepEqual(
          (await store.queryAudit({ tenantId: X, afterSeq: xs[0]!.seq, limit: 10 })).map((a) => a.at),
          [3],
        );
        assert.deepEqual(
          (await store.queryAudit({ tenantId: Y, limit: 10 })).map((a) => a.at),
          [2],
        );
        assert.equal((await store.queryAudit({ limit: 10 })).length, 4, 'the platform reads every entry');
        assert.deepEqual(
          (await store.queryAudit({ tenantId: X, since: 2, limit: 10 })).map((a) => a.at),
          [3],
        );
      });

      it('counts what a tenant holds and deletes all of it in one go, leaving the other tenant and the audit log whole', async () => {
        await store.createApp({ tenantId: X, name: 'vib', version: '1', manifest, digest: 'd', createdAt: 1 });
        await store.createDeployment({ id: 'dep-x-1', tenantId: X, appName: 'vib', appVersion: '1', selector: {}, createdAt: 1 });
        await store.insertUplink([
          { siteId: 'x-site-1', msgId: 'x1', stream: 's', at: 1, receivedAt: 1000, data: 1 },
          { siteId: 'x-site-1', msgId: 'x2', stream: 's', at: 1, receivedAt: 9000, data: 2 },
        ]);
        await store.insertUplink([{ siteId: 'y-site-1', msgId: 'y1', stream: 's', at: 1, receivedAt: 1000, data: 1 }]);
        const data = await store.tenantData(X);
        assert.deepEqual(data, {
          sites: 3,
          liveSites: 2,
          keys: 1,
          tokens: 3,
          apps: 1,
          appVersions: 1,
          deployments: 1,
          rollouts: 1,
          artifacts: 2,
          results: 2,
        });
        assert.equal((await store.tenantData(X, 5000)).results, 1, "results since a time (the day's)");
        // What refers to the tenant without being counted goes too (a retention policy's row
        // refers to the tenant: PostgreSQL refused the deletion while one was left).
        assert.equal(await store.setRetention(X, 's', 7, 1), true);
        assert.equal(await store.reserveResults(X, 0, 5, 100), 5);
        const gone = await store.deleteTenant(X);
        assert.deepEqual(gone?.siteIds.sort(), ['x-site-1', 'x-site-2', 'x-site-3']);
        assert.deepEqual(gone?.orphanArtifacts, ['d'.repeat(64)], 'the file Y also holds stays');
        assert.equal(await store.getTenant(X), undefined);
        assert.equal(await store.findApiKeyByHash(hashSecret('kxa')), undefined, 'its keys stop at once');
        assert.equal(await store.getSiteById('x-site-1'), undefined, 'its sites stop at once');
        assert.equal(await store.countUplink('x-site-1'), 0);
        assert.deepEqual(await store.tenantData(X), {
          sites: 0,
          liveSites: 0,
          keys: 0,
          tokens: 0,
          apps: 0,
          appVersions: 0,
          deployments: 0,
          rollouts: 0,
          artifacts: 0,
          results: 0,
        });
        assert.deepEqual(await store.listRetention(X), []);
        assert.equal(await store.reserveResults(X, 0, 5, 100), 5, 'the quota counter starts again (no results left)');
        assert.equal(await store.deleteTenant(X), undefined, 'once');
        assert.equal((await store.tenantData(Y)).results, 1, 'the other tenant keeps everything');
        assert.equal(await store.ownsArtifact(Y, 'c'.repeat(64)), true);
        assert.equal((await store.queryAudit({ tenantId: X, limit: 10 })).length, 2, 'the audit log of a deleted tenant stays');
      });

      it("reserves a tenant's results-per-day quota from one counter: never more than the limit, even asked at once", async () => {
        const day = 10 * 86_400_000;
        assert.equal(await store.reserveResults(Y, day, 30, 100), 30);
        // Twenty reservations at once (as replicas would): together they get exactly what is left.
        const got = await Promise.all(Array.from({ length: 20 }, () => store.reserveResults(Y, day, 7, 100)));
        assert.equal(
          got.reduce((a, b) => a + b, 0),
          70,
        );
        assert.equal(await store.reserveResults(Y, day, 5, 100), 0, 'used up');
        assert.equal(await store.reserveResults(Y, day, 5, 120), 5, 'a raised limit grants more');
        assert.equal(await store.reserveResults(Y, day + 86_400_000, 5, 120), 5, 'a new day counts afresh');
        assert.equal(await store.reserveResults(Y, day, 0, 120), 0);
        // The day's counter starts from what is stored that day: y1 was received at 1000 (day 0).
        assert.equal(await store.reserveResults(Y, 0, 100, 100), 99);
      });
    });
  });
}
