import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { OffsetClock, startTestCloud, waitFor, type TestCloud } from './support/harness.ts';
import { PG_URL, freshSchema, pgAvailable } from './support/pg.ts';
import { topics } from '../src/contracts/topics.ts';
import { ENVELOPE_VERSION } from '../src/contracts/messages.ts';
import { PERMISSIONS, permissionsOf, ROLES } from '../src/contracts/permissions.ts';
import Database from 'better-sqlite3';
import pg from 'pg';

/**
 * Issue 14: two tenants side by side in one cloud, on SQLite and on PostgreSQL. Each tries every
 * cross-tenant access through the API and over MQTT — all denied, answered exactly as for an id
 * that does not exist — and the platform admin creates, suspends, resumes and deletes tenants.
 */

/** A model file with a known sha256: the id another tenant would have to guess. */
const MODEL = Buffer.from('edgeweave issue 14: a model file only its tenant may read\n');
const MODEL_SHA = 'd8c2101dfc1279c60e94436d24a47d893abde62840347f6bcb7861700a13f92e';
const OTHER_SHA = 'f'.repeat(64);

interface Creds {
  siteId: string;
  tenantId: string;
  mqtt: { url: string; username: string; password: string; clientId: string };
}
interface Tenant {
  id: string;
  name: string;
  key: string;
  site: Creds;
  token: string;
  tokenId: string;
  deployment: string;
  keyId: string;
}

const manifest = (name: string, version: string, sha?: string) => ({
  apiVersion: 'edgeweave/v1',
  kind: 'App',
  metadata: { name, version },
  spec: sha ? { models: [{ name: 'm', format: 'onnx', sha256: sha }] } : {},
});
const uplink = (data: unknown) =>
  JSON.stringify({ v: ENVELOPE_VERSION, id: randomUUID(), ts: 1, type: 'uplink', body: { stream: 's', at: 1, data } });

function connect(c: Creds, over: Partial<mqtt.IClientOptions> = {}): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(c.mqtt.url, {
      clientId: c.mqtt.clientId,
      username: c.mqtt.username,
      password: c.mqtt.password,
      protocolVersion: 4,
      reconnectPeriod: 0,
      ...over,
    });
    client.once('connect', () => resolve(client));
    client.once('error', (e) => {
      client.end(true);
      reject(e);
    });
  });
}

async function subscribeCode(c: MqttClient, filter: string): Promise<number> {
  try {
    return (await c.subscribeAsync(filter, { qos: 1 }))[0]!.qos;
  } catch (e) {
    const granted = (e as { packet?: { granted?: number[] } }).packet?.granted;
    if (granted) return granted[0]!;
    throw e;
  }
}

describe('roles map to permissions', () => {
  it('viewer reads, operator runs the fleet, developer ships apps, admin holds its tenant, platform-admin also tenants', () => {
    const writes = PERMISSIONS.filter((p) => !p.endsWith(':read'));
    assert.deepEqual(
      permissionsOf('viewer').filter((p) => writes.includes(p)),
      [],
      'a viewer changes nothing',
    );
    assert.ok(!permissionsOf('viewer').includes('keys:read') && !permissionsOf('viewer').includes('audit:read'));
    assert.deepEqual(
      permissionsOf('operator')
        .filter((p) => writes.includes(p))
        .sort(),
      ['endpoints:infer', 'results:write', 'rollouts:act', 'sites:write', 'tokens:write'],
    );
    assert.deepEqual(
      permissionsOf('developer')
        .filter((p) => writes.includes(p))
        .sort(),
      ['apps:write', 'deployments:write', 'endpoints:infer', 'rollouts:act'],
    );
    assert.deepEqual(permissionsOf('admin').sort(), PERMISSIONS.filter((p) => !p.startsWith('tenants:')).sort());
    assert.deepEqual(permissionsOf('platform-admin').sort(), [...PERMISSIONS].sort());
    assert.deepEqual(permissionsOf('root'), [], 'an unknown role holds nothing');
    assert.equal(ROLES.length, 5);
  });
});

for (const engine of ['sqlite', 'postgres'] as const) {
  const skip = engine === 'postgres' ? await pgAvailable() : undefined;

  describe(`two tenants side by side (${engine})`, { skip }, () => {
    let cloud: TestCloud;
    let drop: (() => Promise<void>) | undefined;
    let pgSchema = '';
    const clock = new OffsetClock();
    const mqttClients: MqttClient[] = [];
    let A: Tenant;
    let B: Tenant;

    const api = (method: string, path: string, body?: unknown, key?: string) => cloud.api(method, path, body, key);
    const put = (key: string, body: Buffer) =>
      fetch(`${cloud.url}/api/v1/artifacts/${createHash('sha256').update(body).digest('hex')}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/octet-stream' },
        body: new Uint8Array(body),
      });
    const siteGet = (s: Creds, sha: string) =>
      fetch(`${cloud.url}/api/v1/artifacts/${sha}`, {
        headers: { authorization: `Basic ${Buffer.from(`${s.siteId}:${s.mqtt.password}`).toString('base64')}` },
      });

    async function tenant(name: string, labels: Record<string, string>, quotas: Record<string, number> = {}): Promise<Tenant> {
      const t = await api('POST', '/api/v1/tenants', { name, quotas });
      assert.equal(t.status, 201, JSON.stringify(t.body));
      const key = t.body.adminKey.key as string;
      const tok = await api('POST', '/api/v1/tokens', { labels, region: 'r1' }, key);
      assert.equal(tok.status, 201);
      const spare = await api('POST', '/api/v1/tokens', { labels, region: 'r1' }, key);
      const en = await api('POST', '/api/v1/enroll', { token: tok.body.token }, '');
      assert.equal(en.status, 201, JSON.stringify(en.body));
      return {
        id: t.body.id,
        name,
        key,
        site: en.body,
        token: spare.body.token,
        tokenId: spare.body.id,
        deployment: '',
        keyId: t.body.adminKey.id,
      };
    }

    before(async () => {
      let db: string | undefined;
      if (engine === 'postgres') {
        const s = await freshSchema();
        drop = s.drop;
        pgSchema = s.schema;
        db = `${PG_URL}?options=${encodeURIComponent(`-c search_path=${s.schema}`)}`;
      }
      cloud = await startTestCloud({ db, clock });
      A = await tenant('city', { zone: 'a' });
      B = await tenant('plant', { zone: 'b' });
      for (const t of [A, B]) {
        assert.equal((await put(t.key, MODEL)).status, 201, 'each tenant uploads the same model file');
        assert.equal((await api('POST', '/api/v1/apps', { manifest: manifest('vision', '1.0.0', MODEL_SHA) }, t.key)).status, 201);
        const dep = await api(
          'POST',
          '/api/v1/deployments',
          { app: 'vision', version: '1.0.0', selector: { zone: t === A ? 'a' : 'b' } },
          t.key,
        );
        assert.equal(dep.status, 201, JSON.stringify(dep.body));
        t.deployment = dep.body.id;
      }
    });
    after(async () => {
      for (const c of mqttClients) c.end(true);
      await cloud?.stop();
      await drop?.();
    });

    it('the same file from two tenants is stored once, with a known sha256', () => {
      assert.equal(createHash('sha256').update(MODEL).digest('hex'), MODEL_SHA);
      assert.deepEqual(
        readdirSync(join(cloud.dataDir, 'artifacts')).filter((f) => f.startsWith(MODEL_SHA)),
        [MODEL_SHA],
      );
    });

    it("every cross-tenant API call on the other tenant's ids is denied, answered as for ids that do not exist, and changes nothing", async () => {
      const a = { site: A.site.siteId, token: A.tokenId, dep: A.deployment, key: A.keyId };
      const none = { site: 'site-doesnotexist', token: 'tok-doesnotexist', dep: 'dep-doesnotexist', key: 'key-doesnotexist' };
      const calls = (ids: typeof a): [string, string, unknown?][] => [
        ['GET', `/api/v1/sites/${ids.site}`],
        ['PUT', `/api/v1/sites/${ids.site}/labels`, { labels: { zone: 'stolen' } }],
        ['POST', `/api/v1/sites/${ids.site}/revoke`],
        ['GET', `/api/v1/sites/${ids.site}/logs`],
        ['GET', `/api/v1/sites/${ids.site}/dead-letters`],
        ['GET', `/api/v1/sites/${ids.site}/writes`],
        ['GET', `/api/v1/sites/${ids.site}/rules`],
        ['GET', `/api/v1/sites/${ids.site}/egress`],
        ['GET', `/api/v1/sites/${ids.site}/devices`],
        ['POST', `/api/v1/sites/${ids.site}/devices`, { id: 'plc-1', password: 'x'.repeat(24) }],
        ['DELETE', `/api/v1/sites/${ids.site}/devices/plc-1`],
        ['DELETE', `/api/v1/tokens/${ids.token}`],
        ['GET', `/api/v1/deployments/${ids.dep}`],
        ['DELETE', `/api/v1/deployments/${ids.dep}`],
        ['GET', `/api/v1/rollouts/${ids.dep}`],
        ['POST', `/api/v1/rollouts/${ids.dep}/pause`],
        ['DELETE', `/api/v1/keys/${ids.key}`],
      ];
      const mask = (v: unknown, ids: typeof a) =>
        JSON.stringify(v).replaceAll(ids.site, 'ID').replaceAll(ids.token, 'ID').replaceAll(ids.dep, 'ID').replaceAll(ids.key, 'ID');
      const theirs = calls(a);
      const nobody = calls(none);
      for (let i = 0; i < theirs.length; i++) {
        const [m, p, body] = theirs[i]!;
        const got = await api(m, p, body, B.key);
        const ref = await api(nobody[i]![0], nobody[i]![1], nobody[i]![2], B.key);
        assert.ok(got.status >= 400, `${m} ${p}: ${got.status}`);
        assert.equal(got.status, ref.status, `${m} ${p}`);
        assert.equal(mask(got.body, a), mask(ref.body, none), `${m} ${p}: the answer must not tell another tenant's id from a missing one`);
      }
      // Lists and queries hold nothing of A.
      const listed = JSON.stringify(
        [
          await api('GET', '/api/v1/sites', undefined, B.key),
          await api('GET', '/api/v1/tokens', undefined, B.key),
          await api('GET', '/api/v1/deployments', undefined, B.key),
          await api('GET', '/api/v1/rollouts', undefined, B.key),
          await api('GET', '/api/v1/keys', undefined, B.key),
          await api('GET', `/api/v1/results?site=${A.site.siteId}`, undefined, B.key),
        ].map((r) => r.body),
      );
      for (const id of [A.site.siteId, A.tokenId, A.deployment, A.keyId, A.id])
        assert.ok(!listed.includes(id), `${id} leaked into B's lists`);
      // A's things are as they were.
      const site = await api('GET', `/api/v1/sites/${A.site.siteId}`, undefined, A.key);
      assert.deepEqual(site.body.labels, { zone: 'a' });
      assert.notEqual(site.body.state, 'revoked');
      assert.equal((await api('GET', `/api/v1/deployments/${A.deployment}`, undefined, A.key)).status, 200);
      assert.notEqual((await api('GET', `/api/v1/rollouts/${A.deployment}`, undefined, A.key)).body.phase, 'paused');
      assert.ok((await api('GET', '/api/v1/tokens', undefined, A.key)).body.items.some((t: { id: string }) => t.id === A.tokenId));
      assert.equal((await api('GET', '/api/v1/me', undefined, A.key)).status, 200);
    });

    it('artifacts: another tenant cannot read, list or download one even with its sha256; a site only what is deployed to it', async () => {
      const secret = Buffer.from(`only A has this ${engine}\n`);
      const sha = createHash('sha256').update(secret).digest('hex');
      assert.equal((await put(A.key, secret)).status, 201);
      for (const [path, ref] of [
        [`/api/v1/artifacts/${sha}`, `/api/v1/artifacts/${OTHER_SHA}`],
        [`/api/v1/artifacts/${sha}/status`, `/api/v1/artifacts/${OTHER_SHA}/status`],
      ] as const) {
        const got = await api('GET', path, undefined, B.key);
        const missing = await api('GET', ref, undefined, B.key);
        assert.equal(got.status, missing.status, path);
        assert.equal(JSON.stringify(got.body).replaceAll(sha, 'SHA'), JSON.stringify(missing.body).replaceAll(OTHER_SHA, 'SHA'), path);
      }
      const push = await api('POST', '/api/v1/apps', { manifest: manifest('thief', '1.0.0', sha) }, B.key);
      assert.equal(push.body.code, 'ARTIFACT_NOT_FOUND');
      // B's site: refused for A's file as for a file nobody has; A's site gets the deployed one.
      const bSite = await siteGet(B.site, sha);
      assert.equal(bSite.status, 403);
      assert.equal(((await bSite.json()) as { code: string }).code, 'ARTIFACT_NOT_ALLOWED');
      assert.equal((await siteGet(B.site, OTHER_SHA)).status, 403);
      assert.equal((await siteGet(A.site, sha)).status, 403, "not deployed to A's site either");
      const ok = await siteGet(A.site, MODEL_SHA);
      assert.equal(ok.status, 200);
      assert.deepEqual(Buffer.from(await ok.arrayBuffer()), MODEL);
      assert.equal(
        (await api('GET', `/api/v1/artifacts/${MODEL_SHA}`, undefined, B.key)).status,
        200,
        'B uploaded the same bytes itself: it holds them too',
      );
    });

    it('over MQTT, a site of one tenant reaches nothing of the other, by topic or by payload', async () => {
      const b = await connect(B.site);
      mqttClients.push(b);
      for (const filter of [topics.desired(A.site.siteId), `ew/${A.site.siteId}/#`, 'ew/#', '#', 'ew/+/desired', `ew/+/up/s`]) {
        assert.equal(await subscribeCode(b, filter), 128, `${filter} must be refused`);
      }
      // A payload naming the other tenant's site and tenant changes nothing: the topic decides.
      await b.publishAsync(topics.up(B.site.siteId, 's'), uplink({ siteId: A.site.siteId, tenantId: A.id, forged: true }), { qos: 1 });
      const aResults = await api('GET', `/api/v1/results?site=${A.site.siteId}`, undefined, A.key);
      assert.equal(aResults.body.items.length, 0);
      const bResults = await api('GET', `/api/v1/results?site=${B.site.siteId}`, undefined, B.key);
      assert.deepEqual(
        bResults.body.items.map((r: { siteId: string }) => r.siteId),
        [B.site.siteId],
        "stored as B's own site's",
      );
      // Publishing into A's topics cuts the connection and stores nothing.
      const closed = new Promise<void>((r) => b.once('close', () => r()));
      b.publish(topics.up(A.site.siteId, 's'), uplink({ forged: true }), { qos: 1 });
      await closed;
      assert.equal(await cloud.handle.store.countUplink(A.site.siteId), 0);
      // A's site id with B's password, or B's client id on A's credentials: refused.
      await assert.rejects(
        connect({ ...A.site, mqtt: { ...A.site.mqtt, password: B.site.mqtt.password } }),
        /Bad username or password|Not authorized/i,
      );
      await assert.rejects(
        connect({ ...A.site, mqtt: { ...A.site.mqtt, clientId: B.site.siteId } }),
        /Bad username or password|Not authorized|Identifier/i,
      );
    });

    it('only platform admins manage tenants; only tenant admins read the audit log', async () => {
      for (const [m, p] of [
        ['GET', '/api/v1/tenants'],
        ['POST', '/api/v1/tenants'],
        ['POST', `/api/v1/tenants/${B.id}/suspend`],
        ['DELETE', `/api/v1/tenants/${B.id}?dryRun=true`],
      ] as const) {
        const r = await api(m, p, m === 'POST' && p.endsWith('tenants') ? { name: 'sneaky' } : undefined, A.key);
        assert.equal(r.status, 403, `${m} ${p}`);
        assert.equal(r.body.code, 'PERMISSION_DENIED');
        assert.match(r.body.message, /role admin.*tenants:(read|write)/);
      }
      const viewer = await api('POST', '/api/v1/keys', { name: 'v', role: 'viewer' }, A.key);
      assert.equal(viewer.status, 201);
      assert.equal(viewer.body.role, 'viewer');
      const me = await api('GET', '/api/v1/me', undefined, viewer.body.key);
      assert.deepEqual(me.body.permissions, permissionsOf('viewer'));
      const audit = await api('GET', '/api/v1/audit', undefined, viewer.body.key);
      assert.equal(audit.status, 403);
      assert.match(audit.body.message, /\(role viewer\) lacks the permission audit:read/);
      assert.equal(
        (await api('GET', `/api/v1/audit?tenant=${B.id}`, undefined, A.key)).body.code,
        'PERMISSION_DENIED',
        'a tenant admin reads its own log only',
      );
      assert.equal(
        (await api('POST', '/api/v1/keys', { name: 'p', role: 'platform-admin' }, A.key)).status,
        400,
        'a tenant cannot mint a platform admin',
      );
    });

    it('a key limited to apps and site labels reaches only those', async () => {
      const lim = await api('POST', '/api/v1/keys', { name: 'dev', role: 'developer', apps: ['vision'], labels: { zone: 'a' } }, A.key);
      assert.equal(lim.status, 201, JSON.stringify(lim.body));
      assert.deepEqual(lim.body.scope, { apps: ['vision'], labels: { zone: 'a' } });
      const k = lim.body.key as string;
      const other = await api('POST', '/api/v1/apps', { manifest: manifest('other', '1.0.0') }, k);
      assert.equal(other.status, 403);
      assert.equal(other.body.code, 'KEY_SCOPE_DENIED');
      assert.match(other.body.message, /limited to apps vision and sites labelled zone=a; it may not push app other/);
      assert.equal((await api('POST', '/api/v1/apps', { manifest: manifest('vision', '1.1.0') }, k)).status, 201);
      const wide = await api('POST', '/api/v1/deployments', { app: 'vision', version: '1.1.0', selector: { tier: 'x' } }, k);
      assert.equal(wide.body.code, 'KEY_SCOPE_DENIED', 'a selector reaching past its labels');
      assert.equal(wide.body.path, 'selector');
      // A second site of A outside the key's labels: invisible in lists, refused by id.
      const tok = await api('POST', '/api/v1/tokens', { labels: { zone: 'z' } }, A.key);
      const outside = (await api('POST', '/api/v1/enroll', { token: tok.body.token }, '')).body as Creds;
      const sites = await api('GET', '/api/v1/sites', undefined, k);
      assert.deepEqual(
        sites.body.items.map((s: { id: string }) => s.id),
        [A.site.siteId],
      );
      assert.equal(sites.body.total, 1);
      assert.equal((await api('GET', `/api/v1/sites/${outside.siteId}`, undefined, k)).body.code, 'KEY_SCOPE_DENIED');
      assert.equal((await api('GET', `/api/v1/sites/${A.site.siteId}`, undefined, k)).status, 200);
      assert.equal(
        (await api('GET', '/api/v1/keys', undefined, k)).body.code,
        'PERMISSION_DENIED',
        'its role first: a developer holds no keys:read',
      );
      assert.equal(
        (await api('GET', '/metrics', undefined, k)).body.code,
        'KEY_SCOPE_DENIED',
        'a route its role allows but that cannot be confined to its limits is closed to it',
      );
      assert.equal((await api('GET', `/api/v1/results?site=${outside.siteId}&app=vision`, undefined, k)).body.code, 'KEY_SCOPE_DENIED');
      assert.equal((await api('GET', `/api/v1/results?site=${A.site.siteId}&app=vision`, undefined, k)).status, 200);
      assert.deepEqual((await api('GET', '/api/v1/apps', undefined, k)).body.items.map((x: { name: string }) => x.name).sort(), [
        'vision',
        'vision',
      ]);
      // An operator limited to zone=a: its tokens give that label, its relabels keep it.
      const op = (await api('POST', '/api/v1/keys', { name: 'ops', role: 'operator', labels: { zone: 'a' } }, A.key)).body.key as string;
      assert.equal((await api('POST', '/api/v1/tokens', { labels: { zone: 'z' } }, op)).body.code, 'KEY_SCOPE_DENIED');
      assert.equal((await api('POST', '/api/v1/tokens', { labels: { zone: 'a', rack: '1' } }, op)).status, 201);
      const toks = (await api('GET', '/api/v1/tokens', undefined, op)).body.items as { labels: Record<string, string> }[];
      assert.ok(toks.length > 0 && toks.every((t) => t.labels.zone === 'a'), "only its zone's tokens are listed");
      const relabel = await api('PUT', `/api/v1/sites/${A.site.siteId}/labels`, { labels: { zone: 'z' } }, op);
      assert.equal(relabel.body.code, 'KEY_SCOPE_DENIED');
      assert.equal(relabel.body.path, 'labels');
      assert.equal((await api('POST', `/api/v1/sites/${outside.siteId}/revoke`, undefined, op)).body.code, 'KEY_SCOPE_DENIED');
      await api('POST', `/api/v1/sites/${outside.siteId}/revoke`, undefined, A.key);
    });

    it('an expired key gets 401 KEY_EXPIRED', async () => {
      const k = await api('POST', '/api/v1/keys', { name: 'short', role: 'viewer', expiresAt: clock.now() + 60_000 }, A.key);
      assert.equal(k.status, 201);
      assert.equal((await api('GET', '/api/v1/sites', undefined, k.body.key)).status, 200);
      clock.offset += 61_000;
      try {
        const r = await api('GET', '/api/v1/sites', undefined, k.body.key);
        assert.equal(r.status, 401);
        assert.equal(r.body.code, 'KEY_EXPIRED');
        assert.match(r.body.message, /expired at .*edgeweave keys create/);
        assert.equal((await api('POST', '/api/v1/keys', { name: 'past', expiresAt: clock.now() - 1 }, A.key)).body.path, 'expiresAt');
      } finally {
        clock.offset -= 61_000;
      }
    });

    it('a tenant suspended mid-rollout: rollouts held, reads work, new work refused with TENANT_SUSPENDED; resumed, all goes on', async () => {
      // Its site is offline, so the rollout waits for it (deferred): the controller still steps it.
      assert.ok(
        (await cloud.handle.store.listRollouts(undefined, { activeOnly: true })).some((x) => x.id === B.deployment),
        'mid-way',
      );
      const s = await api('POST', `/api/v1/tenants/${B.name}/suspend`);
      assert.equal(s.status, 200, JSON.stringify(s.body));
      assert.equal(s.body.state, 'suspended');
      const held = (await cloud.handle.store.listRollouts(undefined, { activeOnly: true })).map((r) => r.id);
      assert.ok(!held.includes(B.deployment) && held.includes(A.deployment), "the controller no longer steps B's rollout; A's goes on");
      assert.equal((await api('GET', `/api/v1/rollouts/${B.deployment}`, undefined, B.key)).status, 200, 'reads work');
      for (const [m, p, body] of [
        ['POST', '/api/v1/apps', { manifest: manifest('late', '1.0.0') }],
        ['POST', '/api/v1/deployments', { app: 'vision', version: '1.0.0', selector: { zone: 'b' } }],
        ['POST', `/api/v1/rollouts/${B.deployment}/pause`],
        ['POST', '/api/v1/tokens', {}],
      ] as const) {
        const r = await api(m, p, body, B.key);
        assert.equal(r.status, 403, `${m} ${p}`);
        assert.equal(r.body.code, 'TENANT_SUSPENDED');
      }
      const enroll = await api('POST', '/api/v1/enroll', { token: B.token }, '');
      assert.equal(enroll.body.code, 'TENANT_SUSPENDED');
      assert.equal(
        (await api('POST', '/api/v1/apps', { manifest: manifest('fine', '1.0.0') }, A.key)).status,
        201,
        'the other tenant is not touched',
      );
      const r = await api('POST', `/api/v1/tenants/${B.id}/resume`);
      assert.equal(r.body.state, 'active');
      assert.ok((await cloud.handle.store.listRollouts(undefined, { activeOnly: true })).some((x) => x.id === B.deployment));
      assert.equal((await api('POST', '/api/v1/tokens', {}, B.key)).status, 201, 'changes work again');
      assert.equal(
        (await api('POST', `/api/v1/tenants/${(await api('GET', '/api/v1/me')).body.tenantId}/suspend`)).status,
        400,
        'a platform admin cannot suspend itself',
      );
    });

    it('quotas: sites, apps, artifact bytes, results per day, each with QUOTA_EXCEEDED', async () => {
      const Q = await tenant('small', { zone: 'q' }, { sites: 1, apps: 1, artifactBytes: 100, resultsPerDay: 2 });
      const second = await api('POST', '/api/v1/enroll', { token: Q.token }, '');
      assert.equal(second.status, 403);
      assert.equal(second.body.code, 'QUOTA_EXCEEDED');
      assert.equal((await api('POST', '/api/v1/apps', { manifest: manifest('one', '1.0.0') }, Q.key)).status, 201);
      assert.equal(
        (await api('POST', '/api/v1/apps', { manifest: manifest('one', '1.0.1') }, Q.key)).status,
        201,
        'a new version of the same app',
      );
      const two = await api('POST', '/api/v1/apps', { manifest: manifest('two', '1.0.0') }, Q.key);
      assert.equal(two.body.code, 'QUOTA_EXCEEDED');
      assert.match(two.body.message, /quota of apps is 1/);
      const big = await put(Q.key, Buffer.alloc(200, 7));
      assert.equal(big.status, 403);
      assert.equal(((await big.json()) as { code: string }).code, 'QUOTA_EXCEEDED');
      assert.equal((await put(Q.key, Buffer.alloc(60, 8))).status, 201);
      assert.equal((await put(Q.key, Buffer.alloc(60, 9))).status, 403, 'the second passes the total');
      const c = await connect(Q.site);
      mqttClients.push(c);
      for (let i = 0; i < 3; i++) await c.publishAsync(topics.up(Q.site.siteId, 's'), uplink({ i }), { qos: 1 });
      await waitFor('two stored', async () => (await cloud.handle.store.countUplink(Q.site.siteId)) === 2);
      const metrics = await fetch(`${cloud.url}/metrics`, { headers: { authorization: `Bearer ${cloud.adminKey}` } }).then((r) => r.text());
      assert.match(metrics, /ew_cloud_uplink_quota_dropped_total 1\b/);
      assert.equal((await api('GET', `/api/v1/tenants/${Q.id}`)).body.usage.results, 2);
      // Raised by the platform admin: the next one fits.
      assert.equal((await api('PUT', `/api/v1/tenants/${Q.id}/quotas`, { sites: 1, apps: 1, artifactBytes: 100 })).status, 200);
      const fresh = await api('GET', `/api/v1/tenants/${Q.id}`);
      assert.deepEqual(fresh.body.quotas, { sites: 1, apps: 1, artifactBytes: 100 });
    });

    it("the audit log has an entry for every mutating route, readable by the tenant's admins, without secrets", async () => {
      const doc = (await api('GET', '/openapi.json')).body as { paths: Record<string, Record<string, unknown>> };
      const mutating: string[] = [];
      for (const [path, ops] of Object.entries(doc.paths)) {
        if (path.startsWith('/v1/') || path.startsWith('/v2')) continue;
        for (const m of Object.keys(ops))
          if (!['get', 'head', 'options'].includes(m)) mutating.push(`${m.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ':$1')}`);
      }
      assert.ok(mutating.length >= 15, `${mutating.length} mutating routes`);
      // A fresh tenant calls each once (most with ids that do not exist: refused, still recorded).
      const T = await tenant('audited', { zone: 't' });
      const after = (await api('GET', '/api/v1/audit?tenant=*&limit=1000')).body.next as number;
      for (const route of mutating) {
        const [m, pattern] = route.split(' ') as [string, string];
        const path = pattern.replace(/:(\w+)/g, (_, p: string) => (p === 'sha256' ? OTHER_SHA : p === 'action' ? 'pause' : `nothing-${p}`));
        await api(m, path, m === 'DELETE' ? undefined : {}, T.key);
      }
      const entries = (await api('GET', `/api/v1/audit?tenant=*&limit=1000&after=${after}`)).body.items as {
        action: string;
        tenantId: string;
        keyId: string;
        role: string;
        address: string;
        outcome: string;
        status: number;
        at: number;
      }[];
      for (const route of mutating) {
        const e = entries.find((x) => x.action === route);
        assert.ok(e, `no audit entry for ${route}`);
        assert.match(e.address, /127\.0\.0\.1/);
        // The enrollment is public (its token, refused here, names no tenant).
        if (route === 'POST /api/v1/enroll') continue;
        assert.equal(e.tenantId, T.id);
        assert.equal(e.keyId, T.keyId);
        assert.equal(e.role, 'admin');
        assert.ok(e.at > 0 && e.status >= 200);
      }
      const own = (await api('GET', '/api/v1/audit?limit=1000', undefined, T.key)).body.items as { tenantId: string }[];
      assert.ok(own.length >= mutating.length - 1 && own.every((x) => x.tenantId === T.id), "the tenant's admin reads its own entries");
      // Who did what to A, as A sees it: the refused attempts of the other tenant are B's, not A's.
      const aLog = (await api('GET', '/api/v1/audit?limit=1000', undefined, A.key)).body.items as {
        action: string;
        outcome: string;
        tenantId: string;
        siteId: string | null;
      }[];
      assert.ok(aLog.every((e) => e.tenantId === A.id));
      assert.ok(
        aLog.some((e) => e.action === 'POST /api/v1/enroll' && e.siteId === A.site.siteId),
        'the enrollment of its site',
      );
      assert.ok(aLog.some((e) => e.action === 'POST /api/v1/keys' && e.outcome === 'ok'));
      const everything = JSON.stringify((await api('GET', '/api/v1/audit?tenant=*&limit=1000')).body);
      for (const secret of [A.key, B.key, A.token, B.token, A.site.mqtt.password, B.site.mqtt.password])
        assert.ok(!everything.includes(secret), 'a secret in the audit log');
      assert.ok(!/ew[kjs]_[A-Za-z0-9_-]{20}/.test(everything), 'no key, token or site secret of any form');
    });

    it('deleting a tenant: dry run, confirmation, then its keys and sites stop at once and its data is gone; the other tenant is untouched', async () => {
      const live = await connect(A.site);
      mqttClients.push(live);
      const dry = await api('DELETE', `/api/v1/tenants/${A.id}?dryRun=true`);
      assert.equal(dry.status, 200, JSON.stringify(dry.body));
      assert.equal(dry.body.dryRun, true);
      assert.ok(dry.body.removed.sites >= 1 && dry.body.removed.appVersions >= 1);
      assert.equal((await api('GET', '/api/v1/sites', undefined, A.key)).status, 200, 'a dry run removes nothing');
      const unconfirmed = await api('DELETE', `/api/v1/tenants/${A.id}`);
      assert.equal(unconfirmed.body.code, 'CONFIRMATION_REQUIRED');
      assert.equal(
        (await api('DELETE', `/api/v1/tenants/${A.id}?confirm=plant`)).body.code,
        'CONFIRMATION_REQUIRED',
        "another tenant's name does not confirm",
      );
      // An upload A left unfinished goes too (other tenants' stay).
      const partials = () => readdirSync(join(cloud.dataDir, 'artifacts')).filter((f) => f.endsWith('.partial'));
      const others = partials();
      const half = await fetch(`${cloud.url}/api/v1/artifacts/${'e'.repeat(64)}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${A.key}`, 'content-type': 'application/octet-stream', 'content-range': 'bytes 0-9/100' },
        body: new Uint8Array(10),
      });
      assert.equal(half.status, 200);
      assert.equal(partials().length, others.length + 1);
      const cut = new Promise<void>((r) => live.once('close', () => r()));
      const del = await api('DELETE', `/api/v1/tenants/${A.id}?confirm=${A.name}`);
      assert.equal(del.status, 200, JSON.stringify(del.body));
      assert.equal(del.body.artifactFilesRemoved, 2, "A's own file and its unfinished upload go; the file B also holds stays");
      assert.deepEqual(partials(), others);
      await cut;
      assert.equal((await api('GET', '/api/v1/sites', undefined, A.key)).status, 401);
      await assert.rejects(connect(A.site), /Not authorized|Bad username or password/i);
      assert.equal((await siteGet(A.site, MODEL_SHA)).status, 401);
      assert.equal((await api('GET', `/api/v1/tenants/${A.id}`)).body.code, 'TENANT_NOT_FOUND');
      assert.equal(await cloud.handle.store.getSiteById(A.site.siteId), undefined);
      // B: everything still there, its copy of the shared file included.
      assert.equal((await api('GET', `/api/v1/deployments/${B.deployment}`, undefined, B.key)).status, 200);
      const got = await siteGet(B.site, MODEL_SHA);
      assert.equal(got.status, 200);
      assert.deepEqual(Buffer.from(await got.arrayBuffer()), MODEL);
      assert.ok(
        (await api('GET', '/api/v1/audit?tenant=*&limit=1000')).body.items.some(
          (e: { action: string; target: string }) => e.action === 'DELETE /api/v1/tenants/:id' && e.target === `/api/v1/tenants/${A.id}`,
        ),
      );
    });

    it('the audit log refuses UPDATE and DELETE even to someone with SQL access to the database', async () => {
      if (engine === 'sqlite') {
        const raw = new Database(join(cloud.dataDir, 'cloud.db'));
        try {
          assert.ok((raw.prepare('SELECT count(*) AS n FROM audit').get() as { n: number }).n > 0);
          assert.throws(() => raw.prepare('UPDATE audit SET status = 200').run(), /append-only/);
          assert.throws(() => raw.prepare('DELETE FROM audit').run(), /append-only/);
        } finally {
          raw.close();
        }
      } else {
        const c = new pg.Client({ connectionString: PG_URL, options: `-c search_path=${pgSchema}` });
        await c.connect();
        try {
          await assert.rejects(c.query('UPDATE audit SET status = 200'), /append-only/);
          await assert.rejects(c.query('DELETE FROM audit'), /append-only/);
        } finally {
          await c.end();
        }
      }
    });
  });
}
