/**
 * bench:cli — how fast `edgeweave` starts: `--version`, `--help` and `sites list` (against a real
 * cloud, in this process), each run BENCH_RUNS times (default 15) as a fresh process, compiled
 * (bin/edgeweave.js → dist/) and from the sources through tsx (how the CLI ran before it shipped
 * compiled), with `node -e 0` as the baseline measured in the same run: a command can start no
 * faster than node itself. Prints wall-clock min / median (the machine is shared: min is the
 * best estimate of the uncontended cost) and the CPU the child used (from /proc, so other load
 * does not count), per command.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTestCloud } from '../test/support/harness.ts';

// BENCH_ROOT: measure another checkout (built, with node_modules), e.g. the commit before a change.
const ROOT = process.env.BENCH_ROOT ?? fileURLToPath(new URL('..', import.meta.url));
const RUNS = Number(process.env.BENCH_RUNS ?? 15);

// The compiled CLI, brought up to date (incremental: quick when nothing changed).
if (existsSync(join(ROOT, 'scripts/build-server.mjs'))) {
  const build = spawnSync(process.execPath, [join(ROOT, 'scripts/build-server.mjs')], { cwd: ROOT, stdio: 'inherit' });
  if (build.status !== 0) throw new Error('npm run build:cli failed');
}

/** CPU time of this process's waited-for children so far (ms), from /proc/self/stat (cutime + cstime). */
function childCpuMs(): number {
  const f = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[13]) + Number(f[14])) * 10; // USER_HZ = 100
}

function once(argv: string[], env: NodeJS.ProcessEnv): Promise<{ ms: number; cpuMs: number; code: number | null; out: string }> {
  return new Promise((resolve) => {
    const cpu0 = childCpuMs();
    const t0 = process.hrtime.bigint();
    const p = spawn(process.execPath, argv, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.stderr.on('data', (d) => {
      out += d;
    });
    p.on('exit', (code) => resolve({ ms: Number(process.hrtime.bigint() - t0) / 1e6, cpuMs: childCpuMs() - cpu0, code, out }));
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function measure(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<{ min: number; median: number; cpu: number }> {
  const ms: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const r = await once(argv, env);
    if (r.code !== 0) throw new Error(`${argv.join(' ')} exited ${r.code}:\n${r.out}`);
    ms.push(r.ms);
    cpu.push(r.cpuMs);
  }
  return { min: Math.min(...ms), median: median(ms), cpu: cpu.reduce((a, b) => a + b, 0) / cpu.length };
}

const cloud = await startTestCloud();
try {
  const env = { EW_CLOUD: cloud.url, EW_API_KEY: cloud.adminKey, EDGEWEAVE_CONFIG: join(ROOT, '.tmp', 'bench-cli-none.json') };
  const commands: [string, string[]][] = [
    ['--version', ['--version']],
    ['--help', ['--help']],
    ['sites list', ['sites', 'list']],
  ];
  const fmt = (x: number) => x.toFixed(0).padStart(6);
  console.log(`edgeweave start-up, ${RUNS} runs each (ms; cpu = the child's user+system time)\n`);
  console.log('| command | how | min ms | median ms | cpu ms |');
  console.log('| --- | --- | --- | --- | --- |');
  const base = await measure(['-e', '0']);
  console.log(`| (node -e 0) | baseline | ${fmt(base.min)} | ${fmt(base.median)} | ${fmt(base.cpu)} |`);
  for (const [name, args] of commands) {
    const compiled = await measure([join(ROOT, 'dist/cli/main.js'), ...args], env);
    const tsx = await measure(['--import', 'tsx', join(ROOT, 'src/cli/main.ts'), ...args], env);
    console.log(`| ${name} | compiled | ${fmt(compiled.min)} | ${fmt(compiled.median)} | ${fmt(compiled.cpu)} |`);
    console.log(`| ${name} | tsx | ${fmt(tsx.min)} | ${fmt(tsx.median)} | ${fmt(tsx.cpu)} |`);
    console.log(
      `|  | compiled over node | ${fmt(compiled.min - base.min)} | ${fmt(compiled.median - base.median)} | ${fmt(compiled.cpu - base.cpu)} |`,
    );
  }
} finally {
  await cloud.stop();
}
