/**
 * bench:agent — what an idle agent costs: one real `edgeweave edge`, enrolled with a real cloud
 * (a separate process) and connected, with no app. Prints its RSS, V8 heap and the native
 * modules (.node files) mapped into it, compiled (dist/, how it ships) and from the sources
 * through tsx, after it has settled (BENCH_SETTLE_S, default 5 s after the cloud sees it online).
 * BENCH_MODULES=1 also lists the packages the compiled agent loaded; BENCH_HEAPSNAPSHOT=file.heapsnapshot
 * has each agent write a heap snapshot there (open it in Chrome DevTools' Memory tab).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { newSecret } from '../src/lib/secrets.ts';

// BENCH_ROOT: measure another checkout (built, with node_modules), e.g. the commit before a change.
const ROOT = process.env.BENCH_ROOT ?? fileURLToPath(new URL('..', import.meta.url));
const SETTLE_S = Number(process.env.BENCH_SETTLE_S ?? 5);

// The compiled agent, brought up to date (another BENCH_ROOT without the script: built already).
if (existsSync(join(ROOT, 'scripts/build-server.mjs'))) {
  const build = spawnSync(process.execPath, [join(ROOT, 'scripts/build-server.mjs')], { cwd: ROOT, stdio: 'inherit' });
  if (build.status !== 0) throw new Error('npm run build:cli failed');
}

interface Proc {
  proc: ChildProcess;
  ready: Record<string, any>;
  stderr: () => string;
}

function start(node: string[], args: string[], env: NodeJS.ProcessEnv = {}): Promise<Proc> {
  const proc = spawn(process.execPath, [...node, ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, EW_LOG_LEVEL: 'warn', ...env },
  });
  let err = '';
  proc.stderr!.on('data', (d) => {
    err = (err + d).slice(-200_000);
  });
  return new Promise((resolve, reject) => {
    createInterface({ input: proc.stdout! }).on('line', (l) => {
      try {
        const o = JSON.parse(l);
        if (o.event === 'ready') resolve({ proc, ready: o, stderr: () => err });
      } catch {
        /* other output */
      }
    });
    proc.on('exit', (c) => reject(new Error(`${args[0]} exited ${c}: ${err.slice(-3000)}`)));
  });
}

const COMPILED = [join(ROOT, 'dist/cli/main.js')];
const TSX = ['--import', 'tsx', join(ROOT, 'src/cli/main.ts')];

function rssMb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
}
/** The native addons mapped into the process, by file name. */
function nativeModules(pid: number): string[] {
  const maps = readFileSync(`/proc/${pid}/maps`, 'utf8');
  return [...new Set([...maps.matchAll(/\s(\/\S+\.node)$/gm)].map((m) => m[1]!.replace(/^.*node_modules\//, '')))].sort();
}

async function idleAgent(
  key: string,
  cloudUrl: string,
  node: string[],
  dir: string,
  traceModules: boolean,
): Promise<{
  rss: number;
  rssAfterGc: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  native: string[];
  packages: string[];
}> {
  const tok = (await (
    await fetch(`${cloudUrl}/api/v1/tokens`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: '{}',
    })
  ).json()) as { token: string };
  writeFileSync(join(dir, 'join.token'), tok.token, { mode: 0o600 });
  const trace = traceModules
    ? [
        '--import',
        `data:text/javascript,${encodeURIComponent(`import { register } from 'node:module'; register('data:text/javascript,' + encodeURIComponent('export async function load(u, c, n) { if (u.includes("/node_modules/")) process.stderr.write("LOADED " + u + "\\\\n"); return n(u, c); }'));`)}`,
      ]
    : [];
  // On SIGUSR2 the agent writes its memory use after a full GC (for the heap/external columns).
  const probe = [
    '--expose-gc',
    '--import',
    `data:text/javascript,${encodeURIComponent("process.on('SIGUSR2', async () => { globalThis.gc(); process.stderr.write('MEMORY ' + JSON.stringify(process.memoryUsage()) + '\\n'); if (process.env.BENCH_HEAPSNAPSHOT) { (await import('node:v8')).writeHeapSnapshot(process.env.BENCH_HEAPSNAPSHOT); process.stderr.write('SNAPSHOT written\\n'); } });")}`,
  ];
  const agent = await start(
    [...(process.env.BENCH_NODE_FLAGS?.split(' ').filter(Boolean) ?? []), ...probe, ...trace, ...node],
    [
      'edge',
      '--data-dir',
      join(dir, 'e'),
      '--cloud',
      cloudUrl,
      '--token-file',
      join(dir, 'join.token'),
      '--api-port',
      '0',
      '--device-port',
      '0',
      '--device-host',
      '127.0.0.1',
    ],
  );
  try {
    // Online at the cloud (its first heartbeat arrived), then left to settle.
    for (let i = 0; ; i++) {
      const s = (await (
        await fetch(`${cloudUrl}/api/v1/sites/${agent.ready.siteId}`, { headers: { authorization: `Bearer ${key}` } })
      ).json()) as { state: string };
      if (s.state === 'online') break;
      if (i > 600) throw new Error('the agent never came online');
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((r) => setTimeout(r, SETTLE_S * 1000));
    const rss = rssMb(agent.proc.pid!);
    const native = nativeModules(agent.proc.pid!);
    agent.proc.kill('SIGUSR2');
    let mem: NodeJS.MemoryUsage | undefined;
    for (let i = 0; i < 100 && !mem; i++) {
      const m = /^MEMORY (\{.*\})$/m.exec(agent.stderr());
      if (m) mem = JSON.parse(m[1]!) as NodeJS.MemoryUsage;
      else await new Promise((r) => setTimeout(r, 50));
    }
    for (let i = 0; i < 1200 && process.env.BENCH_HEAPSNAPSHOT && !agent.stderr().includes('SNAPSHOT written'); i++)
      await new Promise((r) => setTimeout(r, 50));
    const packages = [...new Set([...agent.stderr().matchAll(/^LOADED \S*node_modules\/((?:@[^/]+\/)?[^/]+)/gm)].map((m) => m[1]!))].sort();
    return {
      rss,
      rssAfterGc: (mem?.rss ?? NaN) / 2 ** 20,
      heapUsed: (mem?.heapUsed ?? NaN) / 2 ** 20,
      heapTotal: (mem?.heapTotal ?? NaN) / 2 ** 20,
      external: (mem?.external ?? NaN) / 2 ** 20,
      native,
      packages,
    };
  } finally {
    agent.proc.kill('SIGKILL');
  }
}

const dir = mkdtempSync(join(tmpdir(), 'ew-bench-agent-'));
const key = newSecret('ewk');
writeFileSync(join(dir, 'admin.key'), key, { mode: 0o600 });
const cloud = await start(COMPILED, [
  'cloud',
  '--data-dir',
  join(dir, 'c'),
  '--host',
  '127.0.0.1',
  '--port',
  '0',
  '--mqtt-host',
  '127.0.0.1',
  '--mqtt-port',
  '0',
  '--admin-key-file',
  join(dir, 'admin.key'),
  '--no-console',
]);
try {
  console.log(`bench:agent — an idle agent (enrolled, connected, no app), ${SETTLE_S} s after it came online\n`);
  console.log('| how | RSS MB | RSS after a full GC | V8 heap used MB (after GC) | heap total MB | external MB | native modules loaded |');
  console.log('| --- | --- | --- | --- | --- | --- | --- |');
  for (const [how, node] of [
    ['compiled', COMPILED],
    ['tsx', TSX],
  ] as const) {
    const d = mkdtempSync(join(dir, `${how}-`));
    if (process.env.BENCH_HEAPSNAPSHOT && how === 'tsx') break; // the compiled agent's snapshot is the one that matters
    const r = await idleAgent(key, cloud.ready.url, node, d, how === 'compiled' && process.env.BENCH_MODULES === '1');
    console.log(
      `| ${how} | ${r.rss.toFixed(1)} | ${r.rssAfterGc.toFixed(1)} | ${r.heapUsed.toFixed(1)} | ${r.heapTotal.toFixed(1)} | ${r.external.toFixed(1)} | ${r.native.join(', ') || '(none)'} |`,
    );
    if (r.packages.length) console.log(`\npackages the compiled agent loaded: ${r.packages.join(', ')}\n`);
  }
} finally {
  cloud.proc.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}
process.exit(0);
