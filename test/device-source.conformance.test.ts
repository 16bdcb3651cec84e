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
function runDeviceSourceConformance(name: string, make: () => { source: DeviceSource; device: () => Promise<MqttClient> }, skip?: string): void {
  describe(`DeviceSource conformance: ${name}`, { skip }, () => {
    let fx: ReturnType<typeof make>;
    let dev: MqttClient;
    const got: DeviceMessage[] = [];
    const root = `plant-${randomBytes(3).toString('hex')}`;
    before(async () => {
      fx = make();
      fx.source.onMessage((m) => got.push(m));
      await fx.source.setFilters([`${root}/+/vibration`]);
      await fx.source.start();
      dev = await fx.device();
    });
    after(async () => {
      await dev?.endAsync();
      await fx?.source.close();
    });

    it('delivers device messages on the streams\' topics', async () => {
      await dev.publishAsync(`${root}/m1/vibration`, '{"rms":1}', { qos: 1 });
      await waitFor('message', () => got.some((m) => m.topic === `${root}/m1/vibration` && m.payload.toString() === '{"rms":1}'));
      assert.ok(fx.source.stats.messagesIn >= 1);
    });

    it('follows filter changes', async () => {
      await fx.source.setFilters([`${root}/+/vibration`, `${root}/+/temp`]);
      await dev.publishAsync(`${root}/m2/temp`, '{"c":40}', { qos: 1 });
      await waitFor('new filter', () => got.some((m) => m.topic === `${root}/m2/temp`));
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
  return { source, device: () => mqtt.connectAsync(source.url, { username: 'device', password, reconnectPeriod: 0 }) };
});

const skip = await mosquittoAvailable();
runDeviceSourceConformance('external (Mosquitto)', () => ({
  source: new ExternalDeviceSource({ url: MOSQUITTO_URL, clientId: `ew-dev-${randomBytes(4).toString('hex')}`, log: silentLogger() }),
  device: () => mqtt.connectAsync(MOSQUITTO_URL, { reconnectPeriod: 0 }),
}), skip);
