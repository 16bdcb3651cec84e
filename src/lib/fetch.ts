import { Agent, fetch as undiciFetch } from 'undici';

/**
 * `fetch` that trusts a given CA (PEM) in addition to the system's, for a cloud whose
 * certificate comes from a private CA. Node's global fetch cannot take a CA per call, so this
 * uses undici (the library behind it) with its own connection pool. Without a CA: global fetch.
 */
export function fetchTrusting(caPem?: string): typeof fetch {
  if (!caPem) return fetch;
  const dispatcher = new Agent({ connect: { ca: caPem } });
  return ((input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) =>
    undiciFetch(input as never, { ...(init as object), dispatcher } as never)) as unknown as typeof fetch;
}
