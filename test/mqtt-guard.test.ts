import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect as tcpConnect, type Socket } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import mqtt, { type MqttClient } from 'mqtt';
import { EmbeddedHub } from '../src/cloud/hub/embedded.ts';
import { DeviceBroker } from '../src/edge/devices.ts';
import { MqttPacketMeter, type MqttGuard, type MqttLimits } from '../src/lib/mqtt-guard.ts';
import { TokenBuckets } from '../src/lib/rate-limit.ts';
import { ManualClock } from '../src/lib/clock.ts';
import { silentLogger } from '../src/lib/logger.ts';
import { waitFor } from './support/harness.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
/** Live JS heap plus Buffer memory, after a full collection. */
function memory(): number {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}
const MB = 1024 * 1024;

/** The MQTT remaining-length varint (MQTT 3.1.1 §2.2.3). */
function remainingLength(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}

describe('MqttPacketMeter (pure, byte by byte)', () => {
  it('reports each packet at its header and skips bodies without keeping them', () => {
    const seen: [number, number][] = [];
    const m = new MqttPacketMeter();
    // CONNECT with a 3-byte body, PINGREQ (no body), PUBLISH announcing 200 bytes.
    const bytes = [0x10, 3, 1, 2, 3, 0xc0, 0, 0x30, ...remainingLength(200)];
    for (const b of bytes)
      assert.equal(
        m.feed(Uint8Array.of(b), (t, size) => {
          seen.push([t, size]);
          return undefined;
        }),
        undefined,
      );
    assert.deepEqual(seen, [
      [1, 5],
      [12, 2],
      [3, 203],
    ]);
  });

  it('stops at the header of a 260 MB CONNECT, before any of its body', () => {
    const m = new MqttPacketMeter();
    const header = Uint8Array.from([0x10, ...remainingLength(260_000_000)]);
    let announced = 0;
    const v = m.feed(header, (_t, size) => {
      announced = size;
      return size > 65_536 ? 'too big' : undefined;
    });
    assert.equal(v, 'too big');
    assert.equal(announced, 260_000_000 + header.length);
  });

  it('reads the topic of each PUBLISH, byte by byte, and keeps none of the body', () => {
    const topic = Buffer.from('ew/site-a/rpc/res/42');
    const body = Buffer.alloc(300, 7);
    const remaining = 2 + topic.length + body.length;
    const packet = Buffer.concat([
      Buffer.from([0x30, ...remainingLength(remaining), topic.length >> 8, topic.length & 255]),
      topic,
      body,
      Buffer.from([0xc0, 0]),
    ]);
    for (const step of [1, 3, packet.length]) {
      const m = new MqttPacketMeter();
      const seen: [string, number][] = [];
      const headers: number[] = [];
      for (let i = 0; i < packet.length; i += step) {
        assert.equal(
          m.feed(
            packet.subarray(i, i + step),
            (t) => {
              headers.push(t);
              return undefined;
            },
            (tp, size) => {
              seen.push([tp, size]);
              return undefined;
            },
          ),
          undefined,
        );
      }
      assert.deepEqual(seen, [['ew/site-a/rpc/res/42', 1 + remainingLength(remaining).length + remaining]], `chunks of ${step}`);
      assert.deepEqual(headers, [3, 12], 'the PINGREQ after it is read as a packet: the body was skipped exactly');
    }
    const m = new MqttPacketMeter();
    assert.equal(
      m.feed(
        packet,
        () => undefined,
        (tp) => (tp.includes('/rpc/') ? 'no' : undefined),
      ),
      'no',
    );
  });

  it('refuses a remaining length longer than four bytes', () => {
    assert.equal(
      new MqttPacketMeter().feed(Uint8Array.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x01]), () => undefined),
      'malformed remaining length',
    );
  });
});

describe('TokenBuckets (pure, injected clock)', () => {
  it('spends a burst, refills at its rate and says when to retry', () => {
    const clock = new ManualClock(0);
    const b = new TokenBuckets({ capacity: 3, refillPerSecond: 2, maxKeys: 10, clock });
    assert.deepEqual(
      [1, 2, 3, 4].map(() => b.take('a').ok),
      [true, true, true, false],
    );
    assert.equal(b.take('a').retryAfterMs, 500);
    assert.equal(b.take('other').ok, true, 'keys are independent');
    clock.advance(500);
    assert.equal(b.take('a').ok, true);
    assert.equal(b.take('a').ok, false);
  });

  it('forgets the least recently used key past maxKeys: 200,000 invented keys stay bounded in memory', () => {
    const clock = new ManualClock(0);
    const b = new TokenBuckets({ capacity: 5, refillPerSecond: 1, maxKeys: 1000, clock });
    const before = memory();
    for (let i = 0; i < 200_000; i++) b.take(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`);
    assert.equal(b.size, 1000);
    assert.ok(memory() - before < 2 * MB, `memory grew by ${((memory() - before) / MB).toFixed(1)} MB`);
  });
});

interface Target {
  port: number;
  guard: MqttGuard;
  verifyCalls: () => number;
  /** Credentials that authenticate, and a topic they may publish to. */
  good: { clientId: string; username: string; password: string; topic: string };
  close(): Promise<void>;
}

/** The same attacks against both aedes listeners. */
const targets: Record<string, (limits: Partial<MqttLimits>, clock: ManualClock) => Promise<Target>> = {
  'cloud embedded hub': async (limits, clock) => {
    let calls = 0;
    const hub = new EmbeddedHub({
      port: 0,
      host: '0.0.0.0',
      log: silentLogger(),
      limits,
      clock,
      auth: {
        verify: async (id, secret) => {
          calls++;
          return id === 'site-a' && secret === 'secret-a';
        },
      },
    });
    await hub.start(async () => {});
    return {
      port: hub.port,
      guard: hub.guard,
      verifyCalls: () => calls,
      good: { clientId: 'site-a', username: 'site-a', password: 'secret-a', topic: 'ew/site-a/up/s' },
      close: () => hub.close(),
    };
  },
  'site device broker': async (limits, clock) => {
    let calls = 0;
    const broker = new DeviceBroker({
      port: 0,
      host: '0.0.0.0',
      log: silentLogger(),
      limits,
      clock,
      verify: (u, p) => {
        calls++;
        return u === 'device' && p === 'device-pw';
      },
    });
    await broker.start();
    return {
      port: broker.port,
      guard: broker.guard,
      verifyCalls: () => calls,
      good: { clientId: 'dev-1', username: 'device', password: 'device-pw', topic: 'factory/a' },
      close: () => broker.close(),
    };
  },
};

function raw(port: number, localAddress = '127.0.0.1'): Promise<Socket & { ended: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const s = tcpConnect({ port, host: '127.0.0.1', localAddress }) as Socket & { ended: Promise<void> };
    s.ended = new Promise((r) => s.once('close', () => r()));
    s.on('error', () => {});
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

function mqttConnect(port: number, o: { clientId: string; username: string; password: string }): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { ...o, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000 });
    c.once('connect', () => resolve(c));
    c.once('error', (e) => {
      c.end(true);
      reject(e);
    });
    c.once('close', () => reject(new Error('closed before CONNACK')));
  });
}

/** Streams zeros until the peer closes (or `cap` bytes went out); returns what was written. */
async function streamZeros(s: Socket & { ended: Promise<void> }, cap: number): Promise<number> {
  const chunk = Buffer.alloc(64 * 1024);
  let sent = 0;
  let closed = false;
  void s.ended.then(() => {
    closed = true;
  });
  while (!closed && sent < cap) {
    const ok = s.write(chunk);
    sent += chunk.length;
    if (!ok) await Promise.race([new Promise((r) => s.once('drain', r)), s.ended]);
  }
  return sent;
}

const open: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of open) await c().catch(() => {});
});

for (const [name, start] of Object.entries(targets)) {
  describe(`MQTT guard on the ${name}`, () => {
    it('closes ten 260 MB CONNECTs at their header: memory stays flat, nothing is buffered', async () => {
      const clock = new ManualClock(0);
      const t = await start({}, clock);
      open.push(t.close);
      const before = memory();
      const socks = await Promise.all(Array.from({ length: 10 }, () => raw(t.port)));
      const sent = await Promise.all(
        socks.map(async (s) => {
          s.write(Buffer.from([0x10, ...remainingLength(260_000_000)]));
          return streamZeros(s, 64 * MB);
        }),
      );
      await Promise.all(socks.map((s) => s.ended));
      const grown = memory() - before;
      // Unguarded, aedes kept every byte of each packet (the issue measured ~145 MB per connection).
      assert.ok(
        sent.every((n) => n < 64 * MB),
        `the broker must cut the connection (sent ${sent.map((n) => (n / MB).toFixed(1)).join(', ')} MB)`,
      );
      assert.ok(grown < 8 * MB, `memory grew by ${(grown / MB).toFixed(1)} MB`);
      assert.equal(t.guard.refused['pre-auth-bytes'], 10);
      await t.close();
    });

    it('cuts an authenticated client that sends a packet over maxPacketBytes, and serves the next one', async () => {
      const t = await start({ maxPacketBytes: 256 * 1024 }, new ManualClock(0));
      open.push(t.close);
      const c = await mqttConnect(t.port, t.good);
      const closed = new Promise<void>((r) => c.once('close', () => r()));
      c.publish(t.good.topic, Buffer.alloc(2 * MB, 1), { qos: 1 });
      await closed;
      c.end(true);
      assert.equal(t.guard.refused['packet-size'], 1);
      const c2 = await mqttConnect(t.port, t.good);
      await c2.publishAsync(t.good.topic, Buffer.alloc(100 * 1024, 1), { qos: 1 });
      if (name === 'cloud embedded hub') {
        // A routed inference answer may be larger: the hub judges it by its topic.
        await c2.publishAsync('ew/site-a/rpc/res/r1', Buffer.concat([Buffer.from('EWF1'), Buffer.alloc(2 * MB)]), { qos: 1 });
        assert.equal(t.guard.refused['packet-size'], 1);
      }
      c2.end(true);
      await t.close();
    });

    it('closes a connection that has not authenticated within connectTimeoutMs (clock driven)', async () => {
      const clock = new ManualClock(0);
      const t = await start({ connectTimeoutMs: 5000 }, clock);
      open.push(t.close);
      const idle = await raw(t.port);
      const half = await raw(t.port);
      half.write(Buffer.from([0x10, 40, 0, 4])); // a CONNECT that never finishes
      await waitFor('both accepted', () => t.guard.pending === 2);
      clock.advance(4999);
      assert.equal(t.guard.pending, 2, 'still within the deadline');
      clock.advance(1);
      await Promise.all([idle.ended, half.ended]);
      assert.equal(t.guard.refused['connect-timeout'], 2);
      await waitFor('released', () => t.guard.pending === 0);
      await t.close();
    });

    it('caps unauthenticated connections per address and in all', async () => {
      const t = await start({ maxPendingPerAddress: 3, maxPendingConnections: 5 }, new ManualClock(0));
      open.push(t.close);
      const held = await Promise.all([1, 1, 1].map(() => raw(t.port)));
      await waitFor('three pending', () => t.guard.pending === 3);
      const fourth = await raw(t.port);
      await fourth.ended;
      assert.equal(t.guard.refused['pending-address'], 1);
      held.push(await raw(t.port, '127.0.0.2'), await raw(t.port, '127.0.0.2'));
      await waitFor('five pending', () => t.guard.pending === 5);
      const sixth = await raw(t.port, '127.0.0.3');
      await sixth.ended;
      assert.equal(t.guard.refused['pending-total'], 1);
      // An authenticated client is no longer pending: it does not count against the cap.
      for (const s of held) s.destroy();
      await waitFor('released', () => t.guard.pending === 0);
      const c = await mqttConnect(t.port, t.good);
      assert.equal(t.guard.pending, 0);
      c.end(true);
      await t.close();
    });

    it('limits the connection rate per address (clock driven)', async () => {
      const clock = new ManualClock(0);
      const t = await start({ connectBurst: 3, connectPerSecond: 1 }, clock);
      open.push(t.close);
      for (let i = 0; i < 3; i++) (await mqttConnect(t.port, { ...t.good, clientId: `${t.good.clientId}` })).end(true);
      await assert.rejects(mqttConnect(t.port, t.good));
      assert.equal(t.guard.refused['connect-rate'], 1);
      clock.advance(1000);
      (await mqttConnect(t.port, t.good)).end(true);
      await t.close();
    });

    it('throttles bad passwords per address: after the burst, logins are refused unchecked (clock driven)', async () => {
      const clock = new ManualClock(0);
      const t = await start({ authFailBurst: 3, authFailPerMinute: 6 }, clock);
      open.push(t.close);
      for (let i = 0; i < 20; i++)
        await assert.rejects(mqttConnect(t.port, { ...t.good, password: `wrong-${i}` }), /Bad username or password|Not authorized/i);
      assert.equal(t.verifyCalls(), 3, 'only the burst reached the password check');
      assert.equal(t.guard.refused['auth-throttled'], 17);
      await assert.rejects(
        mqttConnect(t.port, t.good),
        /Not authorized/i,
        'the address is locked out for now, even with the right password',
      );
      clock.advance(10_000); // 6 per minute: one more try
      (await mqttConnect(t.port, t.good)).end(true);
      assert.equal(t.verifyCalls(), 4);
      await t.close();
    });
  });
}
