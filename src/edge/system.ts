import { arch, cpus, freemem, hostname, loadavg, platform, totalmem } from 'node:os';
import { existsSync, statfsSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { SiteStatusBody } from '../contracts/messages.ts';

const require = createRequire(import.meta.url);

/** Model runtimes this agent could load: a runtime counts when its package resolves. */
export function detectRuntimes(): string[] {
  const out: string[] = [];
  const probe = (pkg: string, name: string) => {
    try {
      require.resolve(pkg);
      out.push(name);
    } catch {
      /* not installed */
    }
  };
  probe('onnxruntime-node', 'onnx');
  probe('node-llama-cpp', 'gguf');
  return out;
}

/** Accelerators visible to the OS (NVIDIA device nodes today). */
export function detectAccelerators(): string[] {
  const out: string[] = [];
  for (let i = 0; i < 16; i++) if (existsSync(`/dev/nvidia${i}`)) out.push(`nvidia:${i}`);
  return out;
}

export function systemFacts(dataDir: string): SiteStatusBody['system'] {
  let diskTotal = 0;
  let diskFree = 0;
  try {
    const s = statfsSync(dataDir);
    diskTotal = s.blocks * s.bsize;
    diskFree = s.bavail * s.bsize;
  } catch {
    /* unknown */
  }
  return {
    hostname: hostname(),
    platform: platform(),
    arch: arch(),
    cores: cpus().length,
    memoryTotalBytes: totalmem(),
    memoryFreeBytes: freemem(),
    diskTotalBytes: diskTotal,
    diskFreeBytes: diskFree,
    loadAvg1: loadavg()[0] ?? 0,
  };
}
