import { it } from 'node:test';
import assert from 'node:assert/strict';
import { indexedMemoryPersistence } from './retained.ts';

interface Async {
  storeRetained(p: { topic: string; payload: Buffer }): Promise<void>;
  createRetainedStream(p: string): AsyncIterable<{ topic: string }>;
  createRetainedStreamCombi(p: string[]): AsyncIterable<{ topic: string }>;
}
const topicsOf = async (s: AsyncIterable<{ topic: string }>) => {
  const out: string[] = [];
  for await (const p of s) out.push(p.topic);
  return out.sort();
};

it('matches retained messages like the stock store, by exact topic, site prefix and wildcard', async () => {
  const p = (indexedMemoryPersistence().aedes as { asyncPersistence: Async }).asyncPersistence;
  for (const t of ['ew/a/desired', 'ew/b/desired', 'ew/a/rpc/req/1', 'other', 'x/y/z'])
    await p.storeRetained({ topic: t, payload: Buffer.from('1') });
  assert.deepEqual(await topicsOf(p.createRetainedStream('ew/a/desired')), ['ew/a/desired']);
  assert.deepEqual(await topicsOf(p.createRetainedStream('ew/c/desired')), []);
  assert.deepEqual(await topicsOf(p.createRetainedStream('ew/a/#')), ['ew/a/desired', 'ew/a/rpc/req/1']);
  assert.deepEqual(await topicsOf(p.createRetainedStream('ew/+/desired')), ['ew/a/desired', 'ew/b/desired']);
  assert.deepEqual(await topicsOf(p.createRetainedStream('#')), ['ew/a/desired', 'ew/a/rpc/req/1', 'ew/b/desired', 'other', 'x/y/z']);
  assert.deepEqual(await topicsOf(p.createRetainedStream('other')), ['other']);
  assert.deepEqual(await topicsOf(p.createRetainedStreamCombi(['ew/b/desired', 'x/+/z'])), ['ew/b/desired', 'x/y/z']);
  await p.storeRetained({ topic: 'ew/a/desired', payload: Buffer.alloc(0) });
  assert.deepEqual(await topicsOf(p.createRetainedStream('ew/a/#')), ['ew/a/rpc/req/1'], 'an empty payload clears it');
});
