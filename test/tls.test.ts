import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startTestCloud, tempDir, waitFor, removeDirs, type TestCloud } from './support/harness.ts';
import { startEdge, type EdgeHandle } from '../src/edge/main.ts';
import { enroll } from '../src/edge/enroll.ts';
import { fetchTrusting } from '../src/lib/fetch.ts';
import { silentLogger } from '../src/lib/logger.ts';
import { isEwError } from '../src/contracts/errors.ts';

/** A private CA and a certificate for 127.0.0.1, made with openssl for this test. */
function makeCerts(dir: string): { ca: string; cert: string; key: string } {
  const f = (n: string) => join(dir, n);
  const run = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '1', '-subj', '/CN=edgeweave test CA');
  run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=127.0.0.1');
  writeFileSync(f('ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  run('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('server.pem'), '-days', '1', '-extfile', f('ext.cnf'));
  return { ca: f('ca.pem'), cert: f('server.pem'), key: f('server.key') };
}

describe('TLS: https API and mqtts hub with a private CA', () => {
  const dir = tempDir('tls');
  const certs = makeCerts(dir);
  let cloud: TestCloud;
  let edge: EdgeHandle | undefined;
  const ca = readFileSync(certs.ca, 'utf8');
  const api = async (method: string, path: string, body?: unknown) => {
    const r = await fetchTrusting(ca)(new URL(path, cloud.url), { method, headers: { authorization: `Bearer ${cloud.adminKey}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
    return (await r.json()) as any;
  };
  before(async () => { cloud = await startTestCloud({ tlsCertFile: certs.cert, tlsKeyFile: certs.key }); });
  after(async () => {
    await edge?.close();
    await cloud?.stop();
    removeDirs(dir);
  });

  it('serves the API over https and hands agents an mqtts URL', async () => {
    assert.match(cloud.url, /^https:\/\//);
    const info = await api('GET', '/api/v1/info');
    assert.match(info.agentMqttUrl, /^mqtts:\/\//);
  });

  it('refuses to enroll over a certificate the agent does not trust', async () => {
    const t = await api('POST', '/api/v1/tokens', {});
    await assert.rejects(enroll({ cloudUrl: cloud.url, token: t.token, dataDir: tempDir('untrusted') }), (e: unknown) => isEwError(e, 'CLOUD_UNREACHABLE'));
  });

  it('enrolls an agent that trusts the CA, which then connects over mqtts and goes online', async () => {
    const t = await api('POST', '/api/v1/tokens', {});
    edge = await startEdge({ dataDir: tempDir('tls-edge'), cloudUrl: cloud.url, token: t.token, caFile: certs.ca, apiPort: 0, devicePort: 0, deviceHost: '127.0.0.1', heartbeatIntervalS: 1, log: silentLogger() });
    await waitFor('online over mqtts', async () => (await api('GET', `/api/v1/sites/${edge!.siteId}`)).state === 'online');
    assert.equal(edge.linkState(), 'connected');
  });
});
