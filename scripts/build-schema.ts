/** Writes docs/app-manifest.schema.json from the manifest's zod schema (npm run schema). */
import { writeFileSync } from 'node:fs';
import { manifestJsonSchema } from '../src/contracts/manifest-schema.ts';

writeFileSync(new URL('../docs/app-manifest.schema.json', import.meta.url), `${JSON.stringify(manifestJsonSchema(), null, 2)}\n`);
console.log('wrote docs/app-manifest.schema.json');
