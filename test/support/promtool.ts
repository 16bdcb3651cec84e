import { spawnSync } from 'node:child_process';

/**
 * Prometheus's own linter on a /metrics body: `promtool check metrics` (Debian's `prometheus`
 * package; .ci/run installs it). Returns its exit status and what it printed (each problem found).
 */
export function promtoolCheck(text: string): { status: number | null; output: string } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  if (r.error) throw new Error(`promtool is needed for this test (apt-get install prometheus): ${r.error.message}`);
  return { status: r.status, output: `${r.stdout}${r.stderr}`.trim() };
}
