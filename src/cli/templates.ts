import { fileURLToPath } from 'node:url';

/** The app templates shipped with the package (`templates/` at its root, beside src/ and dist/). */
export const TEMPLATES = fileURLToPath(new URL('../../templates/', import.meta.url));
