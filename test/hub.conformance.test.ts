import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import type { Hub } from '../src/cloud/hub/hub.ts';
import { EmbeddedHub } from '../src/cloud/hub/embedded.ts';
import { ExternalHub } from '../src/cloud/hub/external.ts';
import { silentLogger } from '../src/lib/logger.ts';
import { topics } from '../src/contracts/topics.ts';
import { waitFor } from './support/harness.ts';
import { mosquittoAvailable, MOSQUITTO_URL } from './support/mosquitto.ts';

/**
 * One behaviour suite for both Hub implementations: the embedded aedes hub and an external
 * broker (the Mosquitto at 127.0.0.1:1883 in CI).
 */
interface HubFixture {
  hub: Hub;
  /** Connects as a site; `clean: false` so unacknowledged messages are resent on reconnect. */
  site(siteId: string, extra?: mqtt.IClientOptions): Promise<MqttClient>;
}

function runHubConformance(name: string, make: () => Promise<HubFixture>, skip?: string): void {
  describe(`Hub conformance: ${name}`, { skip }, () => {
    let fx: HubFixture;
    const seen: { topic: string; payload: string }[] = [];
    const failOnce = new Set<string>();
    const clients: MqttClient[] = [];
    const siteId = `site-${randomBytes(4).toString('hex')}`;

    before(async () => {
      fx = await make();
      await fx.hub.start(async (topic, payload) => {
        const p = payload.toString();
        if (failOnce.has(p)) {
          failOnce.delete(p);
          throw new Error('simulated store failure');
        }
        seen.push({ topic, payload: p });
      });
    });
    after(async () => {
      for (const c of clients) c.end(true);
      // Leave no retained message behind on a shared broker.
      await fx?.hub.publish(topics.desired(siteId), '', { retain: true });
      await fx?.hub.close();
    });

    it('delivers a retained desired state to a site that subscribes later', async () => {
      await fx.hub.publish(topics.desired(siteId), '{"gen":1}', { retain: true });
      const c = await fx.site(siteId);
      clients.push(c);
      const got = new Promise<string>((r) => c.on('message', (_t, m) => r(m.toString())));
      await c.subscribeAsync(topics.desired(siteId), { qos: 1 });
      assert.equal(await got, '{"gen":1}');
    });

    it("clears every retained message under a site's topics (revocation)", async () => {
      await fx.hub.publish(topics.desired(siteId), '{"gen":9}', { retain: true });
      await fx.hub.publish(topics.rpcRequest(siteId, 'left-over'), '{"x":1}', { retain: true });
      assert.equal(await fx.hub.clearRetained(siteId), 2);
      // A clean session: what a persistent one had queued is not retained state.
      const c = await fx.site(siteId, { clean: true });
      clients.push(c);
      const retained: string[] = [];
      const marker = topics.rpcRequest(siteId, `marker-${randomBytes(3).toString('hex')}`);
      const done = new Promise<void>((r) =>
        c.on('message', (t, m, pkt) => {
          if (t === marker) r();
          else if (pkt.retain && m.length) retained.push(t);
        }),
      );
      await c.subscribeAsync([topics.desired(siteId), topics.rpcRequests(siteId)], { qos: 1 });
      await fx.hub.publish(marker, '{}');
      await done;
      assert.deepEqual(retained, []);
      c.removeAllListeners('message');
    });

    it("hands a site's uplink to the handler before the site's PUBACK", async () => {
      const c = await fx.site(siteId);
      clients.push(c);
      await c.publishAsync(topics.up(siteId, 'alerts'), 'first', { qos: 1 });
      if (fx.hub.kind === 'embedded') {
        // Embedded: the PUBACK itself waits for the handler.
        assert.ok(seen.some((s) => s.payload === 'first'));
      }
      await waitFor('handler saw it', () => seen.some((s) => s.topic === topics.up(siteId, 'alerts') && s.payload === 'first'));
    });

    it('delivers again a message whose handler failed', async () => {
      const c = await fx.site(siteId);
      clients.push(c);
      failOnce.add('retry-me');
      c.publish(topics.up(siteId, 'alerts'), 'retry-me', { qos: 1 });
      if (fx.hub.kind === 'embedded') {
        // The embedded hub stores before it acknowledges: no PUBACK, so the site's client resends.
        await waitFor('redelivered after the failure', () => seen.some((s) => s.payload === 'retry-me'), 20_000);
      } else {
        // The external hub's session is clean (no result may wait in a dead replica's session):
        // what failed is not redelivered by the broker; the agent resends it because no store
        // acknowledgement (ew/{site}/ack) came, as this client does here. The hub must have
        // recovered its connection and take the resent message.
        await waitFor('the failure seen', () => failOnce.size === 0, 20_000);
        await waitFor(
          'the resent message stored',
          async () => {
            if (!seen.some((s) => s.payload === 'retry-me')) await c.publishAsync(topics.up(siteId, 'alerts'), 'retry-me', { qos: 1 });
            return seen.some((s) => s.payload === 'retry-me');
          },
          20_000,
          500,
        );
      }
      assert.equal(failOnce.size, 0);
    });

    it('receives status on the reported topic', async () => {
      const c = await fx.site(siteId);
      clients.push(c);
      await c.publishAsync(topics.reported(siteId), '{"status":1}', { qos: 1 });
      await waitFor('status', () => seen.some((s) => s.topic === topics.reported(siteId)));
    });
  });
}

const connectSite = (url: string, siteId: string, extra: mqtt.IClientOptions) =>
  mqtt.connectAsync(url, { clientId: siteId, clean: false, reconnectPeriod: 100, ...extra });

runHubConformance('embedded (aedes)', async () => {
  const secret = 'ews_test_secret';
  const hub = new EmbeddedHub({ port: 0, host: '127.0.0.1', log: silentLogger(), auth: { verify: async (_id, s) => s === secret } });
  return {
    hub,
    site: (siteId, extra = {}) => connectSite(hub.agentUrl, siteId, { username: siteId, password: secret, protocolVersion: 4, ...extra }),
  };
});

const mosq = await mosquittoAvailable();
runHubConformance(
  'external (Mosquitto)',
  async () => {
    const hub = new ExternalHub({
      url: MOSQUITTO_URL,
      clientId: `ew-cloud-test-${randomBytes(4).toString('hex')}`,
      shareGroup: `g${randomBytes(4).toString('hex')}`,
      log: silentLogger(),
    });
    return { hub, site: (siteId, extra = {}) => connectSite(MOSQUITTO_URL, siteId, { protocolVersion: 5, ...extra }) };
  },
  mosq,
);

describe('external hub: catching up after a reconnect', { skip: mosq }, () => {
  it('calls onReconnected once its replica topics are subscribed again, so nothing told after it is missed', async () => {
    const replicaTopic = `ew/_cloud/t${randomBytes(4).toString('hex')}/revoked`;
    let reconnected = 0;
    const hub = new ExternalHub({
      url: MOSQUITTO_URL,
      clientId: `ew-cloud-test-${randomBytes(4).toString('hex')}`,
      shareGroup: `g${randomBytes(4).toString('hex')}`,
      log: silentLogger(),
      replicaTopics: [replicaTopic],
      onReconnected: async () => {
        reconnected++;
      },
    });
    const seen: string[] = [];
    await hub.start(async (topic, payload) => {
      if (topic === replicaTopic) seen.push(payload.toString());
    });
    const other = await mqtt.connectAsync(MOSQUITTO_URL, { protocolVersion: 5, reconnectPeriod: 0 });
    try {
      assert.equal(reconnected, 0, 'not at the first connection');
      (hub as unknown as { client: MqttClient }).client.stream.destroy();
      await waitFor('caught up after the reconnect', () => reconnected === 1, 20_000);
      await other.publishAsync(replicaTopic, 'told-after', { qos: 1 });
      await waitFor('the replica topic is live again', () => seen.includes('told-after'), 20_000);
    } finally {
      await other.endAsync();
      await hub.close();
    }
  });
});
