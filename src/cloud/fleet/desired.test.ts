import { it } from 'node:test';
import assert from 'node:assert/strict';
import { desiredPayload } from './desired.ts';
import { DesiredState, ENVELOPE_VERSION, type DesiredApp } from '../../contracts/messages.ts';

it('builds the desired-state JSON byte for byte as JSON.stringify would, and it parses', () => {
  const apps: DesiredApp[] = [{ name: 'app', version: '1.0.0', deploymentId: 'dep-1', manifest: { apiVersion: 'edgeweave/v1', kind: 'App', metadata: { name: 'app', version: '1.0.0' }, spec: {} } as DesiredApp['manifest'] }];
  for (const ack of [false, true]) {
    const obj = { v: ENVELOPE_VERSION, id: 'id-"1', ts: 123, type: 'desired', body: { siteId: 'site-1', generation: 7, apps, ...(ack ? { uplinkAck: true } : {}) } };
    const built = desiredPayload('id-"1', 123, 'site-1', 7, JSON.stringify(apps), ack ? ',"uplinkAck":true' : '');
    assert.equal(built, JSON.stringify(obj));
    assert.equal(DesiredState.safeParse(JSON.parse(built)).success, true);
  }
});
