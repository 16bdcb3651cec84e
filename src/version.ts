import { createRequire } from 'node:module';

/** The version every part reports (agent status, cloud /healthz): package.json's, read once. */
export const VERSION: string = (createRequire(import.meta.url)('../package.json') as { version: string }).version;
