import { it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { ROOT } from './support/proc.ts';

/**
 * The chaos suite (scripts/chaos.ts, `npm run chaos`) at its small size: agent and cloud kill -9
 * cycles, partitions through a TCP proxy, an offline restart and damaged storage during a steady
 * QoS 1 device stream — every acknowledged record stored exactly once, damaged storage refused.
 */
it('chaos suite, small: no acknowledged record lost or duplicated in any scenario', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/chaos.ts', '--small'], {
    cwd: ROOT,
    env: { ...process.env, EW_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => {
    out += d.toString();
  });
  child.stderr!.on('data', (d) => {
    err = (err + d.toString()).slice(-20_000);
  });
  const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  const line = out.split('\n').find((l) => l.startsWith('{"event":"chaos"'));
  assert.ok(line, `the suite printed its summary:\n${out.slice(-4000)}\n${err.slice(-4000)}`);
  const summary = JSON.parse(line) as {
    ok: boolean;
    scenarios: { scenario: string; acknowledged: number; lost: number; duplicated: number; note?: string }[];
  };
  assert.equal(summary.scenarios.length, 7, 'every scenario ran');
  for (const s of summary.scenarios) {
    assert.equal(s.lost, 0, `${s.scenario}: none lost`);
    assert.equal(s.duplicated, 0, `${s.scenario}: none duplicated`);
    assert.doesNotMatch(s.note ?? '', /FAILED|NOT refused|timed out/, `${s.scenario}: ${s.note}`);
  }
  assert.ok(
    summary.scenarios.filter((s) => s.scenario !== 'damaged storage').every((s) => s.acknowledged > 0),
    'a real stream went through each scenario',
  );
  assert.equal(summary.ok, true);
  assert.equal(code, 0, err.slice(-4000));
});
