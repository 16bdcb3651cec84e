import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { removeDirs, startTestCloud, tempDir, waitFor, type TestCloud } from './support/harness.ts';
import { addSite } from './support/store.ts';
import { connectEvents, type StreamState } from '../console/src/lib/events-client.ts';
import type { SseEvent } from '../console/src/lib/sse.ts';
import { EventHub, sseFrame, takeChanged, type EventSink } from '../src/cloud/api/events.ts';
import { CONSOLE_CSP } from '../src/cloud/api/console.ts';
import { PERMISSIONS } from '../src/contracts/permissions.ts';
import { CONSOLE_PAGES } from '../src/contracts/console-routes.ts';
import { openSqliteStore } from '../src/cloud/store/open.ts';
import { ManualClock } from '../src/lib/clock.ts';
import { silentLogger } from '../src/lib/logger.ts';
import { hashSecret, newSecret } from '../src/lib/secrets.ts';
import type { Store } from '../src/cloud/store/store.ts';

/** A raw GET (no URL normalisation, unlike fetch), to send traversal attempts as written. */
function rawGet(
  base: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, method: 'GET', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Enrolls a site over the API (no agent needed) and returns its id. */
async function enroll(cloud: TestCloud, labels: Record<string, string> = {}): Promise<string> {
  const token = await cloud.token({ labels });
  const r = await cloud.api('POST', '/api/v1/enroll', { token }, '');
  assert.equal(r.status, 201);
  return (r.body as { siteId: string }).siteId;
}

let seq = 0;
const rec = (siteId: string, stream: string, data: unknown) => ({
  siteId,
  msgId: `m-${++seq}`,
  stream,
  at: Date.now(),
  receivedAt: Date.now(),
  data,
});

/** The console's own stream client, run in Node against the real cloud. */
function listen(cloud: TestCloud, key = cloud.adminKey) {
  const events: SseEvent[] = [];
  const states: StreamState[] = [];
  const c = connectEvents({
    key,
    baseUrl: cloud.url,
    onEvent: (e) => events.push(e),
    onState: (s) => states.push(s),
    baseDelayMs: 50,
    maxDelayMs: 200,
  });
  const results = () =>
    events.filter((e) => e.event === 'results').flatMap((e) => (JSON.parse(e.data) as { items: { id: string; data: unknown }[] }).items);
  return { events, states, results, close: () => c.close() };
}

describe('console API: /api/v1/me and the static console', () => {
  let cloud: TestCloud;
  let dist: string;
  before(async () => {
    dist = tempDir('console-dist');
    mkdirSync(join(dist, 'assets'));
    writeFileSync(
      join(dist, 'index.html'),
      '<!doctype html><title>console</title><script type="module" src="/assets/app-abc123.js"></script>',
    );
    writeFileSync(join(dist, 'assets', 'app-abc123.js'), `console.log(${JSON.stringify('x'.repeat(4000))});`);
    writeFileSync(join(dist, 'assets', 'style-def456.css'), 'body{color:red}');
    symlinkSync('/etc/passwd', join(dist, 'assets', 'passwd.js'));
    cloud = await startTestCloud({ consoleDir: dist });
  });
  after(async () => {
    await cloud?.stop();
    removeDirs(dist, ...(cloud ? [cloud.dataDir] : []));
  });

  it('GET /api/v1/me names the key and its permissions; no key, no answer', async () => {
    const me = await cloud.api('GET', '/api/v1/me');
    assert.equal(me.status, 200);
    assert.equal(me.body.keyName, 'admin');
    assert.equal(me.body.role, 'platform-admin', "the first key of a cloud is its operator's");
    assert.match(me.body.keyId, /^key/);
    assert.deepEqual(me.body.permissions, [...PERMISSIONS]);
    const anon = await cloud.handle.http.inject({ method: 'GET', url: '/api/v1/me' });
    assert.equal(anon.statusCode, 401);
    assert.equal(anon.json<{ code: string }>().code, 'UNAUTHENTICATED');
  });

  it('serves index.html at / and for client-side routes, with CSP and no-cache', async () => {
    for (const path of ['/', '/sites/site-abc', '/rollouts/dep-1?x=1', '/index.html']) {
      const r = await rawGet(cloud.url, path);
      assert.equal(r.status, 200, path);
      assert.equal(r.headers['content-type'], 'text/html; charset=utf-8', path);
      assert.equal(r.headers['content-security-policy'], CONSOLE_CSP);
      assert.equal(r.headers['cache-control'], 'no-cache');
      assert.equal(r.headers['x-content-type-options'], 'nosniff');
      assert.equal(r.headers['x-frame-options'], 'DENY');
      assert.match(r.body.toString(), /<title>console<\/title>/);
    }
    assert.match(CONSOLE_CSP, /script-src 'self'/);
    assert.doesNotMatch(CONSOLE_CSP, /unsafe-inline|unsafe-eval|https?:/, 'nothing from elsewhere, nothing inline');
  });

  it('serves hashed assets with their type, a year of caching, gzip and 304s', async () => {
    const js = await rawGet(cloud.url, '/assets/app-abc123.js');
    assert.equal(js.status, 200);
    assert.equal(js.headers['content-type'], 'text/javascript; charset=utf-8');
    assert.equal(js.headers['cache-control'], 'public, max-age=31536000, immutable');
    const etag = String(js.headers.etag);
    const again = await rawGet(cloud.url, '/assets/app-abc123.js', { 'if-none-match': etag });
    assert.equal(again.status, 304);
    assert.equal(again.body.length, 0);
    const gz = await rawGet(cloud.url, '/assets/app-abc123.js', { 'accept-encoding': 'gzip, br' });
    assert.equal(gz.headers['content-encoding'], 'gzip');
    assert.ok(gz.body.length < js.body.length);
    assert.deepEqual(gunzipSync(gz.body), js.body);
    const css = await rawGet(cloud.url, '/assets/style-def456.css');
    assert.equal(css.headers['content-type'], 'text/css; charset=utf-8');
  });

  it('never serves a file outside the build: traversal, encoded traversal, symlinks', async () => {
    const attempts = [
      '/../package.json',
      '/%2e%2e/package.json',
      '/assets/../../package.json',
      '/assets/..%2f..%2fpackage.json',
      '/..%5c..%5cpackage.json',
      '//etc/passwd',
      '/assets/passwd.js',
      '/%2fetc%2fpasswd',
      '/assets/app-abc123.js%00.html',
      '/.env',
    ];
    for (const path of attempts) {
      const r = await rawGet(cloud.url, path);
      const body = r.body.toString();
      assert.doesNotMatch(body, /"name": "edgeweave"|root:x:0:0/, `${path} leaked a file`);
      // Refused (the API's own 400/401/404 for a path that is not the console's) or the app shell.
      assert.ok([400, 401, 404].includes(r.status) || (r.status === 200 && /<title>console<\/title>/.test(body)), `${path}: ${r.status}`);
    }
    // A missing file (it has an extension) is a 404, not the app shell.
    const missing = await rawGet(cloud.url, '/assets/missing-000.js');
    assert.equal(missing.status, 404);
  });

  it('serves the shell for every console page, and only for those', async () => {
    for (const page of CONSOLE_PAGES) {
      for (const path of [`/${page}`, `/${page}/some-id`]) {
        const r = await rawGet(cloud.url, path);
        assert.equal(r.status, 200, path);
        assert.match(r.body.toString(), /<title>console<\/title>/, path);
      }
    }
    // An over-long id in an API path keeps the API's own answer, not the console's.
    const long = await cloud.api('GET', `/api/v1/sites/${'a'.repeat(300)}`);
    assert.equal(long.body.code, 'URI_TOO_LONG');
  });

  it("keeps the API's JSON 404 for unknown API paths", async () => {
    for (const path of ['/api/v1/nothing-here', '/api/nope', '/not-a-console-page', '/sitesx', '/assetsx/a.js']) {
      const r = await cloud.api('GET', path);
      assert.equal(r.status, 404, path);
      assert.equal(r.body.code, 'NOT_FOUND', path);
    }
    // /v2/models/{name} is the cloud's inference router (docs/router.md): its own 404, in OIP's shape.
    const model = await cloud.api('GET', '/v2/models/x');
    assert.equal(model.status, 404);
    assert.equal(model.body.code, 'MODEL_NOT_FOUND');
    assert.equal(typeof model.body.error, 'string');
  });

  it("loads under the default rate limits: the console's files do not spend the anonymous budget", async () => {
    const c2 = await startTestCloud({ consoleDir: dist, rateLimits: {} });
    try {
      // Far more than the anonymous burst (20): page loads and reloads by one operator, or several behind one NAT.
      for (let i = 0; i < 40; i++) {
        for (const path of ['/', '/assets/app-abc123.js', '/sites/x'])
          assert.equal((await rawGet(c2.url, path)).status, 200, `${path} #${i}`);
      }
      // The anonymous budget (enrollment, requests without credentials) is untouched by them.
      const enroll = await fetch(`${c2.url}/api/v1/enroll`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token: 'ewj_not-a-real-token' }),
      });
      assert.equal(enroll.status, 401);
      assert.equal(((await enroll.json()) as { code: string }).code, 'TOKEN_INVALID');
    } finally {
      await c2.stop();
      removeDirs(c2.dataDir);
    }
  });

  it('explains itself when the console is not built, and the API still works', async () => {
    const empty = tempDir('console-empty');
    const c2 = await startTestCloud({ consoleDir: empty });
    try {
      const r = await rawGet(c2.url, '/');
      assert.equal(r.status, 503);
      assert.match(r.body.toString(), /npm run build:console/);
      assert.equal((await c2.api('GET', '/api/v1/me')).status, 200);
    } finally {
      await c2.stop();
      removeDirs(empty, c2.dataDir);
    }
  });
});

describe('console API: the live event stream', () => {
  let cloud: TestCloud;
  let siteId: string;
  before(async () => {
    cloud = await startTestCloud({ consoleDir: false, eventStreams: { pollMs: 50, keyCheckMs: 100, perTenant: 3, maxCatchUp: 5 } });
    siteId = await enroll(cloud, { pool: 'a' });
  });
  after(async () => {
    await cloud?.stop();
    if (cloud) removeDirs(cloud.dataDir);
  });

  it('needs the API key in the Authorization header', async () => {
    const r = await fetch(`${cloud.url}/api/v1/events`);
    assert.equal(r.status, 401);
    assert.equal(((await r.json()) as { code: string }).code, 'UNAUTHENTICATED');
    const l = listen(cloud, `ewk_${'y'.repeat(43)}`);
    await waitFor('refused', () => l.states.find((s) => s.state === 'unauthenticated'));
    l.close();
  });

  it('streams results as they are stored, and site changes', async () => {
    const l = listen(cloud);
    try {
      await waitFor('live', () => l.states.some((s) => s.state === 'live'));
      await cloud.handle.store.insertUplink([rec(siteId, 'alerts', { temp: 99 }), rec(siteId, 'counts', { n: 1 })]);
      await waitFor('both results', () => l.results().length === 2);
      assert.deepEqual(
        l.results().map((r) => r.data),
        [{ temp: 99 }, { n: 1 }],
      );
      assert.equal((await cloud.api('PUT', `/api/v1/sites/${siteId}/labels`, { labels: { pool: 'b' } })).status, 200);
      const ev = await waitFor('a sites event', () => l.events.find((e) => e.event === 'sites' && e.data.includes('"pool":"b"')));
      const items = (JSON.parse(ev.data) as { items: { id: string; labels: Record<string, string> }[] }).items;
      assert.deepEqual(items.find((s) => s.id === siteId)?.labels, { pool: 'b' });
    } finally {
      l.close();
    }
  });

  it('resumes after a lost connection from Last-Event-ID without missing a result', async () => {
    // Another open stream keeps the tenant's feed moving while the first one is away.
    const keeper = listen(cloud);
    const first = listen(cloud);
    await waitFor('keeper live', () => keeper.states.some((s) => s.state === 'live'));
    await waitFor('live', () => first.states.some((s) => s.state === 'live'));
    await cloud.handle.store.insertUplink([rec(siteId, 'counts', { k: 'before' })]);
    await waitFor('first result', () => first.results().some((r) => (r.data as { k?: string }).k === 'before'));
    const lastId = [...first.events].reverse().find((e) => e.id !== undefined)!.id!;
    first.close();
    // While no one listens, three more arrive; a stream that names its last id gets them first.
    await cloud.handle.store.insertUplink([
      rec(siteId, 'counts', { k: 'gap1' }),
      rec(siteId, 'counts', { k: 'gap2' }),
      rec(siteId, 'counts', { k: 'gap3' }),
    ]);
    await waitFor('the feed moved past them', () => keeper.results().some((r) => (r.data as { k?: string }).k === 'gap3'));
    keeper.close();
    const res = await fetch(`${cloud.url}/api/v1/events`, {
      headers: { authorization: `Bearer ${cloud.adminKey}`, 'last-event-id': lastId },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/event-stream; charset=utf-8');
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = '';
    while (!text.includes('event: ready')) text += (await reader.read()).value ?? '';
    await reader.cancel();
    const caught = text
      .split('\n')
      .filter((l) => l.startsWith('data: {"items"'))
      .flatMap((l) => (JSON.parse(l.slice(6)) as { items: { data: { k: string } }[] }).items.map((i) => i.data.k));
    assert.deepEqual(caught, ['gap1', 'gap2', 'gap3']);
    assert.ok(text.indexOf('event: results') < text.indexOf('event: ready'), 'the catch-up comes before ready');
  });

  it('says "gap" when a reconnecting stream is further behind than the catch-up bound', async () => {
    const keeper = listen(cloud);
    await waitFor('keeper live', () => keeper.states.some((s) => s.state === 'live'));
    const latest = await cloud.handle.store.latestUplinkSeq();
    await cloud.handle.store.insertUplink(Array.from({ length: 8 }, (_, i) => rec(siteId, 'counts', { i })));
    await waitFor('the feed moved past them', () => keeper.results().length === 8);
    const res = await fetch(`${cloud.url}/api/v1/events`, {
      headers: { authorization: `Bearer ${cloud.adminKey}`, 'last-event-id': String(latest) },
    });
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = '';
    while (!text.includes('event: ready')) text += (await reader.read()).value ?? '';
    await reader.cancel();
    keeper.close();
    assert.match(text, /event: gap\ndata: \{"from":\d+,"to":\d+,"reason":"more than 5 results/);
    assert.doesNotMatch(text, /event: results/);
  });

  it('refuses a bad Last-Event-ID and more streams than the tenant may open', async () => {
    const bad = await fetch(`${cloud.url}/api/v1/events`, {
      headers: { authorization: `Bearer ${cloud.adminKey}`, 'last-event-id': 'abc' },
    });
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { code: string }).code, 'VALIDATION_FAILED');
    const open = [listen(cloud), listen(cloud), listen(cloud)];
    try {
      await waitFor('three live', () => open.every((l) => l.states.some((s) => s.state === 'live')));
      const r = await fetch(`${cloud.url}/api/v1/events`, { headers: { authorization: `Bearer ${cloud.adminKey}` } });
      assert.equal(r.status, 429);
      const body = (await r.json()) as { code: string; message: string };
      assert.equal(body.code, 'EVENT_STREAMS_LIMIT');
      assert.match(body.message, /3 live event streams/);
    } finally {
      for (const l of open) l.close();
    }
  });

  it('ends the stream of a key revoked while it listens', async () => {
    const k = await cloud.api('POST', '/api/v1/keys', { name: 'temp' });
    const l = listen(cloud, k.body.key);
    await waitFor('live', () => l.states.some((s) => s.state === 'live'));
    assert.equal((await cloud.api('DELETE', `/api/v1/keys/${k.body.id}`)).status, 204);
    const s = await waitFor('signed out', () => l.states.find((x) => x.state === 'unauthenticated'));
    assert.match((s as { error: { message: string } }).error.message, /revoked/);
  });

  it('reconnects by itself after the cloud restarts, and says so meanwhile', async () => {
    const l = listen(cloud);
    try {
      await waitFor('live', () => l.states.some((s) => s.state === 'live'));
      await cloud.stop(); // also proves open streams do not hold the server open
      await waitFor('reconnecting', () => l.states.find((s) => s.state === 'reconnecting'));
      const n = l.states.length;
      await cloud.restart();
      await waitFor('live again', () => l.states.slice(n).some((s) => s.state === 'live'), 30_000);
      await cloud.handle.store.insertUplink([rec(siteId, 'counts', { k: 'after-restart' })]);
      await waitFor('a result after the restart', () => l.results().some((r) => (r.data as { k?: string }).k === 'after-restart'));
    } finally {
      l.close();
    }
  });
});

describe('event hub: tenants, bounds and memory', () => {
  let dir: string;
  let store: Store;
  const clock = new ManualClock(1_000_000);
  before(async () => {
    dir = tempDir('events');
    store = openSqliteStore(join(dir, 'cloud.db'));
    await store.migrate();
    for (const t of ['ten-a', 'ten-b']) await store.createTenant({ id: t, name: t, createdAt: 1 });
    await store.createApiKey({
      id: 'key-a',
      tenantId: 'ten-a',
      name: 'a',
      hash: hashSecret(newSecret('ewk')),
      role: 'admin',
      createdAt: 1,
      revokedAt: null,
    });
    await store.createApiKey({
      id: 'key-b',
      tenantId: 'ten-b',
      name: 'b',
      hash: hashSecret(newSecret('ewk')),
      role: 'admin',
      createdAt: 1,
      revokedAt: null,
    });
    for (const [id, t] of [
      ['site-a', 'ten-a'],
      ['site-b', 'ten-b'],
    ] as const) {
      await addSite(store, t, id, 2);
    }
  });
  after(async () => {
    await store.close();
    removeDirs(dir);
  });

  /** A sink like a socket whose client never reads: everything written stays queued. */
  function stuckSink() {
    const s = { queued: 0, frames: [] as string[], ended: false, destroyed: false };
    const sink: EventSink = {
      write: (c) => {
        s.queued += Buffer.byteLength(c);
        s.frames.push(c);
      },
      buffered: () => s.queued,
      end: () => {
        s.ended = true;
      },
      destroy: () => {
        s.destroyed = true;
        s.queued = 0;
      },
    };
    return { s, sink };
  }

  it("one tenant never sees another tenant's results", async () => {
    const hub = new EventHub({ store, isOnline: () => true, clock, log: silentLogger() });
    const a = stuckSink();
    const b = stuckSink();
    await hub.subscribe('ten-a', 'key-a', a.sink).done;
    await hub.subscribe('ten-b', 'key-b', b.sink).done;
    await store.insertUplink([rec('site-a', 'alerts', { secret: 'of-a' }), rec('site-b', 'alerts', { secret: 'of-b' })]);
    await hub.pollNow('ten-a');
    await hub.pollNow('ten-b');
    const text = (x: typeof a) => x.s.frames.join('');
    assert.match(text(a), /of-a/);
    assert.doesNotMatch(text(a), /of-b|site-b/);
    assert.match(text(b), /of-b/);
    assert.doesNotMatch(text(b), /of-a|site-a/);
    hub.closeAll();
    assert.equal(hub.size, 0);
  });

  it('cuts off a client that stops reading before its queue passes the bound', async () => {
    const maxBufferedBytes = 256 * 1024;
    const hub = new EventHub({
      store,
      isOnline: () => true,
      clock,
      log: silentLogger(),
      limits: { maxBufferedBytes, maxResultsPerPoll: 200 },
    });
    const slow = stuckSink();
    const fast = { frames: 0 };
    await hub.subscribe('ten-a', 'key-a', slow.sink).done;
    await hub.subscribe('ten-a', 'key-a', {
      write: () => {
        fast.frames++;
      },
      buffered: () => 0,
      end() {},
      destroy() {},
    }).done;
    const heapBefore = process.memoryUsage().heapUsed;
    // 40 polls of 200 results of ~1 KB each: about 8 MB offered to a client that reads nothing.
    for (let i = 0; i < 40; i++) {
      await store.insertUplink(Array.from({ length: 200 }, () => rec('site-a', 'counts', { blob: 'x'.repeat(1000) })));
      await hub.pollNow('ten-a');
    }
    assert.equal(slow.s.destroyed, true, 'the stuck client was disconnected');
    assert.ok(hub.maxBufferedSeen <= maxBufferedBytes, `queued at most the bound (saw ${hub.maxBufferedSeen})`);
    assert.equal(hub.size, 1, 'only the reading client is left');
    assert.equal(fast.frames >= 40, true, 'the reading client got every poll');
    const grown = process.memoryUsage().heapUsed - heapBefore;
    assert.ok(grown < 32 * 1024 * 1024, `heap grew ${grown} bytes`);
    hub.closeAll();
  });

  it('sends a gap instead of an unbounded backlog, and jumps to the newest result', async () => {
    const hub = new EventHub({ store, isOnline: () => true, clock, log: silentLogger(), limits: { maxResultsPerPoll: 10 } });
    const x = stuckSink();
    await hub.subscribe('ten-a', 'key-a', x.sink).done;
    await store.insertUplink(Array.from({ length: 25 }, (_, i) => rec('site-a', 'counts', { i })));
    await hub.pollNow('ten-a');
    const text = x.s.frames.join('');
    assert.match(text, /event: gap/);
    assert.doesNotMatch(text, /event: results/);
    await store.insertUplink([rec('site-a', 'counts', { after: true })]);
    await hub.pollNow('ten-a');
    assert.match(x.s.frames.at(-1)!, /event: results[\s\S]*"after":true/);
    hub.closeAll();
  });

  it('refuses streams beyond the replica-wide bound', async () => {
    const hub = new EventHub({ store, isOnline: () => true, clock, log: silentLogger(), limits: { total: 2 } });
    hub.subscribe('ten-a', 'key-a', stuckSink().sink);
    hub.subscribe('ten-b', 'key-b', stuckSink().sink);
    assert.throws(
      () => hub.subscribe('ten-a', 'key-a', stuckSink().sink),
      (e: Error & { code?: string }) => e.code === 'EVENT_STREAMS_LIMIT',
    );
    hub.closeAll();
  });

  it('pings idle streams on the clock', async () => {
    const hub = new EventHub({ store, isOnline: () => true, clock, log: silentLogger(), limits: { pingMs: 15_000, pollMs: 1000 } });
    const x = stuckSink();
    await hub.subscribe('ten-b', 'key-b', x.sink).done;
    clock.advance(16_000);
    await waitFor('a ping', () => x.s.frames.some((f) => f.startsWith(': ping')));
    hub.closeAll();
  });
});

describe('event frames and change detection (pure)', () => {
  it('writes one SSE frame per event, with the id when given', () => {
    assert.equal(
      sseFrame('results', { items: [{ a: 'line\nbreak' }] }, 42),
      'id: 42\nevent: results\ndata: {"items":[{"a":"line\\nbreak"}]}\n\n',
    );
    assert.equal(sseFrame('ready', { cursor: 1 }), 'event: ready\ndata: {"cursor":1}\n\n');
  });

  it('sends only what changed, at most max at a time, the rest later', () => {
    const sent = new Map<string, string>();
    const items = [
      { id: 'a', v: 1 },
      { id: 'b', v: 1 },
      { id: 'c', v: 1 },
    ];
    assert.deepEqual(
      takeChanged(sent, items, (x) => x.id, 2).map((x) => x.id),
      ['a', 'b'],
    );
    assert.deepEqual(
      takeChanged(sent, items, (x) => x.id, 2).map((x) => x.id),
      ['c'],
    );
    assert.deepEqual(
      takeChanged(sent, items, (x) => x.id, 2),
      [],
    );
    assert.deepEqual(
      takeChanged(
        sent,
        [
          { id: 'a', v: 2 },
          { id: 'c', v: 1 },
        ],
        (x) => x.id,
        2,
      ).map((x) => x.id),
      ['a'],
    );
    assert.deepEqual([...sent.keys()].sort(), ['a', 'c'], 'b is forgotten once gone');
  });
});
