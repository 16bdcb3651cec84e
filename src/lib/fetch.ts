/**
 * `fetch` that trusts a given CA (PEM) in addition to the system's, for a cloud whose
 * certificate comes from a private CA. Node's global fetch cannot take a CA per call, so this
 * uses undici (the library behind it) with its own connection pool. Without a CA: global fetch.
 * undici is imported at the first call, not with this module: the CLI's commands start faster
 * without it (see bench/cli.ts).
 */
export function fetchTrusting(caPem?: string): typeof fetch {
  if (!caPem) return fetch;
  let pool: Promise<{ fetch: typeof import('undici').fetch; dispatcher: import('undici').Agent }> | undefined;
  return (async (input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) => {
    pool ??= import('undici').then((u) => ({ fetch: u.fetch, dispatcher: new u.Agent({ connect: { ca: caPem } }) }));
    const p = await pool;
    return p.fetch(input as never, { ...(init as object), dispatcher: p.dispatcher } as never);
  }) as unknown as typeof fetch;
}
