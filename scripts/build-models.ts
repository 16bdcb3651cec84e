/**
 * Trains the templates' models on simulated data and writes them to models/ (deterministic:
 * running it again gives the same bytes; test/models.test.ts checks the committed files).
 *   npm run models
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { TEMPLATE_MODELS, TEMPLATE_COPIES } from '../src/inference/train/models.ts';

const dir = fileURLToPath(new URL('../models/', import.meta.url));
mkdirSync(dir, { recursive: true });
for (const build of TEMPLATE_MODELS) {
  const t0 = performance.now();
  const m = build();
  writeFileSync(`${dir}${m.file}`, m.bytes);
  // The templates carry their own copies, so that a bundle is self-contained.
  for (const t of TEMPLATE_COPIES[m.file] ?? [])
    writeFileSync(fileURLToPath(new URL(`../templates/${t}/models/${m.file}`, import.meta.url)), m.bytes);
  const sha = createHash('sha256').update(m.bytes).digest('hex');
  console.log(
    `${m.file}: ${m.bytes.length} bytes, sha256 ${sha}, ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    JSON.stringify(m.report),
  );
}
