import { it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { manifestJsonSchema } from '../src/contracts/manifest-schema.ts';

it('docs/app-manifest.schema.json is the schema the code checks with (npm run schema rewrites it)', () => {
  const committed = JSON.parse(readFileSync(new URL('../docs/app-manifest.schema.json', import.meta.url), 'utf8')) as {
    properties: { spec: unknown };
  };
  assert.deepEqual(committed, manifestJsonSchema());
  const spec = (committed.properties.spec as { properties: Record<string, unknown> }).properties;
  assert.deepEqual(Object.keys(spec).sort(), ['endpoints', 'models', 'policy', 'rules', 'streams']);
});

it('reserves "_" stream and result names for the site (an app cannot feed or forge _egress-audit)', async () => {
  const { parseManifest } = await import('../src/contracts/manifest.ts');
  const base = (streamName: string, result: string) => ({
    apiVersion: 'edgeweave/v1',
    kind: 'App',
    metadata: { name: 'a', version: '1.0.0' },
    spec: {
      streams: [{ name: streamName, topic: 'x/#', format: 'json' }],
      rules: [{ name: 'r', sql: `SELECT v FROM ${streamName}`, sinks: [{ uplink: result }] }],
      policy: { egress: { allow: [result] } },
    },
  });
  assert.doesNotThrow(() => parseManifest(base('readings', 'alerts')));
  assert.throws(
    () => parseManifest(base('_audit', 'alerts')),
    (e: any) => e.code === 'INVALID_MANIFEST' && /streams\[0\]\.name/.test(e.path) && /reserved/.test(e.message),
  );
  assert.throws(
    () => parseManifest(base('readings', '_egress-audit')),
    (e: any) => e.code === 'INVALID_MANIFEST' && /sinks\[0\]/.test(e.path),
  );
});

it('refuses a stream topic filter deeper than the matcher indexes, naming the field and the bound', async () => {
  const { parseManifest } = await import('../src/contracts/manifest.ts');
  const { MAX_FILTER_LEVELS } = await import('../src/lib/topic-filter.ts');
  const withTopic = (topic: string) => ({
    apiVersion: 'edgeweave/v1',
    kind: 'App',
    metadata: { name: 'a', version: '1.0.0' },
    spec: { streams: [{ name: 's', topic, format: 'json' }], rules: [{ name: 'r', sql: 'SELECT v FROM s', sinks: [{ memory: 'm' }] }] },
  });
  const levels = (n: number) => Array.from({ length: n }, () => 'a').join('/');
  assert.doesNotThrow(() => parseManifest(withTopic(levels(MAX_FILTER_LEVELS))));
  assert.throws(
    () => parseManifest(withTopic(levels(MAX_FILTER_LEVELS + 1))),
    (e: any) => e.code === 'INVALID_MANIFEST' && /streams\[0\]\.topic/.test(e.path) && /at most 1000 levels/.test(e.message),
  );
});
