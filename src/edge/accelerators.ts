import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { SiteStatusBody } from '../contracts/messages.ts';

const require = createRequire(import.meta.url);

/**
 * What a site can accelerate inference with: CPU SIMD features (what llama.cpp and ONNX Runtime's
 * CPU kernels pick their code paths by), GPUs, and which of our runtimes could use each GPU
 * here. Split in two: `readAcceleratorSources` reads the machine (procfs, sysfs, the installed
 * runtime packages) under a root directory — so a test points it at a fixture tree — and
 * `acceleratorInfo` is a pure function of what was read. The router prefers GPU sites for models
 * that ask for one, and the ONNX runtime asks for CUDA only where it can get it.
 */
export type AcceleratorInfo = NonNullable<SiteStatusBody['acceleratorInfo']>;

export interface AcceleratorSources {
  arch: string;
  cores: number;
  cpuinfo: string;
  /** `/proc/driver/nvidia/gpus/{bus}/information` files (the NVIDIA kernel driver's own). */
  nvidia: { bus: string; information: string }[];
  /** NVIDIA driver version (`/proc/driver/nvidia/version`), when loaded. */
  nvidiaDriver?: string;
  /** DRM cards: PCI vendor id (`0x1002` AMD, `0x8086` Intel, `0x10de` NVIDIA) and device id. */
  drm: { card: string; vendor: string; device: string }[];
  /** ONNX Runtime backends of this build, bundled or not (`listSupportedBackends()`). */
  onnxBackends: { name: string; bundled: boolean }[];
  /** node-llama-cpp prebuilt binaries installed (`linux-x64-cuda`, `linux-x64-vulkan`, …). */
  llamaBuilds: string[];
}

const CPU_FEATURES = [
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
  'neon',
  'asimd',
  'asimddp',
  'sve',
  'sve2',
  'i8mm',
  'bf16',
];

function readOr(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

export function readAcceleratorSources(root = '/', facts: { arch: string; cores: number }): AcceleratorSources {
  const nvDir = join(root, 'proc/driver/nvidia/gpus');
  const nvidia = existsSync(nvDir)
    ? readdirSync(nvDir)
        .sort()
        .map((bus) => ({ bus, information: readOr(join(nvDir, bus, 'information')) ?? '' }))
    : [];
  const drmDir = join(root, 'sys/class/drm');
  const drm = existsSync(drmDir)
    ? readdirSync(drmDir)
        .filter((c) => /^card\d+$/.test(c))
        .sort()
        .flatMap((card) => {
          const vendor = readOr(join(drmDir, card, 'device/vendor'))?.trim();
          const device = readOr(join(drmDir, card, 'device/device'))?.trim();
          return vendor ? [{ card, vendor, device: device ?? '' }] : [];
        })
    : [];
  const onnxBackends = probeOnnxBackends();
  const llamaBuilds: string[] = [];
  for (const b of ['linux-x64', 'linux-x64-cuda', 'linux-x64-vulkan', 'linux-arm64', 'mac-arm64-metal', 'win-x64-cuda', 'win-x64-vulkan']) {
    try {
      require.resolve(`@node-llama-cpp/${b}/package.json`);
      llamaBuilds.push(b);
    } catch {
      /* not installed */
    }
  }
  return {
    ...facts,
    cpuinfo: readOr(join(root, 'proc/cpuinfo')) ?? '',
    nvidia,
    nvidiaDriver: readOr(join(root, 'proc/driver/nvidia/version'))?.match(/Kernel Module\s+([\d.]+)/)?.[1],
    drm,
    onnxBackends,
    llamaBuilds,
  };
}

/**
 * ONNX Runtime's backends, as its native binding lists them, asked in a short-lived child
 * process: loading the binding here would keep ONNX Runtime (about 30 MB) in every agent,
 * whether or not an app ever runs an ONNX model (bench:agent). Asked once per process.
 */
let onnxBackendsSeen: { name: string; bundled: boolean }[] | undefined;
function probeOnnxBackends(): { name: string; bundled: boolean }[] {
  if (onnxBackendsSeen) return onnxBackendsSeen;
  let entry: string;
  try {
    entry = require.resolve('onnxruntime-node');
  } catch {
    return (onnxBackendsSeen = []); /* not installed */
  }
  const r = spawnSync(
    process.execPath,
    ['-e', `process.stdout.write(JSON.stringify(require(${JSON.stringify(entry)}).listSupportedBackends()))`],
    {
      encoding: 'utf8',
      timeout: 30_000,
      stdio: ['ignore', 'pipe', 'ignore'],
      env: { ...process.env, NODE_OPTIONS: '' },
    },
  );
  try {
    const list = JSON.parse(r.stdout) as unknown;
    onnxBackendsSeen = Array.isArray(list)
      ? list
          .filter((b): b is { name: string; bundled: boolean } => typeof b?.name === 'string')
          .map((b) => ({ name: b.name, bundled: b.bundled === true }))
      : [];
  } catch {
    onnxBackendsSeen = []; // the binding does not load on this machine: no ONNX backends to offer
  }
  return onnxBackendsSeen;
}

/** Pure: the status's accelerator facts from what was read. */
export function acceleratorInfo(src: AcceleratorSources): AcceleratorInfo {
  const field = (name: string) => src.cpuinfo.match(new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm'))?.[1]?.trim();
  const flags = new Set((field('flags') ?? field('Features') ?? '').split(/\s+/).filter(Boolean));
  const features = CPU_FEATURES.filter((f) => flags.has(f));
  const model = field('model name') ?? field('Hardware') ?? field('CPU part') ?? 'unknown';
  // ONNX Runtime can use CUDA only where the backend is in this build (the npm build bundles none).
  const ortCuda = src.onnxBackends.some((b) => b.name === 'cuda' && b.bundled);
  const llamaCuda = src.llamaBuilds.some((b) => b.includes('cuda'));
  const llamaVulkan = src.llamaBuilds.some((b) => b.includes('vulkan'));
  const gpus: AcceleratorInfo['gpus'] = src.nvidia.map((g, index) => ({
    vendor: 'nvidia' as const,
    index,
    name: g.information.match(/^Model:\s*(.*)$/m)?.[1]?.trim() ?? 'NVIDIA GPU',
    ...(src.nvidiaDriver ? { driver: src.nvidiaDriver } : {}),
    usableBy: [
      ...(llamaCuda ? ['node-llama-cpp:cuda'] : []),
      ...(llamaVulkan ? ['node-llama-cpp:vulkan'] : []),
      ...(ortCuda ? ['onnxruntime:cuda'] : []),
    ],
  }));
  // Other vendors' GPUs show up as DRM cards; NVIDIA cards are already listed from their driver.
  let i = 0;
  for (const c of src.drm) {
    const vendor = c.vendor === '0x1002' ? 'amd' : c.vendor === '0x8086' ? 'intel' : c.vendor === '0x10de' ? 'nvidia' : 'other';
    if (vendor === 'nvidia') continue;
    gpus.push({
      vendor,
      index: i++,
      name: `${vendor.toUpperCase()} GPU ${c.device}`.trim(),
      usableBy: llamaVulkan ? ['node-llama-cpp:vulkan'] : [],
    });
  }
  return {
    cpu: { model: model.slice(0, 256), arch: src.arch, cores: src.cores, features },
    gpus,
    onnxProviders: src.onnxBackends.filter((b) => b.bundled).map((b) => b.name),
  };
}

/** The short list in `status.accelerators` (`nvidia:0`, `amd:0`): GPUs some runtime here can use. */
export function acceleratorNames(info: AcceleratorInfo): string[] {
  return info.gpus.filter((g) => g.usableBy.length > 0).map((g) => `${g.vendor}:${g.index}`);
}
