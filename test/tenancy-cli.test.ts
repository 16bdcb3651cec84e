import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startTestCloud, tempDir, removeDirs, type TestCloud } from './support/harness.ts';
import { spawnCli } from './support/proc.ts';
import { parseExpiry } from '../src/cli/tenancy.ts';

describe('tenancy CLI: tenants, keys, audit', () => {
  let cloud: TestCloud;
  const dir = tempDir('tenancy-cli');
  const run = async (args: string[], apiKey: string) => {
    const p = spawnCli(args, { EDGEWEAVE_CONFIG: join(dir, 'config.json'), EW_CLOUD: cloud.url, EW_API_KEY: apiKey });
    let out = '';
    p.child.stdout!.on('data', (d) => {
      out += d;
    });
    const code = await p.exited;
    return { code, out, err: p.stderr() };
  };
  before(async () => {
    cloud = await startTestCloud();
  });
  after(async () => {
    await cloud?.stop();
    removeDirs(dir);
  });

  it('parses --expires as a duration or an ISO time', () => {
    assert.equal(parseExpiry('90d', 1000), 1000 + 90 * 86_400_000);
    assert.equal(parseExpiry('12h', 0), 12 * 3_600_000);
    assert.equal(parseExpiry('2027-01-31T00:00:00Z'), Date.parse('2027-01-31T00:00:00Z'));
    assert.throws(() => parseExpiry('soon'), /neither a duration/);
  });

  it('creates a tenant, a limited expiring key in it, exports the audit log as JSON lines, deletes the tenant with a dry run and a confirmation', async () => {
    const created = await run(['tenants', 'create', 'acme', '--max-sites', '3', '-o', 'json'], cloud.adminKey);
    assert.equal(created.code, 0, created.err);
    const t = JSON.parse(created.out);
    assert.deepEqual(t.quotas, { sites: 3 });
    const again = await run(['tenants', 'create', 'acme', '--dry-run'], cloud.adminKey);
    assert.notEqual(again.code, 0);
    assert.match(again.err, /TENANT_EXISTS/);
    const listed = await run(['tenants', 'list'], cloud.adminKey);
    assert.match(listed.out, /acme\s+active/);

    const key = await run(
      ['keys', 'create', '--name', 'ci', '--role', 'developer', '--apps', 'vision', '--labels', 'line=3', '--expires', '30d', '-o', 'json'],
      t.adminKey.key,
    );
    assert.equal(key.code, 0, key.err);
    const k = JSON.parse(key.out);
    assert.equal(k.role, 'developer');
    assert.deepEqual(k.scope, { apps: ['vision'], labels: { line: '3' } });
    assert.ok(k.expiresAt > Date.now() + 29 * 86_400_000);
    const denied = await run(['tenants', 'list'], t.adminKey.key);
    assert.notEqual(denied.code, 0);
    assert.match(denied.err, /PERMISSION_DENIED|tenants:read/);

    const audit = await run(['audit', '--json'], t.adminKey.key);
    assert.equal(audit.code, 0, audit.err);
    const lines = audit.out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { action: string; outcome: string; tenantId: string });
    assert.ok(lines.some((e) => e.action === 'POST /api/v1/keys' && e.outcome === 'ok'));
    assert.ok(lines.every((e) => e.tenantId === t.id));
    assert.ok(!audit.out.includes(k.key) && !audit.out.includes(t.adminKey.key), 'no secret in the export');

    const dry = await run(['tenants', 'delete', 'acme', '--dry-run', '-o', 'json'], cloud.adminKey);
    assert.equal(dry.code, 0, dry.err);
    assert.equal(JSON.parse(dry.out).removed.keys, 2);
    const unconfirmed = await run(['tenants', 'delete', 'acme'], cloud.adminKey);
    assert.notEqual(unconfirmed.code, 0);
    assert.match(unconfirmed.err, /CONFIRMATION_REQUIRED|confirm=acme/);
    const del = await run(['tenants', 'delete', 'acme', '--confirm', 'acme'], cloud.adminKey);
    assert.equal(del.code, 0, del.err);
    assert.match(del.out, /tenant acme deleted/);
    const gone = await run(['keys', 'list'], t.adminKey.key);
    assert.notEqual(gone.code, 0, 'its keys stopped at once');
  });
});
