import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { tempDir, removeDirs } from './harness.ts';

/** Whether `nats-server` is on PATH (in CI it must be). */
export function natsAvailable(): string | undefined {
  try {
    execFileSync('nats-server', ['--version'], { stdio: 'ignore' });
    return undefined;
  } catch (e) {
    if (process.env.CI) throw new Error(`nats-server is required in CI: ${(e as Error).message}`);
    return 'nats-server is not on PATH';
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface NatsServer {
  mqttUrl: string;
  stop(): Promise<void>;
}

/**
 * Our own nats-server with JetStream (its MQTT server keeps sessions and retained messages
 * there) and MQTT on free loopback ports, in a temporary directory removed at stop.
 */
export async function startNats(): Promise<NatsServer> {
  const dir = tempDir('nats');
  const [client, mqtt] = [await freePort(), await freePort()];
  const conf = join(dir, 'nats.conf');
  writeFileSync(
    conf,
    `listen: 127.0.0.1:${client}\nserver_name: ew-test-${client}\njetstream { store_dir: "${join(dir, 'js')}" }\nmqtt { listen: 127.0.0.1:${mqtt} }\n`,
  );
  const child: ChildProcess = spawn('nats-server', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  await new Promise<void>((resolve, reject) => {
    child.stderr!.on('data', (d) => {
      log += d.toString();
      if (log.length > 100_000) log = log.slice(-50_000);
      if (log.includes('Server is ready')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`nats-server exited (${code}) before it was ready:\n${log.slice(-2000)}`)));
  });
  return {
    mqttUrl: `mqtt://127.0.0.1:${mqtt}`,
    async stop() {
      if (child.exitCode === null) {
        const gone = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await gone;
      }
      removeDirs(dir);
    },
  };
}
