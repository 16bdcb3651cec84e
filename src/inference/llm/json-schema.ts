import { EwError } from '../../contracts/errors.ts';

/**
 * Checks that a JSON schema is one the model's output can be constrained to (the subset
 * node-llama-cpp turns into a llama.cpp grammar: types, properties, required, additionalProperties,
 * items, prefixItems, enum, const, anyOf/oneOf, $defs/$ref, string and array length bounds, a few
 * string formats). A keyword or type outside it is refused with RESPONSE_FORMAT_INVALID and the
 * path of the bad part, rather than silently ignored. Pure.
 */
const TYPES = new Set(['string', 'number', 'integer', 'boolean', 'null', 'object', 'array']);
const KEYWORDS = new Set([
  'type',
  'properties',
  'required',
  'additionalProperties',
  'items',
  'prefixItems',
  'enum',
  'const',
  'anyOf',
  'oneOf',
  '$defs',
  'definitions',
  '$ref',
  'minItems',
  'maxItems',
  'minLength',
  'maxLength',
  'format',
  'description',
  'title',
  '$schema',
  '$id',
  'default',
  'examples',
  'minProperties',
  'maxProperties',
  'strict',
]);
const FORMATS = new Set(['date-time', 'time', 'date']);

export function checkJsonSchema(schema: unknown, param: string): Record<string, unknown> {
  walk(schema, param, 0);
  return schema as Record<string, unknown>;
}

function walk(s: unknown, path: string, depth: number): void {
  const bad = (what: string, at = path) => {
    throw new EwError('RESPONSE_FORMAT_INVALID', `${at}: ${what}`, { path: at });
  };
  if (depth > 32) bad('the schema nests deeper than 32 levels');
  if (typeof s === 'boolean') return;
  if (s === null || typeof s !== 'object' || Array.isArray(s)) bad('a schema must be an object');
  const o = s as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (!KEYWORDS.has(k))
      bad(`keyword "${k}" cannot constrain the output (supported: ${[...KEYWORDS].slice(0, 16).join(', ')}, …)`, `${path}.${k}`);
  if (o.type !== undefined) {
    const types = Array.isArray(o.type) ? o.type : [o.type];
    for (const t of types)
      if (typeof t !== 'string' || !TYPES.has(t))
        bad(`type ${JSON.stringify(t)} is not a JSON schema type (${[...TYPES].join(', ')})`, `${path}.type`);
  }
  if (o.properties !== undefined) {
    if (typeof o.properties !== 'object' || o.properties === null || Array.isArray(o.properties))
      bad('properties must be an object of schemas', `${path}.properties`);
    for (const [k, v] of Object.entries(o.properties as object)) walk(v, `${path}.properties.${k}`, depth + 1);
  }
  if (o.required !== undefined && (!Array.isArray(o.required) || o.required.some((r) => typeof r !== 'string')))
    bad('required must be an array of property names', `${path}.required`);
  if (o.additionalProperties !== undefined && typeof o.additionalProperties !== 'boolean')
    walk(o.additionalProperties, `${path}.additionalProperties`, depth + 1);
  if (o.items !== undefined) walk(o.items, `${path}.items`, depth + 1);
  for (const k of ['prefixItems', 'anyOf', 'oneOf'] as const) {
    if (o[k] === undefined) continue;
    if (!Array.isArray(o[k]) || (o[k] as unknown[]).length === 0) bad(`${k} must be a non-empty array of schemas`, `${path}.${k}`);
    (o[k] as unknown[]).forEach((x, i) => {
      walk(x, `${path}.${k}[${i}]`, depth + 1);
    });
  }
  for (const k of ['$defs', 'definitions'] as const)
    if (o[k] !== undefined) for (const [n, v] of Object.entries(o[k] as object)) walk(v, `${path}.${k}.${n}`, depth + 1);
  if (o.enum !== undefined && (!Array.isArray(o.enum) || o.enum.length === 0)) bad('enum must be a non-empty array', `${path}.enum`);
  for (const k of ['minItems', 'maxItems', 'minLength', 'maxLength', 'minProperties', 'maxProperties'] as const) {
    if (o[k] !== undefined && (!Number.isInteger(o[k]) || (o[k] as number) < 0)) bad(`${k} must be a non-negative integer`, `${path}.${k}`);
  }
  if (o.format !== undefined && !FORMATS.has(o.format as string))
    bad(`format ${JSON.stringify(o.format)} is not supported (${[...FORMATS].join(', ')})`, `${path}.format`);
}
