import { it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { manifestJsonSchema } from '../src/contracts/manifest-schema.ts';

it('docs/app-manifest.schema.json is the schema the code checks with (npm run schema rewrites it)', () => {
  const committed = JSON.parse(readFileSync(new URL('../docs/app-manifest.schema.json', import.meta.url), 'utf8')) as { properties: { spec: unknown } };
  assert.deepEqual(committed, manifestJsonSchema());
  const spec = (committed.properties.spec as { properties: Record<string, unknown> }).properties;
  assert.deepEqual(Object.keys(spec).sort(), ['endpoints', 'models', 'policy', 'rules', 'streams']);
});
