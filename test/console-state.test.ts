import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SseParser } from '../console/src/lib/sse.ts';
import { backoffDelay } from '../console/src/lib/backoff.ts';
import { ApiClient, type ApiError } from '../console/src/lib/api.ts';
import { connectEvents, type StreamState } from '../console/src/lib/events-client.ts';
import { LiveStore, isAlert, numericSeries, rateOf } from '../console/src/state/live.ts';
import { Ring } from '../console/src/state/ring.ts';
import {
  allowedActions,
  can,
  canonicalJson,
  endpointStats,
  gateReadings,
  groupByRegion,
  lineDiff,
  parseLabelFilter,
  requestSeries,
  rolloutProgress,
  siteMatches,
  ago,
  bytes,
} from '../console/src/state/derive.ts';
import { checkKeyShape, loadKey, saveKey, signOut, takeNotice, type KeyStorage } from '../console/src/state/session.ts';
import type { Result, Rollout, RouteDecision, Site, SiteStatus } from '../console/src/types.ts';

/**
 * The console's state and data layer, without a browser: the SSE parser, the stream client's
 * reconnect logic (against a real HTTP server that misbehaves on purpose), the live store and
 * its bounds, and the pure helpers behind the pages.
 */

const status = (over: Partial<SiteStatus> = {}): SiteStatus => ({
  agentVersion: '0.1.0',
  bootId: 'b',
  uptimeS: 10,
  heartbeatIntervalS: 1,
  generation: 1,
  apps: [],
  system: {
    hostname: 'h',
    platform: 'linux',
    arch: 'x64',
    cores: 4,
    memoryTotalBytes: 1000,
    memoryFreeBytes: 250,
    diskTotalBytes: 1,
    diskFreeBytes: 1,
    loadAvg1: 1,
  },
  runtimes: [],
  accelerators: [],
  outbox: { pending: 0, dropped: 0 },
  devices: { connected: 0, messagesIn: 0 },
  ...over,
});
const mkSite = (id: string, over: Partial<Site> = {}): Site => ({
  id,
  name: id,
  region: 'r1',
  labels: {},
  state: 'online',
  lastSeenAt: 1000,
  createdAt: 0,
  revokedAt: null,
  desiredGeneration: 1,
  reportedGeneration: 1,
  inSync: true,
  status: status(),
  ...over,
});
const mkResult = (seq: number, stream: string, siteId = 's1', receivedAt = 10_000): Result => ({
  seq,
  siteId,
  id: `m${seq}`,
  stream,
  at: receivedAt,
  receivedAt,
  data: { v: seq },
});
const mkRollout = (over: Partial<Rollout> = {}): Rollout => ({
  id: 'dep-1',
  app: 'guard',
  version: '2.0.0',
  strategy: { type: 'all' },
  options: { stepTimeoutS: 300, onFailure: 'rollback' },
  phase: 'progressing',
  startedAt: 0,
  updatedAt: 0,
  admitted: [],
  canaries: [],
  sites: {},
  history: [],
  ...over,
});

describe('SSE parser', () => {
  it('parses events split anywhere, including inside a CRLF', () => {
    const text = 'retry: 2000\r\n\r\n: comment\r\nid: 7\r\nevent: results\r\ndata: {"a":1}\r\n\r\nevent: ready\ndata: x\ndata: y\n\n';
    for (let cut = 0; cut <= text.length; cut++) {
      const p = new SseParser();
      const evs = [...p.push(text.slice(0, cut)), ...p.push(text.slice(cut))];
      assert.deepEqual(
        evs,
        [
          { event: 'results', data: '{"a":1}', id: '7' },
          { event: 'ready', data: 'x\ny', id: '7' },
        ],
        `cut at ${cut}`,
      );
      assert.equal(p.retryMs, 2000);
    }
  });

  it('dispatches nothing for comments and empty blocks; defaults the event name', () => {
    const p = new SseParser();
    assert.deepEqual(p.push(': ping 1\n\n\n'), []);
    assert.deepEqual(p.push('data\n\n'), [{ event: 'message', data: '' }]);
    assert.deepEqual(p.push('id: a\0b\ndata: z\n\n'), [{ event: 'message', data: 'z' }], 'an id with NUL is ignored');
  });

  it('bounds an unterminated line', () => {
    const p = new SseParser(100);
    assert.throws(() => p.push(`data: ${'x'.repeat(200)}`), /longer than 100/);
  });
});

describe('reconnect back-off', () => {
  it('grows exponentially to the cap, with jitter between half and all of the step', () => {
    assert.equal(
      backoffDelay(0, () => 1),
      500,
    );
    assert.equal(
      backoffDelay(0, () => 0),
      250,
    );
    assert.equal(
      backoffDelay(3, () => 1),
      4000,
    );
    assert.equal(
      backoffDelay(10, () => 1),
      15_000,
    );
    assert.equal(
      backoffDelay(1000, () => 1),
      15_000,
      'no overflow',
    );
  });
});

describe('API client', () => {
  it('turns error bodies into ApiError with code, message and path, and reports 401s', async () => {
    const calls: { url: string; auth: string | null }[] = [];
    let unauth: ApiError | undefined;
    const f = (async (url: string, init: RequestInit) => {
      calls.push({ url, auth: new Headers(init.headers).get('authorization') });
      if (url.endsWith('/bad'))
        return new Response(JSON.stringify({ code: 'VALIDATION_FAILED', message: 'labels: nope', path: 'labels' }), { status: 400 });
      if (url.endsWith('/gone')) return new Response(JSON.stringify({ code: 'UNAUTHENTICATED', message: 'revoked' }), { status: 401 });
      if (url.endsWith('/proxy')) return new Response('<html>bad gateway</html>', { status: 502 });
      if (url.endsWith('/none')) return new Response(null, { status: 204 });
      return new Response(JSON.stringify({ ok: true }), { status: 200 });
    }) as typeof fetch;
    const api = new ApiClient({
      key: 'ewk_test',
      baseUrl: 'http://cloud',
      fetch: f,
      onUnauthenticated: (e) => {
        unauth = e;
      },
    });
    assert.deepEqual(await api.get('/ok'), { ok: true });
    assert.equal(calls[0]!.auth, 'Bearer ewk_test');
    await assert.rejects(api.post('/bad', {}), (e: ApiError) => e.code === 'VALIDATION_FAILED' && e.path === 'labels' && e.status === 400);
    await assert.rejects(api.get('/proxy'), (e: ApiError) => e.code === 'HTTP_502' && /bad gateway/.test(e.message));
    assert.equal(unauth, undefined);
    await assert.rejects(api.get('/gone'), (e: ApiError) => e.code === 'UNAUTHENTICATED');
    assert.equal((unauth as ApiError | undefined)?.message, 'revoked');
    assert.equal(await api.del('/none'), undefined);
    // The inference routes answer in OIP's shape, {error, code}: read the same way.
    const oip = new ApiClient({
      key: 'k',
      fetch: (async () => new Response('{"error":"no target for endpoint score","code":"NO_TARGET"}', { status: 503 })) as typeof fetch,
    });
    await assert.rejects(
      oip.get('/v2/models'),
      (e: ApiError) => e.code === 'NO_TARGET' && e.message === 'no target for endpoint score' && e.status === 503,
    );
    const down = new ApiClient({
      key: 'k',
      fetch: (async () => {
        throw new TypeError('fetch failed');
      }) as typeof fetch,
    });
    await assert.rejects(down.get('/x'), (e: ApiError) => e.code === 'NETWORK' && /cannot reach the cloud/.test(e.message));
  });
});

describe('event stream client', () => {
  /** A real HTTP server whose answers the test scripts one connection at a time. */
  async function scriptedServer(script: ((res: ServerResponse, lastEventId: string | undefined) => void)[]) {
    const seen: (string | undefined)[] = [];
    let i = 0;
    const server = createServer((req, res) => {
      const last = req.headers['last-event-id'] as string | undefined;
      seen.push(last);
      const step = script[Math.min(i++, script.length - 1)]!;
      step(res, last);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      seen,
      close: () =>
        new Promise<void>((r) => {
          server.closeAllConnections();
          server.close(() => r());
        }),
    };
  }
  const sse = (res: ServerResponse) => res.writeHead(200, { 'content-type': 'text/event-stream' });

  it('reconnects after the stream drops, says so, and resumes from the last event id', async () => {
    const srv = await scriptedServer([
      (res) => {
        sse(res);
        res.end('event: ready\ndata: {}\n\nid: 5\nevent: results\ndata: {"items":[]}\n\n');
      },
      (res) => {
        res.writeHead(503, { 'content-type': 'application/json' });
        res.end('{"code":"STORE_UNAVAILABLE","message":"db down"}');
      },
      (res) => {
        sse(res);
        res.write('event: ready\ndata: {}\n\n');
      },
    ]);
    const states: StreamState[] = [];
    const c = connectEvents({
      key: 'k',
      baseUrl: srv.url,
      onEvent: () => {},
      onState: (s) => states.push(s),
      baseDelayMs: 5,
      maxDelayMs: 20,
      random: () => 1,
    });
    try {
      for (let n = 0; n < 400 && states.filter((s) => s.state === 'live').length < 2; n++) await new Promise((r) => setTimeout(r, 10));
      const kinds = states.map((s) => s.state);
      assert.deepEqual(kinds.slice(0, 7), ['connecting', 'live', 'reconnecting', 'connecting', 'reconnecting', 'connecting', 'live']);
      const r1 = states[2] as Extract<StreamState, { state: 'reconnecting' }>;
      assert.equal(r1.error.code, 'STREAM_ENDED');
      const r2 = states[4] as Extract<StreamState, { state: 'reconnecting' }>;
      assert.deepEqual(r2.error, { code: 'STORE_UNAVAILABLE', message: 'db down' }, "the server's error is shown as it came");
      assert.ok(r2.retryInMs > r1.retryInMs, 'back-off grows');
      assert.deepEqual(srv.seen, [undefined, '5', '5'], 'resumes from the last id');
    } finally {
      c.close();
      await srv.close();
    }
  });

  it('stops for good when the key is refused, and after an error event saying so', async () => {
    const srv = await scriptedServer([
      (res) => {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end('{"code":"UNAUTHENTICATED","message":"revoked"}');
      },
    ]);
    const states: StreamState[] = [];
    connectEvents({ key: 'k', baseUrl: srv.url, onEvent: () => {}, onState: (s) => states.push(s) });
    for (let n = 0; n < 300 && !states.some((s) => s.state === 'unauthenticated'); n++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(states.at(-1), { state: 'unauthenticated', error: { code: 'UNAUTHENTICATED', message: 'revoked' } });
    assert.equal(srv.seen.length, 1, 'no retry with a refused key');
    await srv.close();

    const srv2 = await scriptedServer([
      (res) => {
        sse(res);
        res.write('event: ready\ndata: {}\n\nevent: error\ndata: {"code":"UNAUTHENTICATED","message":"the API key was revoked"}\n\n');
      },
    ]);
    const st2: StreamState[] = [];
    connectEvents({ key: 'k', baseUrl: srv2.url, onEvent: () => {}, onState: (s) => st2.push(s) });
    for (let n = 0; n < 300 && !st2.some((s) => s.state === 'unauthenticated'); n++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(st2.at(-1)?.state, 'unauthenticated');
    assert.equal(srv2.seen.length, 1);
    await srv2.close();
  });

  it('gives up on a silent stream and reconnects', async () => {
    const srv = await scriptedServer([
      (res) => {
        sse(res);
        res.write('event: ready\ndata: {}\n\n'); /* then nothing, ever */
      },
    ]);
    const states: StreamState[] = [];
    const c = connectEvents({
      key: 'k',
      baseUrl: srv.url,
      onEvent: () => {},
      onState: (s) => states.push(s),
      idleTimeoutMs: 100,
      baseDelayMs: 5,
      maxDelayMs: 10,
    });
    try {
      for (let n = 0; n < 300 && srv.seen.length < 2; n++) await new Promise((r) => setTimeout(r, 10));
      const rec = states.find((s) => s.state === 'reconnecting') as Extract<StreamState, { state: 'reconnecting' }>;
      assert.match(rec.error.message, /went silent/);
      assert.ok(srv.seen.length >= 2);
    } finally {
      c.close();
      await srv.close();
    }
  });
});

describe('live store', () => {
  it('applies list snapshots and stream events; drops sites gone from a list', () => {
    const s = new LiveStore();
    let notified = 0;
    s.subscribe(() => notified++);
    s.setListError({ code: 'STORE_UNAVAILABLE', message: 'db down' });
    assert.deepEqual(s.listError, { code: 'STORE_UNAVAILABLE', message: 'db down' });
    assert.equal(s.sitesLoaded, false);
    s.setSites([mkSite('a'), mkSite('b')], 0);
    assert.equal(s.sitesLoaded, true);
    assert.equal(s.listError, undefined, 'a good read clears the error');
    s.apply({ event: 'sites', data: JSON.stringify({ items: [mkSite('a', { state: 'offline' })] }) }, 0);
    assert.equal(s.sites.get('a')!.state, 'offline');
    s.setSites([mkSite('b')], 0);
    assert.deepEqual([...s.sites.keys()], ['b']);
    s.apply({ event: 'rollouts', data: JSON.stringify({ items: [mkRollout({ phase: 'paused' })] }) }, 0);
    assert.equal(s.rollouts.get('dep-1')!.phase, 'paused');
    // A frame read before an operator's action does not undo what the action's answer showed.
    s.apply({ event: 'rollouts', data: JSON.stringify({ items: [mkRollout({ phase: 'baking', updatedAt: 5 })] }) }, 0);
    assert.equal(s.rollouts.get('dep-1')!.phase, 'baking');
    s.apply({ event: 'rollouts', data: JSON.stringify({ items: [mkRollout({ phase: 'paused', updatedAt: 9 })] }) }, 0);
    s.apply({ event: 'rollouts', data: JSON.stringify({ items: [mkRollout({ phase: 'baking', updatedAt: 5 })] }) }, 0);
    assert.equal(s.rollouts.get('dep-1')!.phase, 'paused');
    s.setRollouts([mkRollout({ phase: 'baking', updatedAt: 5 }), mkRollout({ id: 'dep-2' })]);
    assert.equal(s.rollouts.get('dep-1')!.phase, 'paused');
    assert.deepEqual([...s.rollouts.keys()].sort(), ['dep-1', 'dep-2']);
    s.apply({ event: 'future-kind', data: '{}' }, 0);
    s.apply({ event: 'results', data: 'not json' }, 0);
    assert.equal(notified, 9, 'unknown or broken events change nothing');
  });

  it('keeps results and alerts in bounded rings and counts unseen alerts', () => {
    const s = new LiveStore({ results: 5, alerts: 2 });
    const items = Array.from({ length: 12 }, (_, i) => mkResult(i + 1, i % 3 === 0 ? 'alerts' : 'counts'));
    s.apply({ event: 'results', data: JSON.stringify({ items }) }, 0);
    assert.deepEqual(
      s.results.toArray().map((r) => r.seq),
      [8, 9, 10, 11, 12],
    );
    assert.deepEqual(
      s.alerts.toArray().map((r) => r.seq),
      [7, 10],
    );
    assert.equal(s.unseenAlerts, 4);
    s.markAlertsSeen();
    assert.equal(s.unseenAlerts, 0);
    s.apply({ event: 'gap', data: JSON.stringify({ from: 10, to: 110 }) }, 0);
    assert.equal(s.skipped, 100);
    s.apply({ event: 'results', data: JSON.stringify({ items: [mkResult(99, '_egress-audit')] }) }, 0);
    assert.equal(s.results.last()!.seq, 12, "the platform's own streams are not shown as results");
  });

  it('counts results per second per site, zero-filled, for the throughput charts', () => {
    const s = new LiveStore({ rateSeconds: 3 });
    s.apply(
      {
        event: 'results',
        data: JSON.stringify({
          items: [
            mkResult(1, 'x', 'a', 10_100),
            mkResult(2, 'x', 'a', 10_900),
            mkResult(3, 'x', 'b', 11_500),
            mkResult(4, 'x', 'a', 12_000),
          ],
        }),
      },
      0,
    );
    assert.deepEqual(s.resultRate(12_500, 4), [
      [9, 10, 11, 12],
      [0, 2, 1, 1],
    ]);
    assert.deepEqual(s.resultRate(12_500, 4, 'a'), [
      [9, 10, 11, 12],
      [0, 2, 0, 1],
    ]);
    s.apply(
      { event: 'results', data: JSON.stringify({ items: [13_000, 14_000, 15_000].map((t, i) => mkResult(10 + i, 'x', 'a', t)) }) },
      0,
    );
    assert.deepEqual(s.resultRate(15_000, 6, 'a')[1], [0, 0, 0, 1, 1, 1], 'only rateSeconds buckets are kept');
  });

  it('takes one sample per heartbeat, bounded, for the site charts', () => {
    const s = new LiveStore({ samplesPerSite: 3 });
    for (let i = 1; i <= 5; i++) {
      const st = status({
        system: { ...status().system, loadAvg1: i },
        rules: [
          {
            app: 'g',
            rule: 'r',
            state: 'running',
            in: i * 10,
            out: i * 5,
            filtered: 0,
            late: 0,
            errors: 0,
            dropped: 0,
            sinkErrors: 0,
            lastOutputAt: null,
          },
        ],
      });
      s.apply({ event: 'sites', data: JSON.stringify({ items: [mkSite('a', { lastSeenAt: i * 1000, status: st })] }) }, 0);
      s.apply({ event: 'sites', data: JSON.stringify({ items: [mkSite('a', { lastSeenAt: i * 1000, status: st })] }) }, 0); // the same heartbeat again
    }
    const samples = s.siteSamples('a');
    assert.deepEqual(
      samples.map((x) => x.load),
      [3, 4, 5],
    );
    assert.equal(samples[0]!.memUsedFraction, 0.75);
    assert.deepEqual(
      rateOf(samples, (x) => x.rules['g/r']?.out),
      [
        [4, 5],
        [5, 5],
      ],
    );
  });

  it('turns counters into rates, restarting from zero when a counter drops', () => {
    const samples = [
      { t: 0, v: 10 },
      { t: 2, v: 30 },
      { t: 3, v: 4 },
      { t: 3, v: 9 },
      { t: 4, v: undefined as number | undefined },
    ];
    assert.deepEqual(
      rateOf(samples, (x) => x.v),
      [
        [2, 3, 3, 4],
        [10, 4, null, null],
      ],
    );
  });

  it('calls a result an alert by its stream name', () => {
    assert.equal(isAlert({ stream: 'alerts' }), true);
    assert.equal(isAlert({ stream: 'temperature-alarm' }), true);
    assert.equal(isAlert({ stream: 'counts' }), false);
  });
});

describe('ring', () => {
  it('keeps the newest capacity items in order', () => {
    const r = new Ring<number>(3);
    assert.equal(r.last(), undefined);
    for (let i = 1; i <= 7; i++) r.push(i);
    assert.deepEqual(r.toArray(), [5, 6, 7]);
    assert.equal(r.last(), 7);
    assert.equal(r.size, 3);
    assert.throws(() => new Ring(0));
  });
});

describe('fleet helpers', () => {
  it('parses label filters and says which term is wrong', () => {
    assert.deepEqual(parseLabelFilter('city=hangzhou, industry!=retail gpu'), {
      ok: true,
      terms: [{ key: 'city', value: 'hangzhou', not: false }, { key: 'industry', value: 'retail', not: true }, { key: 'gpu' }],
    });
    assert.deepEqual(parseLabelFilter(''), { ok: true, terms: [] });
    assert.deepEqual(parseLabelFilter('a=1 =x'), { ok: false, error: 'term 2 "=x" is not key, key=value or key!=value' });
    assert.deepEqual(parseLabelFilter('a='), { ok: false, error: 'term 1 "a=" has no value after =' });
  });

  it('filters sites by labels and region, and groups them by region', () => {
    const sites = [
      mkSite('z', { region: 'berlin', labels: { city: 'berlin' } }),
      mkSite('b', { region: 'hz', labels: { city: 'hz', gpu: '1' } }),
      mkSite('a', { region: 'hz', labels: { city: 'hz' } }),
    ];
    const f = (t: string) => sites.filter((s) => siteMatches(s, parseLabelFilter(t))).map((s) => s.id);
    assert.deepEqual(f('city=hz'), ['b', 'a']);
    assert.deepEqual(f('gpu'), ['b']);
    assert.deepEqual(f('city!=hz'), ['z']);
    assert.deepEqual(f('region=berlin'), ['z']);
    assert.deepEqual(f('=broken'), ['z', 'b', 'a'], 'a broken filter hides nothing (its error is shown)');
    assert.deepEqual(
      groupByRegion(sites).map((g) => [g.region, g.sites.map((s) => s.id)]),
      [
        ['berlin', ['z']],
        ['hz', ['a', 'b']],
      ],
    );
    const mixed = [
      mkSite('a', { region: 'hz' }),
      mkSite('c', { region: 'hz', state: 'revoked' }),
      mkSite('b', { region: 'hz', state: 'offline' }),
    ];
    assert.deepEqual(
      groupByRegion(mixed)[0]!.sites.map((s) => s.id),
      ['b', 'a', 'c'],
      'offline first: what needs a look',
    );
  });
});

describe('rollout helpers', () => {
  it('offers only the actions the phase allows', () => {
    assert.deepEqual(allowedActions('baking'), ['pause', 'abort']);
    assert.deepEqual(allowedActions('paused'), ['resume', 'abort']);
    assert.deepEqual(allowedActions('succeeded'), ['undo']);
    assert.deepEqual(allowedActions('rolled-back'), []);
    assert.deepEqual(allowedActions('aborted'), []);
  });

  it('counts progress per site phase', () => {
    const r = mkRollout({
      sites: {
        a: { phase: 'updated', since: 0 },
        b: { phase: 'failed', since: 0 },
        c: { phase: 'deferred', since: 0 },
        d: { phase: 'updating', since: 0 },
        e: { phase: 'reverted', since: 0 },
      },
    });
    assert.deepEqual(rolloutProgress(r), { total: 5, updated: 1, failed: 2, deferred: 1, pending: 1 });
  });

  it("reads canary gates from the canary sites' model counters", () => {
    const r = mkRollout({
      strategy: { type: 'canary', canary: 1, bakeTimeS: 60, gates: { maxErrorRate: 0.05, maxP95Ms: 20, maxDrift: 0.1 }, then: 'all' },
      canaries: ['a'],
    });
    const models = (requests: number, errors: number, p95Ms: number | null) =>
      status({
        models: [
          { app: 'guard', name: 'm', version: '1', state: 'ready', stats: { requests, errors, p95Ms, outputMean: null } },
          { app: 'other', name: 'x', version: '1', state: 'ready', stats: { requests: 1, errors: 1, p95Ms: 999, outputMean: null } },
        ],
      });
    const sites = new Map([
      ['a', mkSite('a', { status: models(200, 20, 35) })],
      ['b', mkSite('b', { status: models(1, 1, 1) })],
    ]);
    const readings = gateReadings(r, sites);
    assert.deepEqual(readings.slice(0, 2), [
      { gate: 'maxErrorRate', limit: 0.05, value: 0.1, ok: false },
      { gate: 'maxP95Ms', limit: 20, value: 35, ok: false },
    ]);
    assert.deepEqual(readings[2], { gate: 'maxDrift', limit: 0.1, value: null, ok: null, note: 'no model output on the canaries yet' });
    // Drift as the controller judges it: the canaries' mean output against the sites still on the
    // previous version, or else against the figures recorded before the canaries updated.
    const withMeans = (mean: number, version: string) =>
      status({
        apps: [{ name: 'guard', version }],
        models: [{ app: 'guard', name: 'm', version: '1', state: 'ready', stats: { requests: 10, errors: 0, p95Ms: 5, outputMean: mean } }],
      });
    const canary = {
      ...r,
      sites: { a: { phase: 'updated' as const, since: 0 }, b: { phase: 'pending' as const, since: 0 } },
      admitted: ['a'],
    };
    const drifted = new Map([
      ['a', mkSite('a', { status: withMeans(0.6, '2.0.0') })],
      ['b', mkSite('b', { status: withMeans(0.5, '1.0.0') })],
    ]);
    const d = gateReadings(canary, drifted)[2]!;
    assert.ok(Math.abs(d.value! - 0.2) < 1e-9);
    assert.equal(d.ok, false);
    const alone = new Map([['a', mkSite('a', { status: withMeans(0.52, '2.0.0') })]]);
    const d2 = gateReadings({ ...canary, sites: { a: canary.sites.a }, baseline: { at: 0, outputMean: 0.5, sites: 2 } }, alone)[2]!;
    assert.ok(Math.abs(d2.value! - 0.04) < 1e-9);
    assert.equal(d2.ok, true);
    assert.equal(gateReadings({ ...canary, sites: { a: canary.sites.a } }, alone)[2]!.note, 'no figures of the previous version');
    const idle = new Map([['a', mkSite('a', { status: status() })]]);
    assert.deepEqual(
      gateReadings(r, idle)
        .map((g) => [g.value, g.ok, g.note])
        .slice(0, 2),
      [
        [null, null, 'no model requests yet'],
        [null, null, 'no latency yet'],
      ],
    );
    assert.deepEqual(gateReadings(mkRollout(), sites), []);
  });
});

describe('manifest diff', () => {
  it('diffs by content, not by key order', () => {
    assert.equal(
      canonicalJson({ b: 1, a: { d: [2, { z: 1, y: 2 }], c: 3 } }),
      canonicalJson({ a: { c: 3, d: [2, { y: 2, z: 1 }] }, b: 1 }),
    );
    const d = lineDiff('a\nb\nc\nd', 'a\nc\nd\ne');
    assert.deepEqual(d, [
      { op: ' ', text: 'a' },
      { op: '-', text: 'b' },
      { op: ' ', text: 'c' },
      { op: ' ', text: 'd' },
      { op: '+', text: 'e' },
    ]);
    assert.deepEqual(lineDiff('x', 'x'), [{ op: ' ', text: 'x' }]);
  });

  it('falls back to whole-text replace past its size bound', () => {
    const big = Array.from({ length: 50 }, (_, i) => `l${i}`).join('\n');
    const d = lineDiff(big, `${big}\nmore`, 10);
    assert.equal(d.filter((l) => l.op === '-').length, 50);
    assert.equal(d.filter((l) => l.op === '+').length, 51);
  });
});

describe('session and permissions', () => {
  const mem = (): KeyStorage & { m: Map<string, string> } => {
    const m = new Map<string, string>();
    return {
      m,
      getItem: (k) => m.get(k) ?? null,
      setItem: (k, v) => {
        m.set(k, v);
      },
      removeItem: (k) => {
        m.delete(k);
      },
    };
  };
  it('keeps the key for the session and leaves a sign-out notice once', () => {
    const s = mem();
    assert.equal(loadKey(s), undefined);
    saveKey(s, 'ewk_abc');
    assert.equal(loadKey(s), 'ewk_abc');
    signOut(s, 'Signed out: the API key was revoked');
    assert.equal(loadKey(s), undefined);
    assert.equal(takeNotice(s), 'Signed out: the API key was revoked');
    assert.equal(takeNotice(s), undefined, 'shown once');
  });

  it("checks a pasted key's shape before any request", () => {
    assert.deepEqual(checkKeyShape(`  ewk_${'a'.repeat(43)}\n`), { ok: true, key: `ewk_${'a'.repeat(43)}` });
    assert.equal(checkKeyShape('').ok, false);
    assert.equal(checkKeyShape('ewj_notakey_aaaaaaaaaaaaaaaaaaaa').ok, false);
    assert.equal(checkKeyShape('ewk_has space inside_aaaaaaaaaa').ok, false);
  });

  it('hides what the permissions do not hold', () => {
    assert.equal(can(['sites:read'], 'sites:read'), true);
    assert.equal(can(['sites:read'], 'rollouts:act'), false);
    assert.equal(can(undefined, 'sites:read'), false);
  });
});

describe('formatting and live charts', () => {
  it('writes relative times and sizes', () => {
    assert.equal(ago(null, 0), 'never');
    assert.equal(ago(0, 5_000), '5 s ago');
    assert.equal(ago(0, 125_000), '2 min ago');
    assert.equal(ago(0, 7_200_000), '2 h ago');
    assert.equal(ago(0, 3 * 86_400_000), '3 d ago');
    assert.equal(ago(10_000, 0), '0 s ago', 'a clock ahead of ours is not "in the future"');
    assert.equal(bytes(512), '512 B');
    assert.equal(bytes(1536), '1.5 KiB');
    assert.equal(bytes(5 * 1024 ** 3), '5.0 GiB');
  });

  it("charts the numeric fields of a stream's results with increasing x", () => {
    const rows: Result[] = [
      { ...mkResult(1, 's'), at: 1000, data: { temp: 20, name: 'a', at: 1796011240000, windowEnd: 1796011240000, hum: 1 } },
      { ...mkResult(2, 's'), at: 1000, data: { temp: 21 } },
      { ...mkResult(3, 's'), at: 2000, data: 'not an object' },
    ];
    const { keys, data } = numericSeries(rows);
    assert.deepEqual(keys, ['temp', 'hum']);
    assert.deepEqual(data, [
      [1, 1.001],
      [20, 21],
      [1, null],
    ]);
  });
});

describe('endpoint figures from the routing audit', () => {
  const rec = (at: number, endpoint: string, over: Partial<RouteDecision> = {}): RouteDecision => ({
    at,
    requestId: `r${at}`,
    endpoint,
    protocol: 'oip',
    attempts: [{ target: 'site-a', region: 'eu', outcome: 'ok', ms: 10 }],
    outcome: 'ok',
    answeredBy: 'site-a',
    ...over,
  });
  it('computes throughput, latency percentiles, cascade rate, targets and error codes per endpoint in the window', () => {
    const now = 600_000;
    const records = [
      ...Array.from({ length: 18 }, (_, i) =>
        rec(now - 1000 * (i + 1), 'score', { attempts: [{ target: 'site-a', region: 'eu', outcome: 'ok', ms: i + 1 }] }),
      ),
      rec(now - 500, 'score', {
        attempts: [
          { target: 'site-a', region: 'eu', outcome: 'INFER_DEADLINE_EXCEEDED', ms: 100 },
          { target: 'site-b', region: 'eu', outcome: 'ok', ms: 20 },
        ],
        answeredBy: 'site-b',
      }),
      rec(now - 400, 'score', { outcome: 'error', code: 'RESIDENCY_UNSATISFIABLE', attempts: [], answeredBy: undefined }),
      rec(now - 300, 'chat', { cascade: { escalated: true, why: 'low confidence', to: 'big' }, answeredBy: 'cloud' }),
      rec(now - 200, 'chat', { cascade: { escalated: false, why: 'confident' } }),
      rec(now - 10 * 60_000 - 1, 'score'), // outside the window
    ];
    const [chat, score] = endpointStats(records, now, 10 * 60_000);
    assert.equal(score!.endpoint, 'score');
    assert.equal(score!.requests, 20);
    assert.equal(score!.errors, 1);
    assert.equal(score!.perMinute, 2);
    assert.equal(score!.p50Ms, 10, 'median of 1..18 and 120');
    assert.equal(score!.p95Ms, 120, 'the retried request took both attempts');
    assert.equal(score!.cascadeRate, null);
    assert.deepEqual(score!.answeredBy, [
      ['site-a', 18],
      ['site-b', 1],
    ]);
    assert.deepEqual(score!.errorCodes, [['RESIDENCY_UNSATISFIABLE', 1]]);
    assert.equal(chat!.cascadeRate, 0.5);
    assert.deepEqual(chat!.answeredBy, [
      ['cloud', 1],
      ['site-a', 1],
    ]);
    assert.deepEqual(endpointStats([], now, 60_000), []);
  });

  it('buckets routed requests per second for the chart, zero-filled', () => {
    const data = requestSeries([rec(95_000, 'a'), rec(99_000, 'a'), rec(91_000, 'b'), rec(10_000, 'a')], ['a', 'b'], 100_000, 30_000, 10);
    assert.deepEqual(
      data,
      [
        [80, 90, 100],
        [0, 0.2, 0],
        [0, 0.1, 0],
      ],
      'the last bucket is the current one',
    );
  });
});
