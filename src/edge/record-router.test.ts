import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openEdgeDb } from './db.ts';
import { DeadLetters, StreamRouter, type Record_, type Subscriber } from './record-router.ts';
import { ManualClock } from '../lib/clock.ts';

describe('record router: device messages to the streams whose topic filter matches', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ew-record-router-'));
  const db = openEdgeDb(dir);
  after(() => {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function setup() {
    const router = new StreamRouter(new DeadLetters(db, new ManualClock(0)));
    const got: string[] = [];
    const sub = (app: string, name: string, topic: string, schema?: Record<string, string>): Subscriber => ({
      app,
      stream: { name, topic, schema },
      deliver: (rec: Record_, meta) => got.push(`${app}/${name} ${meta.topic} ${JSON.stringify(rec)}`),
    });
    return { router, got, sub };
  }

  it('delivers to every matching stream, in the order they subscribed, and nothing to the others', () => {
    const { router, got, sub } = setup();
    router.subscribe(sub('b', 'all', 'factory/#'));
    router.subscribe(sub('a', 'vib', 'factory/+/vibration'));
    router.subscribe(sub('c', 'temp', 'factory/+/temp'));
    router.onMessage('factory/m1/vibration', Buffer.from('{"v":1}'));
    assert.deepEqual(got, ['b/all factory/m1/vibration {"v":1}', 'a/vib factory/m1/vibration {"v":1}']);
    got.length = 0;
    router.onMessage('factory', Buffer.from('{"v":2}'));
    assert.deepEqual(got, ['b/all factory {"v":2}'], '# matches its parent level');
  });

  it('a filter starting with a wildcard does not see $ topics; routes() says whether any stream reads a topic', () => {
    const { router, got, sub } = setup();
    router.subscribe(sub('a', 'everything', '#'));
    router.onMessage('$SYS/broker/load', Buffer.from('{"v":1}'));
    assert.deepEqual(got, []);
    assert.equal(router.routes('$SYS/broker/load'), false);
    assert.equal(router.routes('a/b'), true);
  });

  it('after unsubscribing, a stream gets nothing more and its filter is no longer asked for', () => {
    const { router, got, sub } = setup();
    const filters: string[][] = [];
    router.onFiltersChanged((f) => filters.push(f));
    const off = router.subscribe(sub('a', 's', 'x/+'));
    router.subscribe(sub('b', 's', 'x/+'));
    off();
    off(); // twice: no second change
    router.onMessage('x/1', Buffer.from('{"v":1}'));
    assert.deepEqual(got, ['b/s x/1 {"v":1}']);
    assert.deepEqual(filters, [['x/+'], ['x/+'], ['x/+']]);
    assert.equal(router.routes('x/1'), true);
  });

  it('decodes once per stream: two subscribers of one stream share the record; a record that does not fit is dead-lettered once', () => {
    const { router, got, sub } = setup();
    router.subscribe(sub('a', 's', 'm/+', { v: 'int' }));
    router.subscribe(sub('a', 's', 'm/+', { v: 'int' }));
    router.onMessage('m/1', Buffer.from('{"v":1.5}'));
    router.onMessage('m/1', Buffer.from('{"v":2}'));
    assert.deepEqual(got, ['a/s m/1 {"v":2}', 'a/s m/1 {"v":2}']);
    assert.deepEqual(router.stats.get('a/s'), { in: 2, invalid: 1 });
  });
});
