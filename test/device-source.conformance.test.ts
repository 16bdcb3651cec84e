import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import { DeviceBroker, type DeviceMessage, type DeviceSource } from '../src/edge/devices.ts';
import { ExternalDeviceSource } from '../src/edge/external-devices.ts';
import { silentLogger } from '../src/lib/logger.ts';
import { waitFor } from './support/harness.ts';
import { mosquittoAvailable, MOSQUITTO_URL } from './support/mosquitto.ts';

/** One behaviour suite for both device sources: the embedded broker and an external one (Mosquitto). */
function runDeviceSourceConformance(
  name: string,
  make: () => { source: DeviceSource; device: (reconnect?: boolean) => Promise<MqttClient> },
  skip?: string,
): void {
  describe(`DeviceSource conformance: ${name}`, { skip }, () => {
    let fx: ReturnType<typeof make>;
    let dev: MqttClient;
    const got: DeviceMessage[] = [];
    const root = `plant-${randomBytes(3).toString('hex')}`;
    // The site's intake (journal commit); a test may make it refuse.
    let intake: (m: DeviceMessage) => Promise<void> = async () => {};
    before(async () => {
      fx = make();
      fx.source.onMessage((m) => got.push(m));
      fx.source.setIntake((m) => intake(m));
      await fx.source.setFilters([`${root}/+/vibration`]);
      await fx.source.start();
      dev = await fx.device();
    });
    after(async () => {
      await dev?.endAsync();
      await fx?.source.close();
    });

    it("delivers device messages on the streams' topics", async () => {
      await dev.publishAsync(`${root}/m1/vibration`, '{"rms":1}', { qos: 1 });
      await waitFor('message', () => got.some((m) => m.topic === `${root}/m1/vibration` && m.payload.toString() === '{"rms":1}'));
      assert.ok(fx.source.stats.messagesIn >= 1);
    });

    it('follows filter changes', async () => {
      await fx.source.setFilters([`${root}/+/vibration`, `${root}/+/temp`]);
      await dev.publishAsync(`${root}/m2/temp`, '{"c":40}', { qos: 1 });
      await waitFor('new filter', () => got.some((m) => m.topic === `${root}/m2/temp`));
    });

    it('acknowledges a record only once the intake made it durable: one it refuses comes again', async () => {
      const offered: string[] = [];
      let refuse = 1;
      intake = async (m) => {
        if (m.topic !== `${root}/m9/vibration`) return;
        offered.push(m.payload.toString());
        if (refuse-- > 0) throw new Error('disk full (test)');
      };
      try {
        // A device that resends what was not acknowledged, as QoS 1 devices do after a reconnect.
        const resender = await fx.device(true);
        resender.on('error', () => {});
        let acked = false;
        resender.publish(`${root}/m9/vibration`, '{"rms":9}', { qos: 1 }, (err) => {
          if (!err) acked = true;
        });
        await waitFor('offered again after the refusal', () => offered.length >= 2, 15_000);
        assert.deepEqual(offered.slice(0, 2), ['{"rms":9}', '{"rms":9}']);
        if (name.startsWith('embedded')) await waitFor('PUBACK once accepted', () => acked, 15_000);
        await resender.endAsync();
      } finally {
        intake = async () => {};
      }
    });

    it('publishes results for local consumers', async () => {
      const seen: string[] = [];
      const listener = await fx.device();
      listener.on('message', (t, p) => seen.push(`${t} ${p}`));
      await listener.subscribeAsync(`${root}/alerts`, { qos: 0 });
      fx.source.publish(`${root}/alerts`, '{"alert":1}');
      await waitFor('local publish', () => seen.includes(`${root}/alerts {"alert":1}`));
      await listener.endAsync();
    });
  });
}

const password = 'device-secret-for-tests';
runDeviceSourceConformance('embedded (aedes)', () => {
  const source = new DeviceBroker({ port: 0, host: '127.0.0.1', log: silentLogger(), verify: (u, p) => u === 'device' && p === password });
  return {
    source,
    device: (reconnect = false) => mqtt.connectAsync(source.url, { username: 'device', password, reconnectPeriod: reconnect ? 100 : 0 }),
  };
});

const skip = await mosquittoAvailable();
runDeviceSourceConformance(
  'external (Mosquitto)',
  () => ({
    source: new ExternalDeviceSource({ url: MOSQUITTO_URL, clientId: `ew-dev-${randomBytes(4).toString('hex')}`, log: silentLogger() }),
    device: (reconnect = false) => mqtt.connectAsync(MOSQUITTO_URL, { reconnectPeriod: reconnect ? 100 : 0 }),
  }),
  skip,
);
