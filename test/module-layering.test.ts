import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

/**
 * Which parts of the tree may import which: a cycle between two parts makes each impossible to
 * change (or load) without the other. The agent imports inference, the stream engine and the
 * contracts; inference must not import the agent back (shared types such as AppComponent live in
 * src/contracts/).
 */
const root = new URL('..', import.meta.url).pathname;
function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : n.endsWith('.ts') ? [p] : [];
  });
}
/** Every relative module a file imports (static imports, re-exports and `import()` types), resolved from the repository root. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:from\s+|import\s*\(\s*)'(\.{1,2}\/[^']+)'/g)].map((m) => m[1]!);
  return specs.map((s) => relative(root, join(file, '..', s)));
}
function offending(part: string, forbidden: (target: string) => boolean): string[] {
  return files(join(root, part)).flatMap((f) =>
    importsOf(f)
      .filter(forbidden)
      .map((t) => `${relative(root, f)} imports ${t}`),
  );
}

describe('module layering', () => {
  it('inference does not import the agent (no edge <-> inference cycle)', () => {
    assert.deepEqual(
      offending('src/inference', (t) => t.startsWith('src/edge/')),
      [],
    );
  });

  it('the check itself sees imports (a file known to import another is found)', () => {
    assert.ok(importsOf(join(root, 'src/inference/host.ts')).includes('src/contracts/app-component.ts'));
  });
});
