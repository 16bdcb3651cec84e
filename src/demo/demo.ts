import { createServer } from 'node:net';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, createWriteStream } from 'node:fs';
import { join, resolve } from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { newSecret } from '../lib/secrets.ts';
import { DeviceSimulator } from '../sim/simulator.ts';
import { seeded } from '../lib/random.ts';
import { cellKpiProfile, trafficProfile, vibrationProfile, type Profile } from '../sim/profiles.ts';
import { EwError, isEwError } from '../contracts/errors.ts';
import { ApiClient } from '../cli/client.ts';
import { DeviceCreated, DeviceList } from '../cloud/api/schemas.ts';
import { loadBundle, pushBundle } from '../cli/bundle.ts';
import { MachineModel, ModbusMachineSim, OpcuaMachineSim, pointAtSimulators } from '../sim/industrial.ts';
import { quietOpcua } from '../edge/sources/opcua-quiet.ts';
import { ensureTemplateAssistant } from '../inference/gguf/tiny-qwen.ts';

/**
 * `edgeweave demo`: a cloud and three edge sites as separate processes with their own data
 * dirs, plus device simulators. It goes through the same doors a user does: the cloud's admin
 * key file, join tokens from the API (in a file, `edgeweave edge --token-file`), apps pushed and
 * deployed with the API, each simulated device with its own credentials on its site. Ports are chosen once and kept in `demo.json`, so a second run resumes the fleet.
 */
/**
 * A demo site runs either one of the partner templates (templates/NAME, pushed the way
 * `edgeweave app push` pushes a bundle) or an app written here.
 */
interface SiteSpec {
  name: string;
  region: string;
  labels: Record<string, string>;
  profile: () => Profile;
  template?: string;
  app?: Record<string, unknown>;
}

export const DEMO_SITES: SiteSpec[] = [
  {
    name: 'city-hangzhou-01',
    region: 'cn-east',
    labels: { city: 'hangzhou', kind: 'intersection', industry: 'smart-city' },
    profile: () => trafficProfile(),
    template: 'smart-city-traffic',
  },
  {
    name: 'factory-ningbo-02',
    region: 'cn-south',
    labels: { industry: 'manufacturing', plant: 'ningbo-2' },
    profile: () => vibrationProfile(),
    template: 'predictive-maintenance',
  },
  {
    name: 'telco-edge-fra-03',
    region: 'eu-central',
    labels: { industry: 'telco', tier: 'far-edge' },
    profile: () => cellKpiProfile(),
    app: {
      apiVersion: 'edgeweave/v1',
      kind: 'App',
      metadata: { name: 'cell-kpi-watch', version: '1.0.0', description: 'Radio cell load and latency' },
      spec: {
        streams: [
          {
            name: 'kpi',
            topic: 'telco/+/kpi',
            format: 'json',
            timestamp: 'ts',
            schema: { cellId: 'string', prbUtil: 'float', activeUes: 'int', throughputMbps: 'float', latencyMs: 'float', ts: 'timestamp' },
          },
        ],
        rules: [
          {
            name: 'kpi-summary',
            sql: "SELECT cellId, round(avg(prbUtil), 3) AS prbUtil, round(percentile(latencyMs, 0.95), 2) AS latencyP95, max(activeUes) AS peakUes, CASE WHEN avg(prbUtil) > 0.8 THEN 'hot' ELSE 'ok' END AS load FROM kpi GROUP BY cellId, TUMBLINGWINDOW(ss, 20)",
            sinks: [{ uplink: 'kpi-summary' }],
            options: { lateness: 2000 },
          },
        ],
        policy: { egress: { allow: ['kpi-summary'] } },
      },
    },
  },
];

interface DemoState {
  cloudPort: number;
  mqttPort: number;
  opcuaPort?: number;
  modbusPort?: number;
  sites: Record<string, { apiPort: number; devicePort: number }>;
}

/**
 * The factory's machine on a PLC: one machine model behind a real OPC UA server and a real Modbus
 * TCP server (src/sim/industrial.ts). Its bearing wears over the first five minutes; the
 * template's PLC variant (edgeweave.plc.yaml) deployed to the factory site then lowers the
 * spindle setpoint until the anomaly score falls.
 */
const PLC_VARIANT = {
  template: 'predictive-maintenance',
  manifest: 'edgeweave.plc.yaml',
  site: 'factory-ningbo-02',
  selector: { plant: 'ningbo-2' },
};

/** True when nothing listens on the port (so the demo can take it). */
async function portFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createServer();
    s.once('error', () => res(false));
    s.listen(port, '127.0.0.1', () => s.close(() => res(true)));
  });
}

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => res(p));
    });
  });
}

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/**
 * The children run as the demo itself does: compiled (dist/cli/main.js, from `npm start` or
 * `npx edgeweave`) when it is compiled — faster to start and lighter, about 110 vs 140 MB per idle
 * agent under tsx — and through tsx only when the demo itself runs from the TypeScript sources (tests, development).
 */
const CHILD = import.meta.url.endsWith('.ts')
  ? ['--import', 'tsx', fileURLToPath(new URL('../cli/main.ts', import.meta.url))]
  : [fileURLToPath(new URL('../cli/main.js', import.meta.url))];

interface Child {
  name: string;
  proc: ChildProcess;
  ready: Promise<Record<string, any>>;
  exited: Promise<number | string>;
}

function launch(name: string, args: string[], logFile: string): Child {
  const proc = spawn(process.execPath, [...CHILD, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env } });
  const log = createWriteStream(logFile, { flags: 'a' });
  proc.stderr!.pipe(log);
  const exited = new Promise<number | string>((r) => proc.on('exit', (c, s) => r(c ?? s ?? -1)));
  const ready = new Promise<Record<string, any>>((res, rej) => {
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      try {
        const o = JSON.parse(line);
        if (o.event === 'ready') res(o);
      } catch {
        /* other output */
      }
    });
    void exited.then((c) =>
      rej(
        new EwError(
          'INTERNAL',
          `${name} exited (${c}) before it was ready; see ${logFile} (a port kept in demo.json may be taken now: run with --fresh to start over)`,
        ),
      ),
    );
  });
  ready.catch(() => {});
  return { name, proc, ready, exited };
}

export async function runDemo(o: { dataDir: string; port: number; fresh: boolean }): Promise<void> {
  const dir = resolve(o.dataDir);
  if (o.fresh) rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'logs'), { recursive: true, mode: 0o700 });

  // Ports are fixed at the first run: enrolled agents keep the cloud's MQTT URL.
  const stateFile = join(dir, 'demo.json');
  let state: DemoState;
  if (existsSync(stateFile)) {
    state = JSON.parse(readFileSync(stateFile, 'utf8')) as DemoState;
  } else {
    let cloudPort = o.port;
    if (!cloudPort || !(await portFree(cloudPort))) {
      const picked = await freePort();
      if (cloudPort) process.stderr.write(`port ${cloudPort} is taken; the demo cloud uses ${picked} instead (choose with --port)\n`);
      cloudPort = picked;
    }
    state = { cloudPort, mqttPort: await freePort(), opcuaPort: await freePort(), modbusPort: await freePort(), sites: {} };
    for (const s of DEMO_SITES) state.sites[s.name] = { apiPort: await freePort(), devicePort: await freePort() };
    writeFileSync(stateFile, JSON.stringify(state, null, 2));
  }

  const keyFile = join(dir, 'admin.key');
  if (!existsSync(keyFile)) writeFileSync(keyFile, newSecret('ewk'), { mode: 0o600 });
  const adminKey = readFileSync(keyFile, 'utf8').trim();

  // Ports of the PLC simulators are kept too: the pushed app names their endpoints.
  if (!state.opcuaPort || !state.modbusPort) {
    state.opcuaPort = await freePort();
    state.modbusPort = await freePort();
    writeFileSync(stateFile, JSON.stringify(state, null, 2));
  }

  const children: Child[] = [];
  const sims: { stop(): Promise<void> }[] = [];
  let stopping = false;
  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write('\nstopping the demo…\n');
    await Promise.all(sims.map((s) => s.stop().catch(() => {})));
    // Sites first (they say goodbye to the cloud), then the cloud.
    const stop = async (c: Child) => {
      c.proc.kill('SIGTERM');
      const t = setTimeout(() => c.proc.kill('SIGKILL'), 10_000);
      await c.exited;
      clearTimeout(t);
    };
    await Promise.all(children.filter((c) => c.name !== 'cloud').map(stop));
    const cloud = children.find((c) => c.name === 'cloud');
    if (cloud) await stop(cloud);
    process.stderr.write('demo stopped.\n');
    process.exit(code);
  };
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));

  try {
    // The PLC: node-opcua logs to stdout, which carries the demo's ready line: it goes to a file.
    const plcLog = createWriteStream(join(dir, 'logs', 'plc-simulators.log'), { flags: 'a' });
    quietOpcua((level, msg) => plcLog.write(`${JSON.stringify({ time: Date.now(), level, msg })}\n`));
    const machine = new MachineModel();
    const opc = new OpcuaMachineSim({ model: machine, pkiDir: join(dir, 'plc-pki'), port: state.opcuaPort, tickMs: 200 });
    const mb = new ModbusMachineSim({ model: machine, port: state.modbusPort, tickMs: 200 });
    await Promise.all([opc.start(), mb.start()]);
    sims.push(opc, mb);
    const wearStart = Date.now();
    const wear = setInterval(() => {
      machine.wear = Math.min(0.8, ((Date.now() - wearStart) / 300_000) * 0.8);
    }, 1000);
    wear.unref();

    const cloud = launch(
      'cloud',
      [
        'cloud',
        '--data-dir',
        join(dir, 'cloud'),
        '--host',
        '127.0.0.1',
        '--port',
        String(state.cloudPort),
        '--mqtt-host',
        '127.0.0.1',
        '--mqtt-port',
        String(state.mqttPort),
        '--admin-key-file',
        keyFile,
      ],
      join(dir, 'logs', 'cloud.log'),
    );
    children.push(cloud);
    const { url } = await cloud.ready;

    // Apps: templates pushed like `edgeweave app push` (models uploaded first), the rest
    // directly; an existing version (409, from an earlier run) is fine. Then one deployment each.
    const client = new ApiClient({ cloud: url, apiKey: adminKey });
    const existing = (await client.api('GET /api/v1/deployments')).items;
    // The factory's operator assistant: the tiny TEST Qwen unless a real GGUF was put there.
    ensureTemplateAssistant();
    for (const s of DEMO_SITES) {
      const bundle = s.template ? await loadBundle(join(ROOT, 'templates', s.template)) : undefined;
      const manifest = bundle ? bundle.raw : s.app!;
      const meta = manifest.metadata as { name: string; version: string };
      try {
        if (bundle) await pushBundle(client, bundle);
        else await client.api('POST /api/v1/apps', { body: { manifest } });
      } catch (e) {
        if (!isEwError(e, 'APP_VERSION_EXISTS')) throw e;
      }
      if (existing.some((d) => d.app === meta.name && d.version === meta.version)) continue;
      const [k, v] = Object.entries(s.labels)[0]!;
      await client.api('POST /api/v1/deployments', { body: { app: meta.name, version: meta.version, selector: { [k]: v } } });
    }
    // The factory also runs the PLC variant, reading the simulators above.
    {
      const b = await loadBundle(join(ROOT, 'templates', PLC_VARIANT.template), { manifest: PLC_VARIANT.manifest });
      b.raw = pointAtSimulators(b.raw, { opcua: opc.endpoint, modbus: mb.endpoint });
      const meta = b.raw.metadata as { name: string; version: string };
      try {
        await pushBundle(client, b);
      } catch (e) {
        if (!isEwError(e, 'APP_VERSION_EXISTS')) throw e;
      }
      if (!existing.some((d) => d.app === meta.name && d.version === meta.version)) {
        await client.api('POST /api/v1/deployments', { body: { app: meta.name, version: meta.version, selector: PLC_VARIANT.selector } });
      }
    }

    const sites = await Promise.all(
      DEMO_SITES.map(async (s) => {
        const sdir = join(dir, 'sites', s.name);
        mkdirSync(sdir, { recursive: true, mode: 0o700 });
        const keyF = join(sdir, 'api.key');
        if (!existsSync(keyF)) writeFileSync(keyF, newSecret('ewl'), { mode: 0o600 });
        const args = [
          'edge',
          '--data-dir',
          sdir,
          '--name',
          s.name,
          '--api-port',
          String(state.sites[s.name]!.apiPort),
          '--device-host',
          '127.0.0.1',
          '--device-port',
          String(state.sites[s.name]!.devicePort),
          '--api-key-file',
          keyF,
        ];
        if (!existsSync(join(sdir, 'credentials.json'))) {
          const tok = await client.api('POST /api/v1/tokens', {
            body: { labels: s.labels, region: s.region, description: `demo site ${s.name}` },
          });
          // In a 0600 file, not on the command line (where ps shows it); removed once enrolled.
          const tokFile = join(sdir, 'join.token');
          writeFileSync(tokFile, tok.token, { mode: 0o600 });
          args.push('--cloud', url, '--token-file', tokFile);
        }
        const child = launch(s.name, args, join(dir, 'logs', `${s.name}.log`));
        children.push(child);
        const r = await child.ready;
        rmSync(join(sdir, 'join.token'), { force: true });
        // Each simulated device gets its own credentials, granted only its own topic, as real ones should.
        const creds = await deviceCredentials(
          new ApiClient({ cloud: r.apiUrl as string, apiKey: readFileSync(keyF, 'utf8').trim() }),
          s.profile(),
          join(sdir, 'devices.json'),
        );
        const sim = new DeviceSimulator({
          url: r.deviceUrl,
          credentials: (d) => ({ username: d, password: creds[d]!, clientId: d }),
          profile: s.profile(),
          seed: s.name.length,
        });
        await sim.start();
        sims.push(sim);
        return {
          name: s.name,
          siteId: r.siteId as string,
          region: s.region,
          labels: s.labels,
          apiUrl: r.apiUrl as string,
          deviceUrl: r.deviceUrl as string,
          simulator: s.profile().name,
        };
      }),
    );

    process.stderr.write(
      [
        '',
        'Edgeweave demo is running.',
        '',
        `  Web console    ${url}/   (sign in with the admin API key)`,
        `  Cloud API      ${url}   (OpenAPI: ${url}/openapi.json)`,
        `  Admin API key  ${adminKey}`,
        '',
        ...sites.map(
          (s) => `  ${s.name.padEnd(20)} ${s.siteId}  region ${s.region.padEnd(10)} devices ${s.deviceUrl}  (${s.simulator} simulator)`,
        ),
        `  PLC (factory)        OPC UA ${opc.endpoint}  Modbus ${mb.endpoint}  (vibration-guard-plc lowers the setpoint as the bearing wears)`,
        '',
        `  Try:  curl -H "authorization: Bearer ${adminKey}" ${url}/api/v1/sites`,
        `  Logs: ${join(dir, 'logs')}`,
        '',
        'Ctrl-C stops everything.',
        '',
      ].join('\n'),
    );
    process.stdout.write(
      `${JSON.stringify({ event: 'ready', role: 'demo', url, adminKey, sites, plc: { opcua: opc.endpoint, modbus: mb.endpoint } })}\n`,
    );
  } catch (e) {
    process.stderr.write(`demo failed to start: ${(e as Error).message}\n`);
    await stopAll(1);
  }
  // Any process dying unexpectedly takes the demo down, loudly, rather than half-running.
  for (const c of children) {
    void c.exited.then((code) => {
      if (!stopping) {
        process.stderr.write(`${c.name} exited unexpectedly (${code}); see ${join(dir, 'logs', `${c.name}.log`)}\n`);
        void stopAll(1);
      }
    });
  }
  await new Promise(() => {}); // until a signal
}

/**
 * The simulated devices' own credentials on a demo site: registered once through the site's local
 * API (publish granted on the device's own topic only), secrets kept in a 0600 file next to the
 * site's state so a restarted demo reuses them.
 */
async function deviceCredentials(site: ApiClient, profile: Profile, file: string): Promise<Record<string, string>> {
  const kept: Record<string, string> = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>) : {};
  const registered = new Set((await site.parsed(DeviceList, 'GET', '/api/v1/devices')).items.map((d) => d.id));
  for (const device of profile.devices) {
    if (kept[device] && registered.has(device)) continue;
    if (registered.has(device)) await site.call('DELETE', `/api/v1/devices/${encodeURIComponent(device)}`);
    const topic = profile.reading(device, 0, seeded(1)).topic;
    const d = await site.parsed(DeviceCreated, 'POST', '/api/v1/devices', {
      id: device,
      publish: [topic],
      description: `${profile.name} simulator`,
    });
    kept[device] = d.secret;
  }
  writeFileSync(file, JSON.stringify(kept), { mode: 0o600 });
  return kept;
}
