import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AppSupervisor } from '../src/edge/apps.ts';
import type { AppComponent } from '../src/contracts/app-component.ts';
import { boundStatus } from '../src/edge/status.ts';
import {
  decodePayload,
  envelope,
  PAYLOAD_LIMITS,
  ReportedMessage,
  type DesiredApp,
  type SiteStatusBody,
} from '../src/contracts/messages.ts';
import { EwError } from '../src/contracts/errors.ts';
import { observe, legacyApplyError } from '../src/cloud/rollout/reconcile.ts';
import type { Site } from '../src/cloud/store/store.ts';
import { ManualClock } from '../src/lib/clock.ts';
import { silentLogger } from '../src/lib/logger.ts';

/**
 * What the agent sends about a failed apply is bounded by the limits the cloud checks, and the
 * rollout controller reads it per app, as data.
 */
const clock = new ManualClock(1_700_000_000_000);
const app = (name: string): DesiredApp => ({
  name,
  version: '1.0.0',
  deploymentId: `d-${name}`,
  manifest: { apiVersion: 'edgeweave/v1', kind: 'App', metadata: { name, version: '1.0.0' }, spec: {} } as DesiredApp['manifest'],
});
const base: SiteStatusBody = {
  agentVersion: 't',
  bootId: 'b',
  uptimeS: 1,
  heartbeatIntervalS: 10,
  generation: 1,
  apps: [],
  system: {
    hostname: 'h',
    platform: 'linux',
    arch: 'x64',
    cores: 1,
    memoryTotalBytes: 1,
    memoryFreeBytes: 1,
    diskTotalBytes: 1,
    diskFreeBytes: 1,
    loadAvg1: 0,
  },
  runtimes: [],
  accelerators: [],
  outbox: { pending: 0, dropped: 0 },
  devices: { connected: 0, messagesIn: 0 },
};
/** What the cloud does with a heartbeat: decode the envelope the agent built. */
const cloudReads = (body: SiteStatusBody) =>
  decodePayload(ReportedMessage, Buffer.from(JSON.stringify(envelope('status', body, clock))), 'ew/s/reported');

async function failing(apps: DesiredApp[], failOn: string, message: string): Promise<AppSupervisor> {
  const sup = new AppSupervisor(silentLogger());
  const models: AppComponent = {
    name: 'models',
    async start(a) {
      if (a.name === failOn) throw new EwError('MODEL_LOAD_FAILED', message);
    },
    async update() {},
    async stop() {},
  };
  sup.register(models);
  await sup.apply(1, apps);
  return sup;
}

describe('apply errors: bounded by the agent, read per app by the rollout controller', () => {
  it('an apply error of 5,000 characters does not get the heartbeat refused: each field is cut to its bound', async () => {
    const sup = await failing([app('a'), app('b')], 'a', `boom ${'x'.repeat(5000)}`);
    const raw = { ...base, applyError: sup.error, applyErrors: sup.errors() };
    assert.throws(() => cloudReads(raw), /applyError/, 'unbounded, the cloud would refuse the whole heartbeat');
    const sent = cloudReads(boundStatus(raw));
    assert.equal(sent.type, 'status');
    const body = sent.type === 'status' ? sent.body : undefined;
    assert.ok(body!.applyError!.length <= 2000 && body!.applyError!.includes('…[cut'));
    assert.deepEqual(
      body!.applyErrors!.map(({ message: _m, ...e }) => e),
      [{ app: 'a', version: '1.0.0', component: 'models', code: 'MODEL_LOAD_FAILED' }],
    );
    assert.ok(body!.applyErrors![0]!.message.length <= 2000);
  });

  it('a status over its payload bound sheds detail lists, never the heartbeat', () => {
    const rules = Array.from({ length: 1000 }, (_, i) => ({
      app: 'a',
      rule: `r${i}`,
      state: 'running' as const,
      in: 1,
      out: 1,
      filtered: 0,
      late: 0,
      errors: 0,
      dropped: 0,
      sinkErrors: 0,
      lastOutputAt: null,
      error: 'e'.repeat(300),
    }));
    const sent = boundStatus({ ...base, rules });
    assert.ok(Buffer.byteLength(JSON.stringify(envelope('status', sent, clock))) <= PAYLOAD_LIMITS.reported);
    assert.equal(cloudReads(sent).type, 'status');
  });

  it('control characters in an identifier are dropped instead of refusing the status', () => {
    const sent = boundStatus({ ...base, apps: [{ name: 'ok\u0007app', version: '1' }] });
    assert.deepEqual(cloudReads(sent).type === 'status' && cloudReads(sent).body, { ...base, apps: [{ name: 'okapp', version: '1' }] });
  });

  it("app `guard` is not failed by `my-guard`'s apply error — as data, and from a 1.0 agent's text", async () => {
    const sup = await failing([app('guard'), app('my-guard')], 'my-guard', 'model missing');
    const status = cloudReads(boundStatus({ ...base, applyError: sup.error, applyErrors: sup.errors(), apps: sup.running() }));
    const site = { id: 's', status: status.type === 'status' ? status.body : null } as unknown as Site;
    assert.equal(observe(site, true, 'guard').failed, false);
    assert.equal(observe(site, true, 'guard').healthy, true);
    const mine = observe(site, true, 'my-guard');
    assert.equal(mine.failed, true);
    assert.match(mine.healthReason!, /models: MODEL_LOAD_FAILED: models failed to start: model missing/);
    // A 1.0 agent sent only the text: matched by entry, not by substring.
    const old = { id: 's', status: { ...(site.status as SiteStatusBody), applyErrors: undefined } } as unknown as Site;
    assert.equal(old.status!.applyError, 'my-guard@1.0.0: models failed to start: model missing');
    assert.equal(observe(old, true, 'guard').failed, false);
    assert.equal(observe(old, true, 'my-guard').failed, true);
    assert.equal(legacyApplyError('a@1: x failed; my-guard@2: y; guard@1: z', 'guard'), 'guard@1: z');
  });
});
