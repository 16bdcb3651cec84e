import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startTestCloud, startTestEdge, waitFor, type TestCloud, type TestEdge } from './support/harness.ts';

/**
 * The web console end to end, in a real browser (Debian's chromium driven by playwright-core)
 * against a real cloud with three real agents: sign in, three sites online, a site's chart
 * updating, a join token created, a rollout paused and resumed, an alert arriving live, a
 * revoked key sent back to sign-in, and the live stream reconnecting after the cloud restarts.
 * Screenshots go to artifacts/console/ (gitignored) for a person to look at.
 */
const CHROMIUM = process.env.EW_CHROMIUM ?? '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const SHOTS = fileURLToPath(new URL('../artifacts/console/', import.meta.url));

describe('web console in a real browser', {
  skip: existsSync(CHROMIUM) ? false : `no chromium at ${CHROMIUM} (.ci/run installs it with apt)`,
}, () => {
  let cloud: TestCloud;
  const edges: TestEdge[] = [];
  let browser: Browser;
  let page: Page;
  let canaryDeployment: string;
  const requested: string[] = [];
  const consoleProblems: string[] = [];
  const shot = (name: string) => page.screenshot({ path: `${SHOTS}${name}.png`, fullPage: true });
  const app = (version: string) => ({
    apiVersion: 'edgeweave/v1',
    kind: 'App',
    metadata: { name: 'guard', version },
    spec: {
      streams: [{ name: 's', topic: `plant/+/${version.replace(/\./g, '_')}` }],
      rules: [{ name: 'r', sql: 'SELECT * FROM s', sinks: [{ log: true }] }],
    },
  });

  before(async () => {
    // The console under test is the one in this checkout, built now.
    const b = spawnSync(process.execPath, [fileURLToPath(new URL('../scripts/build-console.mjs', import.meta.url))], { encoding: 'utf8' });
    assert.equal(b.status, 0, `console build failed: ${b.stderr}${b.stdout}`);
    mkdirSync(SHOTS, { recursive: true });
    cloud = await startTestCloud({ eventStreams: { pollMs: 200, keyCheckMs: 300 } });
    for (const [name, region, city] of [
      ['hz-west', 'hangzhou', 'hangzhou'],
      ['hz-east', 'hangzhou', 'hangzhou'],
      ['berlin-1', 'berlin', 'berlin'],
    ] as const) {
      // Results posted to the local uplink leave only under a grant: the operator's --uplink-allow.
      edges.push(await startTestEdge(cloud, { name, region, labels: { pool: 'p', city }, uplinkAllow: ['alerts', 'counts'] }));
    }
    for (const v of ['1.0.0', '2.0.0']) assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest: app(v) })).status, 201);
    const d1 = await cloud.api('POST', '/api/v1/deployments', { app: 'guard', version: '1.0.0', selector: { pool: 'p' } });
    assert.equal(d1.status, 201);
    await waitFor(
      '1.0.0 everywhere',
      async () => (await cloud.api('GET', `/api/v1/rollouts/${d1.body.id}`)).body.phase === 'succeeded',
      30_000,
      100,
    );
    // A canary that bakes for an hour: it stays running while the operator pauses and resumes it.
    const d2 = await cloud.api('POST', '/api/v1/deployments', {
      app: 'guard',
      version: '2.0.0',
      selector: { pool: 'p' },
      strategy: { type: 'canary', canary: 1, bakeTimeS: 3600, gates: { maxErrorRate: 0.05, maxP95Ms: 50 } },
    });
    assert.equal(d2.status, 201);
    canaryDeployment = d2.body.id;
    await waitFor(
      'canary baking',
      async () => (await cloud.api('GET', `/api/v1/rollouts/${canaryDeployment}`)).body.phase === 'baking',
      30_000,
      100,
    );
    // A model app with an endpoint on berlin-1, so the router has something to route.
    const model = readFileSync(fileURLToPath(new URL('../models/vibration-ae.onnx', import.meta.url)));
    const sha = createHash('sha256').update(model).digest('hex');
    const up = await fetch(`${cloud.url}/api/v1/artifacts/${sha}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${cloud.adminKey}`, 'content-type': 'application/octet-stream' },
      body: new Uint8Array(model),
    });
    assert.equal(up.status, 201);
    const vib = {
      apiVersion: 'edgeweave/v1',
      kind: 'App',
      metadata: { name: 'vib', version: '1.0.0' },
      spec: { models: [{ name: 'vib-ae', format: 'onnx', path: 'm.onnx', sha256: sha }], endpoints: [{ name: 'score', model: 'vib-ae' }] },
    };
    assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest: vib })).status, 201);
    assert.equal(
      (await cloud.api('POST', '/api/v1/deployments', { app: 'vib', version: '1.0.0', selector: { city: 'berlin' } })).status,
      201,
    );
    await waitFor(
      'the model ready on berlin-1',
      async () =>
        (await cloud.api('GET', `/api/v1/sites/${edges[2]!.handle.siteId}`)).body.status?.models?.some(
          (m: { name: string; state: string }) => m.name === 'vib-ae' && m.state === 'ready',
        ),
      60_000,
      200,
    );
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.setDefaultTimeout(30_000);
    page.on('request', (r) => requested.push(r.url()));
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') consoleProblems.push(m.text());
    });
    page.on('pageerror', (e) => consoleProblems.push(`uncaught: ${e.message}`));
  });

  after(async () => {
    await browser?.close().catch(() => {});
    for (const e of edges) await e.stop().catch(() => {});
    await cloud?.stop();
  });

  it('refuses a wrong key with its code, then signs in and shows three sites online', async () => {
    await page.goto(cloud.url);
    await page.getByLabel('API key').fill(`ewk_${'x'.repeat(43)}`);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'UNAUTHENTICATED' }).waitFor();
    // By keyboard: the key field has focus, Enter signs in.
    await page.getByLabel('API key').fill(cloud.adminKey);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Fleet', level: 1 }).waitFor();
    await page.locator('body').focus();
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Skip to content', 'the first Tab reaches the skip link');
    await page.locator('[data-testid=site-card][data-state=online]').nth(2).waitFor();
    assert.equal(await page.locator('[data-testid=site-card][data-state=online]').count(), 3);
    assert.equal(await page.getByTestId('sites-online').textContent(), '3');
    // Grouped by region: hangzhou holds two, berlin one.
    assert.match((await page.getByRole('heading', { name: /hangzhou/ }).textContent()) ?? '', /2\/2 online/);
    await page.getByTestId('stream-state').filter({ hasText: 'Live' }).waitFor();
    // The key is kept for this tab only: in sessionStorage, never in localStorage or a cookie.
    assert.equal(await page.evaluate(() => sessionStorage.getItem('edgeweave.apiKey')), cloud.adminKey);
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    assert.equal((await page.context().cookies()).length, 0);
    await page.getByLabel('Filter by label').fill('city=berlin');
    assert.equal(await page.locator('[data-testid=site-card]').count(), 1);
    await shot('fleet-filtered');
    await page.getByLabel('Filter by label').fill('');
    await shot('fleet');
    // Usable at tablet width: nothing wider than the screen (no sideways scrolling of the page).
    await page.setViewportSize({ width: 820, height: 1100 });
    // Charts follow their container on the next resize callback: wait for it, not for a time.
    await page.waitForFunction(() => document.documentElement.scrollWidth <= 820);
    await shot('fleet-tablet');
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.waitForFunction(() => document.documentElement.scrollWidth <= 1280);
  });

  it('opens a site and its chart updates live', async () => {
    await page.getByRole('link', { name: 'berlin-1' }).click();
    await page.getByRole('heading', { name: /berlin-1/, level: 1 }).waitFor();
    assert.equal(new URL(page.url()).pathname, `/sites/${edges[2]!.handle.siteId}`);
    const load = page.locator('figure', { hasText: 'Load (1 min average)' });
    const points = async () => Number(await load.getAttribute('data-points'));
    await waitFor('a first point', async () => (await points()) >= 1);
    const first = await points();
    // Heartbeats arrive every second over the event stream; the chart grows without a reload.
    await waitFor('the load chart to grow by two points', async () => (await points()) >= first + 2, 20_000, 100);
    await page.getByRole('heading', { name: 'Rules' }).waitFor();
    assert.ok((await page.getByRole('rowheader', { name: 'guard/r' }).count()) >= 1);
    await shot('site');
    await page.setViewportSize({ width: 820, height: 1100 });
    await page.waitForFunction(() => document.documentElement.scrollWidth <= 820); // charts follow their container
    await shot('site-tablet');
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  it('creates a join token and shows its one-line install command', async () => {
    await page.getByRole('link', { name: 'Join tokens' }).click();
    await page.getByLabel('Labels', { exact: true }).fill('city=paris industry=retail');
    await page.getByLabel('Region', { exact: true }).fill('paris');
    await page.getByRole('button', { name: 'Create join token' }).click();
    const cmd = await page.getByTestId('install-command').textContent();
    // The token travels in the environment (not in the process list): EW_JOIN_TOKEN=… npx edgeweave edge …
    assert.match(
      cmd ?? '',
      new RegExp(`^EW_JOIN_TOKEN=ewj_\\S+ npx edgeweave edge --cloud ${cloud.url.replace(/[.]/g, '\\.')} --data-dir /var/lib/edgeweave$`),
    );
    // "Copy command" puts exactly that line on the clipboard.
    await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(cloud.url).origin });
    await page.getByRole('button', { name: 'Copy command' }).click();
    await page.getByRole('button', { name: 'Copied' }).waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), cmd);
    const tokens = (await cloud.api('GET', '/api/v1/tokens')).body.items as { region: string; labels: Record<string, string> }[];
    assert.ok(
      tokens.some((t) => t.region === 'paris' && t.labels.city === 'paris' && t.labels.industry === 'retail'),
      'the token exists in the API with its labels',
    );
    // A bad label is refused where it was typed, with a code.
    await page.getByLabel('Labels', { exact: true }).fill('=nokey');
    await page.getByRole('button', { name: 'Create join token' }).click();
    await page.getByRole('alert').filter({ hasText: 'VALIDATION_FAILED' }).waitFor();
    // An error from the API itself is shown where it happened, with its code and field.
    await page.getByLabel('Labels', { exact: true }).fill('city=paris');
    await page.getByLabel('Valid for (hours)').fill('1000');
    await page.getByRole('button', { name: 'Create join token' }).click();
    await page.getByRole('alert').filter({ hasText: 'ttlSeconds' }).filter({ hasText: 'VALIDATION_FAILED' }).waitFor();
    await shot('tokens');
  });

  it("shows an app's versions, manifest and the diff between versions; endpoints honestly", async () => {
    await page.getByRole('link', { name: 'Apps' }).click();
    await page.getByRole('link', { name: 'guard' }).click();
    await page.getByRole('heading', { name: 'Diff between versions' }).waitFor();
    const diff = page.getByLabel('diff from 1.0.0 to 2.0.0');
    await diff.waitFor();
    assert.match((await diff.textContent()) ?? '', /- removed: *"topic": "plant\/\+\/1_0_0"\+ added: *"topic": "plant\/\+\/2_0_0"/);
    await page.getByRole('status').filter({ hasText: '2 lines added, 2 removed' }).waitFor();
    await shot('apps');
    // Requests through the cloud's router show up on the Endpoints page: how many, where they went.
    for (let i = 0; i < 5; i++) {
      const res = await fetch(`${cloud.url}/v2/models/score/infer`, {
        method: 'POST',
        headers: { authorization: `Bearer ${cloud.adminKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 3], data: [1.0, 3.0, 120] }] }),
      });
      assert.equal(res.status, 200, await res.text());
    }
    await page.getByRole('link', { name: 'Endpoints' }).click();
    const row = page.getByTestId('routed-endpoint').filter({ hasText: 'score' });
    await row.filter({ hasText: 'berlin-1 ×5' }).waitFor();
    assert.match((await row.textContent()) ?? '', /ready/);
    assert.match((await row.textContent()) ?? '', /\d+ ms/, 'latency figures');
    await page.getByRole('rowheader', { name: 'score' }).nth(1).waitFor(); // and in the per-site table
    await shot('endpoints');
  });

  it('pauses and resumes a rollout', async () => {
    await page.getByRole('link', { name: 'Rollouts' }).click();
    const r = page.locator('[data-testid=rollout]', { hasText: 'guard@2.0.0' });
    await r.and(page.locator('[data-phase=baking]')).waitFor();
    // Its gates, with what the canary reports now (this app has no model, so no figures yet).
    const gates = r.getByRole('table', { name: /Canary gates/ });
    assert.match((await gates.getByRole('row', { name: /maxErrorRate/ }).textContent()) ?? '', /5\.00 %.*no model requests yet/);
    assert.match((await gates.getByRole('row', { name: /maxP95Ms/ }).textContent()) ?? '', /50 ms.*no latency yet/);
    await r.getByRole('button', { name: 'Pause rollout guard@2.0.0' }).click();
    await r.and(page.locator('[data-phase=paused]')).waitFor();
    assert.equal((await cloud.api('GET', `/api/v1/rollouts/${canaryDeployment}`)).body.phase, 'paused');
    await shot('rollout-paused');
    await r.getByRole('button', { name: 'Resume rollout guard@2.0.0' }).click();
    await r.and(page.locator('[data-phase=baking]')).waitFor();
    assert.equal((await cloud.api('GET', `/api/v1/rollouts/${canaryDeployment}`)).body.phase, 'baking');
    // A change made elsewhere (the CLI) reaches the page through the event stream.
    assert.equal((await cloud.api('POST', `/api/v1/rollouts/${canaryDeployment}/pause`)).status, 200);
    await r.and(page.locator('[data-phase=paused]')).waitFor();
    await shot('rollouts');
  });

  it("does not offer what the key's permissions leave out", async () => {
    // Roles do not exist yet (issue #14): every real key is an admin. The browser's answer from
    // GET /api/v1/me is replaced here to stand for a read-only role; everything else is real.
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const p = await ctx.newPage();
    try {
      await p.route('**/api/v1/me', async (route) => {
        const res = await route.fetch();
        const me = (await res.json()) as Record<string, unknown>;
        await route.fulfill({
          response: res,
          json: { ...me, role: 'viewer', permissions: ['sites:read', 'apps:read', 'deployments:read', 'results:read'] },
        });
      });
      await p.goto(cloud.url);
      await p.getByLabel('API key').fill(cloud.adminKey);
      await p.getByRole('button', { name: 'Sign in' }).click();
      await p.getByRole('heading', { name: 'Fleet', level: 1 }).waitFor();
      assert.equal(await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Join tokens' }).count(), 0);
      await p.getByRole('link', { name: 'Rollouts' }).click();
      await p.locator('[data-testid=rollout]', { hasText: 'guard@2.0.0' }).waitFor();
      assert.equal(
        await p.getByRole('button', { name: /^(Pause|Resume|Abort|Undo) rollout/ }).count(),
        0,
        'no rollout actions for this role',
      );
      await p.goto(`${cloud.url}/tokens`);
      await p.getByRole('heading', { name: 'Not allowed' }).waitFor();
      await p.screenshot({ path: `${SHOTS}read-only-role.png`, fullPage: true });
    } finally {
      await ctx.close();
    }
  });

  it('shows an alert the moment a site sends it', async () => {
    await page.getByRole('link', { name: /Live results/ }).click();
    await page.getByRole('heading', { name: 'Alerts', exact: true }).waitFor();
    const marker = `press-${Date.now()}`;
    assert.equal((await edges[0]!.uplink('alerts', [{ machine: marker, temperature: 97.5 }])).status, 202);
    await page.getByTestId('alerts').getByText(marker).waitFor();
    assert.match((await page.getByTestId('alerts').textContent()) ?? '', /hz-west/);
    // Plain results appear in the results feed and not among the alerts.
    assert.equal((await edges[1]!.uplink('counts', [{ vehicles: 12 }])).status, 202);
    await page.getByTestId('results').getByText('"vehicles":12').waitFor();
    assert.equal(await page.getByTestId('alerts').getByText('vehicles').count(), 0);
    await shot('live');
  });

  it('says when the live stream is lost, and reconnects by itself', async () => {
    await page.getByRole('link', { name: 'Fleet' }).click();
    await cloud.stop(); // the cloud goes away: API, hub and all
    await page.getByTestId('stream-state').filter({ hasText: 'Reconnecting' }).waitFor();
    await shot('reconnecting');
    await cloud.restart();
    await page.getByTestId('stream-state').filter({ hasText: 'Live' }).waitFor({ timeout: 60_000 });
    await page.locator('[data-testid=site-card][data-state=online]').nth(2).waitFor({ timeout: 60_000 });
  });

  it('loaded nothing from another origin, broke no CSP rule, threw nothing', () => {
    const origin = new URL(cloud.url).origin;
    assert.ok(requested.length > 10);
    assert.deepEqual(
      requested.filter((u) => !u.startsWith(`${origin}/`) && !u.startsWith('data:')),
      [],
      'every request went to the cloud itself',
    );
    // The only errors expected are the refused requests the tests provoke (401, the cloud down).
    const unexpected = consoleProblems.filter(
      (t) => !/Failed to load resource|ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET/.test(t),
    );
    assert.deepEqual(unexpected, []);
    assert.equal(
      consoleProblems.some((t) => /Content Security Policy|Refused to/.test(t)),
      false,
    );
  });

  it('sends a revoked key back to sign-in with a message', async () => {
    const k = await cloud.api('POST', '/api/v1/keys', { name: 'temp' });
    assert.equal(k.status, 201);
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('API key').fill(k.body.key);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Fleet', level: 1 }).waitFor();
    assert.equal((await cloud.api('DELETE', `/api/v1/keys/${k.body.id}`)).status, 204);
    await page
      .getByRole('alert')
      .filter({ hasText: /revoked/ })
      .waitFor();
    await page.getByLabel('API key').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('edgeweave.apiKey')), null, 'the revoked key is forgotten');
    await shot('signed-out');
  });
});
