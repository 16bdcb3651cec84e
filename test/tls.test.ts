import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import mqtt from 'mqtt';
import { makeCerts } from './support/certs.ts';
import { startTestCloud, tempDir, waitFor, removeDirs, type TestCloud } from './support/harness.ts';
import { startEdge, type EdgeHandle } from '../src/edge/main.ts';
import { enroll } from '../src/edge/enroll.ts';
import { fetchTrusting } from '../src/lib/fetch.ts';
import { silentLogger } from '../src/lib/logger.ts';
import { isEwError } from '../src/contracts/errors.ts';

describe('TLS: https API and mqtts hub with a private CA', () => {
  const dir = tempDir('tls');
  const certs = makeCerts(dir);
  let cloud: TestCloud;
  let edge: EdgeHandle | undefined;
  const ca = readFileSync(certs.ca, 'utf8');
  const api = async (method: string, path: string, body?: unknown) => {
    const r = await fetchTrusting(ca)(new URL(path, cloud.url), {
      method,
      headers: { authorization: `Bearer ${cloud.adminKey}`, 'content-type': 'application/json' },
      body: body ? JSON.stringify(body) : undefined,
    });
    return (await r.json()) as any;
  };
  before(async () => {
    cloud = await startTestCloud({ tlsCertFile: certs.cert, tlsKeyFile: certs.key });
  });
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
    await assert.rejects(enroll({ cloudUrl: cloud.url, token: t.token, dataDir: tempDir('untrusted') }), (e: unknown) =>
      isEwError(e, 'CLOUD_UNREACHABLE'),
    );
  });

  it('enrolls an agent that trusts the CA, which then connects over mqtts and goes online', async () => {
    const t = await api('POST', '/api/v1/tokens', {});
    edge = await startEdge({
      dataDir: tempDir('tls-edge'),
      cloudUrl: cloud.url,
      token: t.token,
      caFile: certs.ca,
      apiPort: 0,
      devicePort: 0,
      deviceHost: '127.0.0.1',
      heartbeatIntervalS: 1,
      log: silentLogger(),
    });
    await waitFor('online over mqtts', async () => (await api('GET', `/api/v1/sites/${edge!.siteId}`)).state === 'online');
    assert.equal(edge.linkState(), 'connected');
  });

  it("serves the site's devices over mqtts when given a certificate", async () => {
    const pw = 'device-secret-0123456789';
    const pwFile = `${tempDir('pw')}/pw`;
    writeFileSync(pwFile, pw);
    const t = await api('POST', '/api/v1/tokens', {});
    const site = await startEdge({
      dataDir: tempDir('tls-dev'),
      cloudUrl: cloud.url,
      token: t.token,
      caFile: certs.ca,
      apiPort: 0,
      devicePort: 0,
      deviceHost: '127.0.0.1',
      deviceTlsCertFile: certs.cert,
      deviceTlsKeyFile: certs.key,
      devicePasswordFile: pwFile,
      log: silentLogger(),
    });
    try {
      assert.match(site.deviceUrl, /^mqtts:\/\//);
      const dev = await mqtt.connectAsync(site.deviceUrl, { username: 'device', password: pw, ca: ca, reconnectPeriod: 0 });
      await dev.publishAsync('plant/x/y', '{}', { qos: 1 });
      await dev.endAsync();
      await assert.rejects(
        mqtt.connectAsync(site.deviceUrl, { username: 'device', password: pw, reconnectPeriod: 0, connectTimeout: 3000 }),
        /certificate|self[- ]signed|unable to verify/i,
      );
    } finally {
      await site.close();
    }
  });
});
