import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setMaxListeners } from 'node:events';
import mqtt, { type MqttClient } from 'mqtt';
import { EmbeddedHub } from '../src/cloud/hub/embedded.ts';
import { Forwarder } from '../src/cloud/router/forwarder.ts';
import { decodeFrame, encodeFrame, CloudToSite, WIRE_VERSION, packTensors, unpackTensors } from '../src/contracts/infer-wire.ts';
import { parseTopic, topics } from '../src/contracts/topics.ts';
import { isEwError } from '../src/contracts/errors.ts';
import { systemClock } from '../src/lib/clock.ts';
import { silentLogger } from '../src/lib/logger.ts';
import { isFrame } from '../src/contracts/infer-wire.ts';
import { waitFor } from './support/harness.ts';

/**
 * The forwarder against the real embedded hub, with raw MQTT clients playing sites that answer
 * garbage, answer wrongly, or never answer — the cases a well-behaved agent never produces.
 */
describe('forwarding over the MQTT link: bad sites, bounds, cancellation', () => {
  let hub: EmbeddedHub;
  let fwd: Forwarder;
  const sites: MqttClient[] = [];
  const site = async (id: string, onRequest: (c: MqttClient, topic: string, payload: Buffer) => void) => {
    const c = await mqtt.connectAsync(hub.agentUrl, { clientId: id, username: id, password: 'pw', reconnectPeriod: 0 });
    await c.subscribeAsync(topics.rpcRequests(id), { qos: 1 });
    c.on('message', (t, p) => onRequest(c, t, p));
    sites.push(c);
    return c;
  };
  before(async () => {
    hub = new EmbeddedHub({ port: 0, host: '127.0.0.1', log: silentLogger(), auth: { verify: async () => true } });
    fwd = new Forwarder(hub, systemClock, 50);
    await hub.start(async (topic, payload) => {
      const t = parseTopic(topic);
      if (t?.kind === 'rpc-res' && isFrame(payload)) fwd.onResponse(t.siteId, t.id, payload);
    });
  });
  after(async () => {
    for (const c of sites) await c.endAsync(true);
    await hub.close();
  });

  it('round-trips binary tensors exactly (the wire codec)', () => {
    const ts = [
      { name: 'f', datatype: 'FP32' as const, shape: [2, 2], data: [1.5, -2.25, 3, 1e-7] },
      { name: 'i', datatype: 'INT64' as const, shape: [3], data: [1, -2, 9007199254740991] },
      { name: 's', datatype: 'BYTES' as const, shape: [2], data: ['héllo', ''] },
      { name: 'b', datatype: 'BOOL' as const, shape: [2], data: [true, false] },
    ];
    const p = packTensors(ts);
    assert.equal(p.heads[0]!.bytes, 16, 'four FP32 values are 16 bytes on the wire');
    const back = unpackTensors(p.heads, Buffer.concat(p.body), 'test');
    assert.deepEqual(
      back.map((t) => t.data),
      [
        [1.5, -2.25, 3, Math.fround(1e-7)],
        [1, -2, 9007199254740991],
        ['héllo', ''],
        [true, false],
      ],
    );
    assert.throws(
      () => unpackTensors([{ ...p.heads[0]!, shape: [3, 2] }], Buffer.concat(p.body).subarray(0, 16), 'x'),
      /needs 24 bytes, got 16/,
    );
  });

  it('a site that answers garbage or a frame that breaks the contract gets SITE_ANSWER_INVALID, not a crash', async () => {
    await site('garbage', (c, t) => {
      const id = t.split('/').pop()!;
      void c.publishAsync(topics.rpcResponse('garbage', id), Buffer.from('EWF1\0\0\0\x05{nope'), { qos: 0 });
    });
    await site('liar', (c, t, p) => {
      const req = decodeFrame(CloudToSite, p, 'req');
      // Claims a [2] FP32 output but sends 3 bytes.
      void c.publishAsync(
        topics.rpcResponse('liar', t.split('/').pop()!),
        encodeFrame(
          {
            v: WIRE_VERSION,
            type: 'result',
            id: req.head.id,
            model_name: 'm',
            model_version: '1',
            outputs: [{ name: 'y', datatype: 'FP32', shape: [2], bytes: 3 }],
            siteMs: 1,
          },
          Buffer.alloc(3),
        ),
        { qos: 0 },
      );
    });
    const head = { v: WIRE_VERSION, type: 'metadata', endpoint: 'x', timeoutMs: 5000 };
    await assert.rejects(
      fwd.call('garbage', head, [], 5000),
      (e) => isEwError(e, 'SITE_ANSWER_INVALID') && /header is not JSON/.test(e.message),
    );
    const ans = await fwd.call('liar', head, [], 5000);
    assert.equal(ans.head.type, 'result');
    assert.throws(() => unpackTensors((ans.head as any).outputs, ans.body, 'answer from site liar'), /needs 8 bytes, got 3/);
    assert.equal(fwd.size, 0);
  });

  it('bounds requests waiting on sites: past the bound QUEUE_FULL at once, memory flat; a deadline cancels at the site', async () => {
    const cancels: string[] = [];
    await site('silent', (_c, _t, p) => {
      const f = decodeFrame(CloudToSite, p, 'req');
      if (f.head.type === 'cancel') cancels.push(f.head.id);
    });
    const head = { v: WIRE_VERSION, type: 'metadata', endpoint: 'x', timeoutMs: 60_000 };
    const ac = new AbortController();
    setMaxListeners(100, ac.signal);
    const waiting = Array.from({ length: 50 }, () => fwd.call('silent', head, [], 60_000, ac.signal).catch((e) => e));
    globalThis.gc?.();
    const heap0 = process.memoryUsage().heapUsed;
    let refused = 0;
    for (let i = 0; i < 20_000; i++) {
      try {
        await fwd.call('silent', head, [], 60_000);
      } catch (e) {
        if (isEwError(e, 'QUEUE_FULL')) refused++;
      }
    }
    assert.equal(refused, 20_000);
    assert.equal(fwd.size, 50);
    globalThis.gc?.();
    assert.ok(process.memoryUsage().heapUsed - heap0 < 16 * 1024 * 1024);
    ac.abort();
    const errs = await Promise.all(waiting);
    assert.ok(errs.every((e) => isEwError(e, 'CLIENT_CLOSED')));
    assert.equal(fwd.size, 0);
    await waitFor('the site told to cancel each one', () => cancels.length === 50);
    await assert.rejects(fwd.call('silent', { ...head, timeoutMs: 50 }, [], 50), (e) => isEwError(e, 'INFER_DEADLINE_EXCEEDED'));
    await waitFor('a cancel after the deadline too', () => cancels.length === 51);
  });

  it('streams with credit: the site never runs more than the window ahead of the reader, and a reader that leaves cancels it', async () => {
    let sent = 0;
    let maxAhead = 0;
    let read = 0;
    let cancelled = false;
    let credit = 0;
    let streamId = '';
    let wake: () => void = () => {};
    await site('streamer', (c, t, p) => {
      const f = decodeFrame(CloudToSite, p, 'req');
      if (f.head.type === 'credit') {
        credit += f.head.n;
        wake();
        return;
      }
      if (f.head.type === 'cancel') {
        cancelled = true;
        wake();
        return;
      }
      if (f.head.type !== 'stream') return;
      streamId = f.head.id;
      credit = f.head.window;
      void (async () => {
        for (let seq = 0; seq < 1000 && !cancelled; seq++) {
          while (credit <= 0 && !cancelled)
            await new Promise<void>((r) => {
              wake = r;
            });
          if (cancelled) break;
          credit--;
          sent++;
          maxAhead = Math.max(maxAhead, sent - read);
          await c.publishAsync(
            topics.rpcResponse('streamer', t.split('/').pop()!),
            encodeFrame({ v: WIRE_VERSION, type: 'chunk', id: streamId, seq }, Buffer.from(`tok${seq}`)),
            { qos: 0 },
          );
        }
      })();
    });
    const it = fwd.stream(
      'streamer',
      { v: WIRE_VERSION, type: 'stream', path: '/v1/chat/completions', timeoutMs: 10_000 },
      Buffer.from('{}'),
      { window: 8, idleMs: 10_000 },
    );
    const got: string[] = [];
    for await (const chunk of it) {
      got.push(chunk.toString());
      read++;
      await new Promise((r) => setTimeout(r, 2)); // a slow reader
      if (read === 40) break;
    }
    assert.deepEqual(got.slice(0, 3), ['tok0', 'tok1', 'tok2']);
    assert.ok(maxAhead <= 9, `the site ran ${maxAhead} chunks ahead of a window of 8`);
    await waitFor('the site heard the reader leave', () => cancelled);
    assert.ok(sent < 60, `the site stopped producing (${sent} sent)`);
    assert.equal(fwd.size, 0);
  });
});
