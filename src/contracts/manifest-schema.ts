import { z } from 'zod';
import { AppManifest } from './manifest.ts';

/**
 * The app manifest as JSON Schema (draft 2020-12), generated from the same zod schema the cloud
 * and the sites check with, so the two cannot drift. Editors validate edgeweave.yaml with it;
 * checks a schema cannot state (a model's sha256, SQL, egress) are `edgeweave app validate`'s.
 */
export function manifestJsonSchema(): Record<string, unknown> {
  const s = z.toJSONSchema(AppManifest, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return {
    ...s,
    $id: 'https://edgeweave.dev/schemas/app-manifest.json',
    title: 'Edgeweave app manifest (edgeweave/v1 App)',
    description:
      'An app: models, streams, streaming-SQL rules with sinks, endpoints and policy. See docs/manifest.md. In a bundle, a rule may give sqlFile (a path in the bundle) instead of sql.',
  };
}
