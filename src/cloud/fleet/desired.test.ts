import { it } from 'node:test';
import assert from 'node:assert/strict';
import { desiredPayload } from './desired.ts';
import { DesiredState, envelope, type DesiredApp } from '../../contracts/messages.ts';
import { ManualClock } from '../../lib/clock.ts';

it('splices the shared apps JSON into the envelope byte for byte as JSON.stringify would, and it parses', () => {
  const apps: DesiredApp[] = [
    {
      name: 'app',
      version: '1.0.0',
      deploymentId: 'dep-$&-1',
      manifest: {
        apiVersion: 'edgeweave/v1',
        kind: 'App',
        metadata: { name: 'app', version: '1.0.0' },
        spec: {},
      } as DesiredApp['manifest'],
    },
  ];
  const clock = new ManualClock(123);
  for (const ack of [{}, { uplinkAck: true }]) {
    const whole = JSON.stringify(envelope('desired', { siteId: 'site-1', generation: 7, apps, ...ack }, clock, 'id-1'));
    const built = desiredPayload(
      envelope('desired', { siteId: 'site-1', generation: 7, apps: [], ...ack }, clock, 'id-1'),
      JSON.stringify(apps),
    );
    assert.equal(built, whole);
    assert.equal(DesiredState.safeParse(JSON.parse(built)).success, true);
  }
});
