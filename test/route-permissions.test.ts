import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestCloud, removeDirs, type TestCloud } from './support/harness.ts';
import { PERMISSIONS, ROLES, permissionsOf } from '../src/contracts/permissions.ts';
import { lacking, registeredRoutes, routeAccess, ROUTE_PERMISSIONS } from '../src/cloud/api/route-permissions.ts';
import { hashSecret, newId, newSecret } from '../src/lib/secrets.ts';

/** A value each path parameter accepts, so a request reaches the permission check and past it. */
const SAMPLE: Record<string, string> = { sha256: 'a'.repeat(64), action: 'pause', version: '1.0.0' };
const fill = (url: string) => url.replace(/:([A-Za-z0-9_]+)/g, (_m, n: string) => SAMPLE[n] ?? 'x-none');

describe('route → permission table: every route declares one, and every role gets what the table says', () => {
  let cloud: TestCloud;
  const keys = new Map<string, string>();
  before(async () => {
    cloud = await startTestCloud();
    await cloud.handle.http.ready();
    const me = (
      await cloud.handle.http.inject({ method: 'GET', url: '/api/v1/me', headers: { authorization: `Bearer ${cloud.adminKey}` } })
    ).json() as { tenantId: string };
    for (const role of ROLES) {
      const key = newSecret('ewk');
      await cloud.handle.store.createApiKey({
        id: newId('key'),
        tenantId: me.tenantId,
        name: `role-${role}`,
        hash: hashSecret(key),
        role,
        createdAt: Date.now(),
        revokedAt: null,
      });
      keys.set(role, key);
    }
  });
  after(async () => {
    await cloud.stop();
    removeDirs(cloud.dataDir);
  });

  it('every route of the OpenAPI document has an entry', async () => {
    const doc = (await cloud.handle.http.inject({ method: 'GET', url: '/openapi.json' })).json() as {
      paths: Record<string, Record<string, unknown>>;
    };
    const missing: string[] = [];
    let n = 0;
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const method of Object.keys(ops)) {
        n++;
        const url = path.replace(/\{([^}]+)\}/g, ':$1');
        if (routeAccess(method.toUpperCase(), url) === undefined) missing.push(`${method.toUpperCase()} ${url}`);
      }
    }
    assert.ok(n > 30, `the document lists the API (${n} operations)`);
    assert.deepEqual(missing, [], 'routes without a permission: add them to src/cloud/api/route-permissions.ts');
  });

  it('every registered route (hidden ones too) has an entry, and public means public in both places', () => {
    const routes = registeredRoutes(cloud.handle.http).filter((r) => !r.staticAsset && r.method !== 'HEAD');
    assert.ok(routes.length > 40, `${routes.length} routes seen`);
    const missing = routes.filter((r) => routeAccess(r.method, r.url) === undefined).map((r) => `${r.method} ${r.url}`);
    assert.deepEqual(missing, [], 'routes without a permission: add them to src/cloud/api/route-permissions.ts');
    const mismatched = routes.filter((r) => r.public !== (routeAccess(r.method, r.url) === 'public')).map((r) => `${r.method} ${r.url}`);
    assert.deepEqual(mismatched, [], 'config.public and the table disagree');
    // Only routes a site may call with its own credentials skip the role check.
    assert.deepEqual(
      routes.filter((r) => r.siteAccess).map((r) => `${r.method} ${r.url}`),
      ['GET /api/v1/artifacts/:sha256'],
    );
    // Names in the table are permissions the console knows.
    for (const access of Object.values(ROUTE_PERMISSIONS))
      assert.ok(access === 'public' || access === 'any-key' || (PERMISSIONS as readonly string[]).includes(access), access);
  });

  it('the decision: a role lacking the permission is told which one', () => {
    assert.equal(lacking('POST', '/api/v1/apps', ['apps:write']), undefined);
    assert.equal(lacking('POST', '/api/v1/apps', ['apps:read']), 'the permission apps:write');
    assert.equal(lacking('HEAD', '/api/v1/sites', ['sites:read']), undefined, 'HEAD answers as GET');
    assert.equal(lacking('GET', '/api/v1/me', []), undefined, 'any key may ask who it is');
    assert.match(lacking('GET', '/api/v1/not-in-the-table', [...PERMISSIONS]) ?? '', /has none in the route table/, 'no entry: refused');
  });

  it('for every role, each route allows or refuses (403 PERMISSION_DENIED naming the permission) as the table says', async () => {
    const routes = registeredRoutes(cloud.handle.http).filter((r) => !r.staticAsset && r.method !== 'HEAD' && !r.public);
    const wrong: string[] = [];
    for (const role of ROLES) {
      const held = permissionsOf(role);
      for (const r of routes) {
        const access = routeAccess(r.method, r.url)!;
        const allowed = access === 'any-key' || (held as readonly string[]).includes(access);
        const res = await cloud.handle.http.inject({
          method: r.method as 'GET',
          url: fill(r.url),
          // A Last-Event-ID that is not a number: the event stream (allowed) answers 400 instead of streaming.
          headers: { authorization: `Bearer ${keys.get(role)}`, 'last-event-id': 'not-a-number' },
        });
        // The OpenAI-compatible routes write codes in lower case (permission_denied).
        const denied = res.statusCode === 403 && /PERMISSION_DENIED/i.test(res.body);
        if (denied === allowed) wrong.push(`${role} ${r.method} ${r.url}: ${res.statusCode} ${res.body.slice(0, 160)} (table: ${access})`);
        else if (denied && !res.body.includes(access))
          wrong.push(`${role} ${r.method} ${r.url}: the refusal does not name ${access}: ${res.body}`);
      }
    }
    assert.deepEqual(wrong, []);
  });
});
