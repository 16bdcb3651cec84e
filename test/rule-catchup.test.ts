import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { parseManifest } from '../src/contracts/manifest.ts';
import { EwError } from '../src/contracts/errors.ts';
import { tempDir, removeDirs } from './support/harness.ts';
import { durableRuleHost } from './support/rule-host.ts';

/**
 * A site's model rules under acknowledge-after-durability when the model is slower than the
 * input: a replay bigger than the model's queue, live input faster than the model, a model busy
 * with other callers, a model failed for good, window results calling a model. What is asserted:
 * none dead-lettered that a retry cures, none lost, none doubled, in order; the model's queue
 * never overflows; what the rule has not read yet stays reserved in the outbox; an unloaded rule
 * stops calling the model. (Real SQLite journal and outbox; the model is a stand-in whose queue
 * and answers the test controls, as the model host's batcher would bound and answer them.)
 */
const dirs: string[] = [];
after(() => removeDirs(...dirs));

function site(opts: {
  infer: (app: string, model: string, args: unknown[]) => Promise<unknown>;
  state?: () => 'ready' | 'waiting' | 'failed';
  sql?: string;
  schema?: Record<string, string>;
  timestamp?: string;
  rules?: { name: string; sql: string; sinks: { uplink: string }[]; options?: Record<string, unknown> }[];
}) {
  const dir = tempDir('catchup');
  dirs.push(dir);
  const {
    db,
    clock,
    outbox,
    journal,
    dead,
    router,
    host,
    feed: journalAndDeliver,
  } = durableRuleHost(dir, {
    modelState: opts.state ?? (() => 'ready'),
    infer: opts.infer,
  });
  const app = {
    name: 'rl',
    version: '1.0.0',
    deploymentId: 'd-1',
    manifest: parseManifest({
      apiVersion: 'edgeweave/v1',
      kind: 'App',
      metadata: { name: 'rl', version: '1.0.0' },
      spec: {
        models: [{ name: 'm', format: 'onnx', path: 'models/m.onnx', sha256: 'a'.repeat(64) }],
        streams: [
          {
            name: 'recs',
            topic: 'rl/+/rec',
            schema: opts.schema ?? { n: 'int' },
            ...(opts.timestamp ? { timestamp: opts.timestamp } : {}),
          },
          { name: 'other', topic: 'ot/+/rec', schema: { n: 'int' } },
        ],
        rules: opts.rules ?? [{ name: 'score', sql: opts.sql ?? "SELECT n, infer('m', n) AS s FROM recs", sinks: [{ uplink: 'scored' }] }],
        policy: { egress: { allow: ['scored', 'counts'] } },
      },
    }),
  };
  const feed = (payloads: { topic?: string; body: unknown }[]) =>
    journalAndDeliver(payloads.map((p) => ({ topic: p.topic ?? 'rl/d/rec', payload: Buffer.from(JSON.stringify(p.body)) })));
  const turns = async (n = 10) => {
    for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
  };
  const scoredRows = () =>
    outbox
      .peek(0, 100_000)
      .filter((r) => r.topic.endsWith('/scored'))
      .map((r) => (JSON.parse(r.payload.toString()) as { body: { data: Record<string, unknown> } }).body.data);
  const close = () => {
    host.close();
    db.close();
  };
  return { clock, outbox, journal, dead, router, host, app, feed, turns, scoredRows, close };
}

/** A model whose queue holds `capacity` calls (past it: QUEUE_FULL, as the batcher) and answers when told. */
function heldModel(capacity = 1024) {
  const pending: { n: number; resolve: (v: number) => void }[] = [];
  const m = {
    pending,
    maxOut: 0,
    calls: 0,
    refused: 0,
    infer: async (_app: string, _model: string, args: unknown[]): Promise<unknown> => {
      m.calls++;
      if (pending.length >= capacity) {
        m.refused++;
        throw new EwError('QUEUE_FULL', `the model's queue holds ${capacity} of ${capacity} rows; retry shortly`);
      }
      m.maxOut = Math.max(m.maxOut, pending.length + 1);
      return new Promise<number>((resolve) => pending.push({ n: args[0] as number, resolve }));
    },
    answer(k = Infinity) {
      for (const w of pending.splice(0, Math.min(k, pending.length))) w.resolve(w.n * 2);
    },
  };
  return m;
}

const numbers = (from: number, to: number, other = (_n: number) => false) =>
  Array.from({ length: to - from }, (_, i) => from + i).map((n) => ({ topic: other(n) ? 'ot/d/rec' : 'rl/d/rec', body: { n } }));

describe('model rules catch up from the journal when the model is slower than their input', () => {
  it("a replay bigger than the model's queue, and live input faster than the model: read from the journal as the model drains; none dead-lettered, the model's queue never overflows", async () => {
    let state: 'ready' | 'waiting' = 'waiting';
    const model = heldModel();
    const s = site({ infer: model.infer, state: () => state });
    // Every fifth record is another stream's: the replay skips it.
    const other = (n: number) => n % 5 === 4;
    const expected = (to: number) => Array.from({ length: to }, (_, i) => i).filter((n) => !other(n));
    const scored = () => s.scoredRows().map((r) => r.n as number);
    const drainUntil = async (to: number, step: number) => {
      while (scored().length < expected(to).length) {
        model.answer(step);
        await s.turns(3);
        s.host.commit();
      }
    };

    // 1. The model loads late: 5,000 records (4,000 of its stream) wait in the journal.
    await s.host.start(s.app);
    s.feed(numbers(0, 5000, other));
    assert.match(s.host.statuses()[0]?.blocked ?? '', /waiting for model m/);
    assert.ok(s.host.reserved() >= 4000, `the journaled input is reserved in the outbox (${s.host.reserved()})`);
    state = 'ready';
    s.host.modelsChanged('rl');
    await s.turns();
    // It read only what its queue takes, not the whole journal: the model was asked for at most 256.
    assert.ok(model.pending.length > 0 && model.pending.length <= 256, `${model.pending.length} calls out`);
    assert.ok(s.host.reserved() >= 3000, 'what it has not read yet stays reserved');
    // Live records meanwhile are read from the journal in their turn, after the older ones.
    s.feed(numbers(5000, 5500, other));
    await drainUntil(5500, 100);
    assert.deepEqual(scored(), expected(5500), 'every record once, in order');
    assert.equal(s.dead.total, 0, 'none dead-lettered');
    assert.equal(model.refused, 0);

    // 2. Live input faster than the model: 6,000 records arrive while the model answers none.
    for (let k = 5500; k < 11_500; k += 500) {
      s.feed(numbers(k, k + 500, other));
      await s.turns(2);
    }
    assert.ok(model.pending.length <= 256, `the model's queue holds ${model.pending.length}`);
    s.host.commit();
    assert.ok(s.journal.pending >= 4000, 'the rest waits in the journal, acknowledged and durable');
    assert.ok(s.host.reserved() >= 4000, 'and reserved in the outbox (reject-new admits no more than fits)');
    const backlog = s.host.backlogs().find((b) => b.rule === 'score')?.records ?? 0;
    assert.ok(backlog >= 4000 && backlog <= 5000, `ew_edge_rule_backlog_records shows it (${backlog} of 4,800)`);
    await drainUntil(11_500, 200);
    assert.deepEqual(scored(), expected(11_500), 'every record once, in order');
    assert.equal(s.dead.total, 0, 'none dead-lettered');
    assert.equal(model.refused, 0, "the model's queue never overflowed");
    assert.ok(model.maxOut <= 256, `at most 256 model calls out (${model.maxOut})`);
    // Caught up: live records go straight in again.
    s.feed(numbers(11_500, 11_510, other));
    await s.turns(2);
    model.answer();
    await s.turns(3);
    s.host.commit();
    assert.deepEqual(scored(), expected(11_510));
    assert.equal(s.journal.pending, 0, 'the journal drained');
    s.close();
  });

  it('a model busy with other callers (QUEUE_FULL) delays records, in order, probing with one call per backoff; none dead-lettered', async () => {
    const model = heldModel(100); // other callers hold all but 100 of its queue
    const s = site({ infer: model.infer });
    await s.host.start(s.app);
    s.feed(numbers(0, 600));
    await s.turns();
    assert.equal(model.pending.length, 100);
    assert.ok(model.refused > 0, 'the model refused some');
    const refusedAtFirst = model.refused;
    // The model stays full for 3 s: the head's refusal is retried alone.
    model.pending[0]!.resolve(0);
    model.pending.shift();
    await s.turns(3);
    for (let t = 0; t < 3000; t += 100) {
      s.clock.advance(100);
      await s.turns(3);
    }
    assert.equal(s.dead.total, 0);
    assert.ok(
      model.refused - refusedAtFirst < 40,
      `one probe per backoff, not a call per record (${model.refused - refusedAtFirst} more refusals)`,
    );
    // The model answers again: everything goes through, in order.
    for (let i = 0; i < 200 && s.scoredRows().length < 600; i++) {
      model.answer(50);
      await s.turns(3);
      s.clock.advance(1000);
      await s.turns(3);
      s.host.commit();
    }
    assert.deepEqual(
      s.scoredRows().map((r) => r.n),
      Array.from({ length: 600 }, (_, i) => i),
    );
    assert.equal(s.dead.total, 0, 'none dead-lettered');
    s.close();
  });

  it('while the model refuses, the rule says so; a model failed for good is not waited for (its records fail at once, the journal is not held)', async () => {
    let modelState: 'ready' | 'failed' = 'ready';
    let calls = 0;
    const s = site({
      state: () => modelState,
      infer: async () => {
        calls++;
        throw new EwError('MODEL_NOT_READY', `model m is ${modelState === 'ready' ? 'restarting' : 'failed'}`);
      },
    });
    await s.host.start(s.app);
    s.feed(numbers(0, 10));
    await s.turns();
    assert.match(s.host.statuses()[0]?.blocked ?? '', /model busy \(MODEL_NOT_READY\)/);
    assert.equal(s.dead.total, 0);
    // The model host gives up on it (a load error no retry cures).
    modelState = 'failed';
    s.clock.advance(2000);
    await s.turns(20);
    s.feed(numbers(10, 3000));
    await s.turns(40);
    s.host.commit();
    assert.equal(s.dead.total, 3000, 'every record dead-lettered, as any rule error');
    assert.equal(s.journal.pending, 0, 'the journal is not held for a model that will not come back');
    assert.ok(calls < 3100, `no retries against it (${calls} calls)`);
    assert.equal(s.host.statuses()[0]?.blocked, undefined);
    s.close();
  });

  it('an unloaded rule (app update, close) stops calling its model and its retries end', async () => {
    let mode: 'hang' | 'not-ready' | 'ok' = 'hang';
    const hung: (() => void)[] = [];
    let calls = 0;
    const s = site({
      infer: async (_a, _m, args) => {
        calls++;
        if (mode === 'not-ready') throw new EwError('MODEL_NOT_READY', 'model m is unloading');
        if (mode === 'hang')
          return new Promise((_res, rej) => hung.push(() => rej(new EwError('MODEL_NOT_READY', 'model m is unloading'))));
        return (args[0] as number) * 2;
      },
    });
    await s.host.start(s.app);
    s.feed(numbers(0, 1500));
    await s.turns(3);
    // The update unloads the rule (it will come back with the new version); its model unloads.
    s.host.prepareUpdate(s.app, { ...s.app, version: '1.0.1', deploymentId: 'd-2' });
    mode = 'not-ready';
    for (const f of hung.splice(0)) f();
    const before = calls;
    for (let t = 0; t < 120; t++) {
      s.clock.advance(1000);
      await s.turns(2);
    }
    assert.equal(calls - before, 0, 'no call from the unloaded rule');
    assert.equal(s.dead.total, 0);
    s.close();
  });

  it('what the rule still has to read stays reserved in the outbox, records of its stream that failed to decode included', async () => {
    const model = heldModel(1_000_000);
    const s = site({ infer: model.infer });
    await s.host.start(s.app);
    let valid = 0;
    const feed = (bodies: unknown[]) => {
      s.feed(bodies.map((body) => ({ body })));
      valid += bodies.filter((b) => typeof (b as { n: unknown }).n === 'number').length;
    };
    feed(Array.from({ length: 1000 }, (_, n) => ({ n }))); // its queue full
    feed([{ n: 1000 }]); // the rule reads the journal from here
    feed(Array.from({ length: 500 }, () => ({ n: 'not a number' }))); // dead-lettered on arrival
    feed(Array.from({ length: 2000 }, (_, i) => ({ n: 2000 + i })));
    await s.turns(3);
    const owed = () => {
      s.host.commit();
      return valid - s.scoredRows().length;
    };
    assert.ok(s.host.reserved() >= owed(), `${s.host.reserved()} reserved, ${owed()} owed`);
    // The model answers in steps: at each, the reservation covers every result still owed.
    while (s.scoredRows().length < valid) {
      model.answer(150);
      await s.turns(3);
      assert.ok(s.host.reserved() >= owed(), `${s.host.reserved()} reserved, ${owed()} owed`);
    }
    assert.equal(s.dead.total, 500);
    s.close();
  });

  it('window results calling a model: at most 256 calls out, the replay paced by the rows waiting, every window emitted once', async () => {
    let state: 'waiting' | 'ready' = 'waiting';
    const pending: (() => void)[] = [];
    let out = 0;
    let maxOut = 0;
    const s = site({
      state: () => state,
      schema: { d: 'string', ts: 'timestamp' },
      timestamp: 'ts',
      sql: "SELECT d, count(*) AS c, infer('m', count(*)) AS y FROM recs GROUP BY d, TUMBLINGWINDOW(ss, 1)",
      infer: async (_a, _m, args) => {
        out++;
        maxOut = Math.max(maxOut, out);
        await new Promise<void>((r) => pending.push(r));
        out--;
        return (args[0] as number) + 0.5;
      },
    });
    await s.host.start(s.app);
    // 20,000 records: 200 devices, 100 one-second windows (and one more record to close the last).
    s.feed(Array.from({ length: 20_000 }, (_, i) => ({ body: { d: `dev${i % 200}`, ts: 1000 * Math.floor(i / 200) } })));
    s.feed([{ body: { d: 'dev0', ts: 100_000 } }]);
    state = 'ready';
    s.host.modelsChanged('rl');
    await s.turns(40);
    assert.ok(maxOut <= 256, `${maxOut} window calls out`);
    assert.ok(s.journal.pending > 10_000, 'the replay waits for the window rows');
    for (let i = 0; i < 2000 && s.scoredRows().length < 20_000; i++) {
      for (const r of pending.splice(0)) r();
      await s.turns(3);
      s.host.commit();
    }
    const rows = s.scoredRows() as { d: string; c: number; y: number }[];
    assert.equal(rows.length, 100 * 200, 'a row per device and window');
    assert.ok(rows.every((r) => r.c === 1 && r.y === 1.5));
    assert.ok(maxOut <= 256, `${maxOut} window calls out`);
    assert.equal(s.dead.total, 0);
    s.close();
  });

  it('a rule stopped over its state budget lets go of the journal: the site and its other rules keep taking records', async () => {
    const model = heldModel(1_000_000);
    const s = site({
      infer: model.infer,
      schema: { n: 'int', d: 'string' },
      rules: [
        { name: 'score', sql: "SELECT n, infer('m', n) AS s FROM recs", sinks: [{ uplink: 'scored' }] },
        // A group per device and an hour-long window: 2,000 devices put it over a budget of 1,000 cells.
        {
          name: 'greedy',
          sql: 'SELECT d, count(*) AS c FROM recs GROUP BY d, TUMBLINGWINDOW(hh, 1)',
          sinks: [{ uplink: 'counts' }],
          options: { maxState: 1000 },
        },
      ],
    });
    await s.host.start(s.app);
    const scored = () => s.scoredRows().filter((r) => 's' in r).length;
    const drain = async (to: number) => {
      while (scored() < to) {
        model.answer();
        await s.turns(3);
        s.host.commit();
      }
    };
    s.feed(Array.from({ length: 3000 }, (_, n) => ({ body: { n, d: `dev${n}` } })));
    await drain(3000);
    const greedy = s.host.statuses().find((x) => x.rule === 'greedy');
    assert.equal(greedy?.state, 'failed');
    assert.match(greedy?.error ?? '', /^RULE_STATE_BUDGET/);
    assert.equal(s.journal.cursor('rl/greedy'), undefined, 'the stopped rule holds no journal');
    assert.equal(s.journal.pending, 0, 'the journal drained past it');
    // More records: the other rule takes them, the journal does not grow.
    s.feed(Array.from({ length: 1000 }, (_, i) => ({ body: { n: 3000 + i, d: 'dev0' } })));
    await drain(4000);
    assert.equal(scored(), 4000);
    assert.equal(s.journal.pending, 0);
    s.close();
  });
});
