import { EwError } from './errors.ts';
import { TOPIC_ROOT } from './topics.ts';

/**
 * A device's credentials request, checked the same way by the site (which keeps the registry,
 * src/edge/device-auth.ts) and by the cloud (which forwards it): ids and topic filters.
 */
export interface DeviceGrants {
  publish: readonly string[];
  subscribe: readonly string[];
}

/** The username of the shared device password; never a device id. */
export const SHARED_USERNAME = 'device';
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** At most this many devices per site, and grants per device: the registry is read on every connect. */
export const MAX_DEVICES = 100_000;
export const MAX_GRANTS = 32;
/** Longest grantable topic filter: with MAX_GRANTS, one device's listing stays under 17 KiB. */
export const MAX_FILTER_CHARS = 256;
/** A page of the device list: at most this many devices, and at most this many bytes of JSON (an answer to the cloud must fit its 512 KiB bound). */
export const DEVICE_PAGE = { maxItems: 1000, maxBytes: 384 * 1024 } as const;

/** Why a topic filter cannot be granted, or undefined when it is a valid, grantable filter. */
export function filterProblem(f: string): string | undefined {
  if (f.length === 0 || f.length > MAX_FILTER_CHARS) return `a topic filter of 1 to ${MAX_FILTER_CHARS} characters`;
  if (f === TOPIC_ROOT || f.startsWith(`${TOPIC_ROOT}/`) || f.startsWith('$'))
    return `"${f}" is reserved (ew/ belongs to the agent, $ to the broker)`;
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (/[\u0000-\u001f\u007f]/.test(f)) return 'no control characters';
  const levels = f.split('/');
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i]!;
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) return `"${f}": # must be a whole level and the last one`;
    if (l.includes('+') && l !== '+') return `"${f}": + must be a whole level`;
  }
  // `#` and `+/…` at the top would also match the reserved ew/ tree; the broker refuses those
  // topics anyway, but a grant that reads as "everything" should be said plainly.
  return undefined;
}

function checkGrants(g: { publish?: unknown; subscribe?: unknown }): DeviceGrants {
  const out: { publish: string[]; subscribe: string[] } = { publish: [], subscribe: [] };
  for (const kind of ['publish', 'subscribe'] as const) {
    const v = g[kind] ?? [];
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string'))
      throw new EwError('VALIDATION_FAILED', `${kind} must be a list of topic filters`, { path: kind });
    if (v.length > MAX_GRANTS)
      throw new EwError('VALIDATION_FAILED', `${kind}: at most ${MAX_GRANTS} topic filters per device`, { path: kind });
    v.forEach((f: string, i) => {
      const p = filterProblem(f);
      if (p) throw new EwError('VALIDATION_FAILED', `${kind}[${i}]: ${p}`, { path: `${kind}[${i}]` });
    });
    out[kind] = [...new Set(v as string[])];
  }
  if (out.publish.length + out.subscribe.length === 0)
    throw new EwError('VALIDATION_FAILED', 'grant the device at least one topic filter to publish to or subscribe to', { path: 'publish' });
  return out;
}

export function checkDeviceId(id: unknown): string {
  if (typeof id !== 'string' || !ID_RE.test(id))
    throw new EwError(
      'VALIDATION_FAILED',
      'a device id: 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit (it is also the device\'s MQTT username and client id)',
      { path: 'id' },
    );
  if (id === SHARED_USERNAME)
    throw new EwError('VALIDATION_FAILED', `"${SHARED_USERNAME}" is the shared password's username; choose another device id`, {
      path: 'id',
    });
  return id;
}

/** Validates an add request; what both the site and the cloud (before asking the site) check. */
export function checkDeviceRequest(body: { id?: unknown; publish?: unknown; subscribe?: unknown; description?: unknown }): {
  id: string;
  grants: DeviceGrants;
  description?: string;
} {
  const id = checkDeviceId(body.id);
  const grants = checkGrants(body);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (
    body.description !== undefined &&
    (typeof body.description !== 'string' || body.description.length > 200 || /[\u0000-\u001f\u007f]/.test(body.description))
  ) {
    throw new EwError('VALIDATION_FAILED', 'description: at most 200 printable characters', { path: 'description' });
  }
  return { id, grants, ...(typeof body.description === 'string' ? { description: body.description } : {}) };
}
