import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface CliProcess {
  child: ChildProcess;
  /** The first `{"event":"ready"…}` line on stdout. */
  ready: Promise<Record<string, any>>;
  /** Resolves with the exit code (or signal name). */
  exited: Promise<number | string>;
  stderr(): string;
  stdoutLines: Record<string, any>[];
}

/** Runs `edgeweave <args>` as a real child process, the way a user would. */
export function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}): CliProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    cwd: ROOT,
    env: { ...process.env, EW_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d) => {
    err += d.toString();
    if (err.length > 200_000) err = err.slice(-100_000);
  });
  const stdoutLines: Record<string, any>[] = [];
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, sig) => resolve(code ?? sig ?? -1)));
  const ready = new Promise<Record<string, any>>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      try {
        const obj = JSON.parse(line);
        stdoutLines.push(obj);
        if (obj.event === 'ready') resolve(obj);
      } catch {
        /* not a JSON line */
      }
    });
    void exited.then((code) => reject(new Error(`edgeweave ${args[0]} exited (${code}) before it was ready:\n${err.slice(-3000)}`)));
  });
  ready.catch(() => {});
  return { child, ready, exited, stderr: () => err, stdoutLines };
}
