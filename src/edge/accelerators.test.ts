import { it } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { acceleratorInfo, acceleratorNames, readAcceleratorSources } from './accelerators.ts';
import { acceleratorsOf, siteSnapshot } from '../cloud/router/catalog.ts';
import { SiteStatusBody } from '../contracts/messages.ts';

// No GPU on this machine: the reporting is tested on fixture trees of /proc and /sys.
const fixture = (name: string) => fileURLToPath(new URL(`../../test/fixtures/accelerators/${name}/`, import.meta.url));

it('reports an NVIDIA GPU from the driver, an AMD card from DRM, CPU SIMD features, and which runtime can use each', () => {
  const src = readAcceleratorSources(fixture('gpu-host'), { arch: 'x64', cores: 112 });
  const info = acceleratorInfo({
    ...src,
    onnxBackends: [
      { name: 'cpu', bundled: true },
      { name: 'cuda', bundled: false },
    ],
    llamaBuilds: ['linux-x64', 'linux-x64-cuda', 'linux-x64-vulkan'],
  });
  assert.deepEqual(info.cpu, {
    model: 'Intel(R) Xeon(R) Platinum 8480+',
    arch: 'x64',
    cores: 112,
    features: [
      'sse4_2',
      'avx',
      'avx2',
      'fma',
      'f16c',
      'avx512f',
      'avx512bw',
      'avx512_vnni',
      'avx512_bf16',
      'amx_tile',
      'amx_int8',
      'amx_bf16',
    ],
  });
  assert.deepEqual(info.gpus, [
    {
      vendor: 'nvidia',
      index: 0,
      name: 'NVIDIA H100 80GB HBM3',
      driver: '550.54.15',
      usableBy: ['node-llama-cpp:cuda', 'node-llama-cpp:vulkan'],
    },
    { vendor: 'amd', index: 0, name: 'AMD GPU 0x744c', usableBy: ['node-llama-cpp:vulkan'] },
  ]);
  assert.deepEqual(info.onnxProviders, ['cpu'], 'the npm build of ONNX Runtime bundles no CUDA provider');
  assert.deepEqual(acceleratorNames(info), ['nvidia:0', 'amd:0']);
  const withOrtCuda = acceleratorInfo({ ...src, onnxBackends: [{ name: 'cuda', bundled: true }], llamaBuilds: [] });
  assert.deepEqual(withOrtCuda.gpus[0]!.usableBy, ['onnxruntime:cuda']);
  assert.deepEqual(withOrtCuda.gpus[1]!.usableBy, [], 'no runtime here can drive the AMD card');
  assert.deepEqual(acceleratorNames(withOrtCuda), ['nvidia:0']);
});

it('reports an ARM CPU without GPUs, and the report passes the status contract', () => {
  const info = acceleratorInfo({
    ...readAcceleratorSources(fixture('arm-host'), { arch: 'arm64', cores: 4 }),
    onnxBackends: [{ name: 'cpu', bundled: true }],
    llamaBuilds: ['linux-arm64'],
  });
  assert.deepEqual(info.cpu.features, ['asimd', 'asimddp']);
  assert.equal(info.cpu.model, '0xd0c');
  assert.deepEqual(info.gpus, []);
  const status = {
    agentVersion: '1',
    bootId: 'b',
    uptimeS: 1,
    heartbeatIntervalS: 1,
    generation: 1,
    apps: [],
    runtimes: ['onnx'],
    accelerators: [],
    acceleratorInfo: info,
    system: {
      hostname: 'h',
      platform: 'linux',
      arch: 'arm64',
      cores: 4,
      memoryTotalBytes: 1,
      memoryFreeBytes: 1,
      diskTotalBytes: 1,
      diskFreeBytes: 1,
      loadAvg1: 0,
    },
    outbox: { pending: 0, dropped: 0 },
    devices: { connected: 0, messagesIn: 0 },
  };
  assert.equal(SiteStatusBody.safeParse(status).success, true);
});

it("the router reads a site's GPUs from its status into the placement snapshot", () => {
  const info = acceleratorInfo({
    ...readAcceleratorSources(fixture('gpu-host'), { arch: 'x64', cores: 8 }),
    onnxBackends: [],
    llamaBuilds: ['linux-x64-cuda'],
  });
  const status = {
    agentVersion: '1',
    bootId: 'b',
    uptimeS: 1,
    heartbeatIntervalS: 1,
    generation: 1,
    apps: [],
    runtimes: ['onnx'],
    accelerators: [],
    acceleratorInfo: info,
    system: {
      hostname: 'h',
      platform: 'linux',
      arch: 'x64',
      cores: 8,
      memoryTotalBytes: 1,
      memoryFreeBytes: 1,
      diskTotalBytes: 1,
      diskFreeBytes: 1,
      loadAvg1: 0,
    },
    outbox: { pending: 0, dropped: 0 },
    devices: { connected: 0, messagesIn: 0 },
    models: [{ app: 'a', name: 'm', version: '1.0.0', state: 'ready' as const, queued: 3 }],
    routed: { inFlight: 2, requests: 5, errors: 0 },
  };
  assert.deepEqual(acceleratorsOf(status), ['nvidia:0'], 'the AMD card no runtime here can drive does not count');
  const snap = siteSnapshot({ id: 's', region: 'eu' } as never, status, { online: true, inFlight: 1 }, new Set(['a/m@1.0.0']))!;
  assert.deepEqual([snap.accelerators, snap.queued, snap.inFlight, snap.parallelism], [['nvidia:0'], 3, 2, 8]);
});
