import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { spawnCli } from './support/proc.ts';
import { startTestCloud, startTestEdge, tempDir, waitFor, removeDirs, type TestCloud, type TestEdge } from './support/harness.ts';

/** The partner's path, with the real `edgeweave` command against a real cloud and agents. */
describe('partner CLI end to end: init → validate → push → deploy → results', () => {
  let cloud: TestCloud;
  let plant: TestEdge;
  const dir = tempDir('partner');
  const env = () => ({ EDGEWEAVE_CONFIG: join(dir, 'config.json'), EW_CLOUD: '', EW_API_KEY: '' });
  const cli = async (args: string[]) => {
    const p = spawnCli(args, env());
    const code = await p.exited;
    return { code, out: p.stdoutLines, err: p.stderr() };
  };
  /** JSON output: the whole of stdout parsed. */
  const json = async (args: string[]) => {
    const p = spawnCli([...args, '-o', 'json'], env());
    let text = '';
    p.child.stdout!.on('data', (d) => {
      text += d;
    });
    const code = await p.exited;
    assert.equal(code, 0, p.stderr());
    return JSON.parse(text);
  };

  before(async () => {
    cloud = await startTestCloud();
    plant = await startTestEdge(cloud, { labels: { industry: 'manufacturing' } });
  });
  after(async () => {
    await plant?.stop();
    await cloud?.stop();
    removeDirs(dir);
  });

  it('logs in and keeps the key in a 0600 file', async () => {
    const bad = await cli(['login', '--cloud', cloud.url, '--api-key', 'ewk_wrong_key_000000000000000000000000000']);
    assert.equal(bad.code, 3);
    assert.match(bad.err, /error UNAUTHENTICATED/);
    const ok = await cli(['login', '--cloud', cloud.url, '--api-key', cloud.adminKey]);
    assert.equal(ok.code, 0, ok.err);
    assert.equal(statSync(join(dir, 'config.json')).mode & 0o777, 0o600);
    assert.equal(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).apiKey, cloud.adminKey);
  });

  it('creates an app named as asked from a template and points at file:line:col when it is broken', async () => {
    const app = join(dir, 'my-guard');
    assert.equal((await cli(['app', 'init', app, '--template', 'predictive-maintenance'])).code, 0);
    // The app is named after its directory, in every manifest of the template, comments kept.
    const plc = readFileSync(join(app, 'edgeweave.plc.yaml'), 'utf8');
    assert.match(plc, /^# The PLC variant/);
    assert.match(plc, /^ {2}name: my-guard-plc$/m);
    assert.match(readFileSync(join(app, 'edgeweave.yaml'), 'utf8'), /^ {2}name: my-guard$/m);
    const badName = await cli(['app', 'init', join(dir, 'My_Guard')]);
    assert.equal(badName.code, 2);
    assert.match(badName.err, /error CONFIG_INVALID: "My_Guard" cannot name an app: use lower-case letters/);
    const sqlFile = join(app, 'rules', 'anomalies.sql');
    const good = readFileSync(sqlFile, 'utf8');
    writeFileSync(sqlFile, good.replace('avg(rms)', 'avg(rsm)'));
    const bad = await cli(['app', 'validate', app]);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /error SQL_INVALID: .*rules\/anomalies\.sql:3:18: stream vibration has no field "rsm"; did you mean rms\?/);
    writeFileSync(sqlFile, good);
    const v = await json(['app', 'validate', app]);
    assert.equal(v.app, 'my-guard');
    assert.equal(v.models[0].name, 'vib-ae');
  });

  it('pushes (uploading the model), lists and refuses a second push of the same version', async () => {
    const app = join(dir, 'my-guard');
    const pushed = await json(['app', 'push', app]);
    assert.equal(pushed.name, 'my-guard');
    assert.equal(pushed.manifest.spec.models[0].sha256.length, 64);
    assert.ok(!('sqlFile' in pushed.manifest.spec.rules[0]), 'SQL files are inlined into the pushed manifest');
    const again = await cli(['app', 'push', app]);
    assert.equal(again.code, 2);
    assert.match(again.err, /APP_VERSION_EXISTS/);
    const list = await json(['app', 'list']);
    assert.deepEqual(
      list.map((a: any) => `${a.name}@${a.version}`),
      ['my-guard@1.0.0'],
    );
  });

  it("deploys with a canary, waits for the rollout, and the rule's results arrive", async () => {
    const r = await json([
      'deploy',
      'my-guard@1.0.0',
      '--to',
      'industry=manufacturing',
      '--strategy',
      'canary',
      '--canary',
      '50%',
      '--bake',
      '1s',
      '--max-error-rate',
      '0.5',
      '--wait',
    ]);
    assert.equal(r.phase, 'succeeded', JSON.stringify(r));
    const status = await json(['rollout', 'status', r.id]);
    assert.equal(status.sites[plant.handle.siteId].phase, 'updated');
    const sites = await json(['sites', 'list']);
    assert.equal(sites[0].status.apps[0].version, '1.0.0');
    // A failing machine, through the site's broker, to an alert at the cloud.
    const dev = await mqtt.connectAsync(plant.handle.deviceUrl, { username: 'device', password: plant.devicePassword, reconnectPeriod: 0 });
    const t0 = Date.UTC(2026, 10, 29, 10);
    await dev.publishAsync(
      'factory/m7/vibration',
      JSON.stringify({ machineId: 'm7', rms: 1.6, kurtosis: 9, peakHz: 150, temperature: 60, ts: t0 }),
      { qos: 1 },
    );
    await dev.publishAsync(
      'factory/m7/vibration',
      JSON.stringify({ machineId: 'm7', rms: 1.0, kurtosis: 3, peakHz: 120, temperature: 40, ts: t0 + 11_000 }),
      { qos: 1 },
    );
    await dev.endAsync();
    // The alert carries the template's operator assistant (a language model on the site): allow for it on a loaded machine.
    const alerts = await waitFor(
      'an alert via the CLI',
      async () => {
        const a = await json(['results', 'alerts']);
        return a.length ? a : undefined;
      },
      60_000,
      250,
    );
    assert.equal(alerts[0].data.machineId, 'm7');
    assert.ok(alerts[0].data.score > 0.8);
  });

  it('creates a join token with the install command, and exits with usable codes', async () => {
    const t = await json(['tokens', 'create', '--labels', 'city=hangzhou', '--region', 'cn-east', '--ttl', '1h']);
    assert.match(t.installCommand, /^EW_JOIN_TOKEN=ewj_\S+ npx edgeweave edge --cloud /);
    assert.doesNotMatch(t.installCommand, /--token/, 'never on the command line');
    assert.deepEqual(t.labels, { city: 'hangzhou' });
    assert.equal((await cli(['deploy', 'nope@1.0.0', '--to', 'a=b'])).code, 1);
    assert.equal((await cli(['deploy', 'not-a-ref', '--to', 'a=b'])).code, 2);
  });

  it('finds what was deployed without the HTTP API: deploy prints the id, deployments list|show, rollout by app@version', async () => {
    const [dep] = await json(['deployments', 'list']);
    assert.equal(dep.app, 'my-guard');
    assert.equal(dep.version, '1.0.0');
    assert.equal(dep.phase, 'succeeded');
    assert.deepEqual(dep.selector, { industry: 'manufacturing' });
    // The same submission again answers the same deployment; its table names it.
    const p = spawnCli(
      [
        'deploy',
        'my-guard@1.0.0',
        '--to',
        'industry=manufacturing',
        '--strategy',
        'canary',
        '--canary',
        '50%',
        '--bake',
        '1s',
        '--max-error-rate',
        '0.5',
      ],
      env(),
    );
    let text = '';
    p.child.stdout!.on('data', (d) => {
      text += d;
    });
    assert.equal(await p.exited, 0, p.stderr());
    assert.match(text, new RegExp(`^deployment ${dep.id}$`, 'm'));
    const table = await cli(['deployments', 'list']);
    assert.equal(table.code, 0, table.err);
    const shown = await json(['deployments', 'show', 'my-guard@1.0.0']);
    assert.equal(shown.id, dep.id);
    assert.equal(shown.rollout.sites[plant.handle.siteId].phase, 'updated');
    assert.equal((await json(['deployments', 'show', dep.id])).id, dep.id);
    assert.equal((await json(['rollout', 'status', 'my-guard@1.0.0'])).id, dep.id);
    // Steering by app@version reaches the controller (a finished rollout cannot be paused)…
    const pause = await cli(['rollout', 'pause', 'my-guard@1.0.0']);
    assert.equal(pause.code, 1);
    assert.match(pause.err, /error ROLLOUT_STATE: cannot pause/);
    // …and a version never deployed is named in a clear error that says where to look.
    const none = await cli(['rollout', 'status', 'my-guard@9.9.9']);
    assert.equal(none.code, 1);
    assert.match(none.err, /error DEPLOYMENT_NOT_FOUND: my-guard@9\.9\.9 has no deployment; .*edgeweave deployments list/);
    const undone = await json(['rollout', 'undo', 'my-guard@1.0.0']);
    assert.equal(undone.id, dep.id);
    assert.notEqual(undone.phase, 'succeeded');
  });
});
