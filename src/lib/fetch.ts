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

/** The most an `httpRequest` answer may hold: a larger one is refused, not buffered. */
export const HTTP_ANSWER_MAX_BYTES = 64 * 2 ** 20;

export interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}
export type HttpRequest = (
  url: URL,
  init: { method: string; headers: Record<string, string>; body?: string | Uint8Array },
) => Promise<HttpAnswer>;

/**
 * Short request/answer calls (the CLI's API client) over node:http / node:https, trusting
 * `caPem` in addition to the system's CAs when given; the answer is read whole, at most
 * HTTP_ANSWER_MAX_BYTES. Why not fetch: the global fetch, and even its Response and Headers
 * classes, load and set up undici on first use, about 100 ms of CPU — most of what a quick
 * command such as `edgeweave sites list` would cost beyond node's own start (npm run bench:cli).
 */
export function httpRequest(caPem?: string): HttpRequest {
  return async (url, init) => {
    const lib = url.protocol === 'https:' ? await import('node:https') : url.protocol === 'http:' ? await import('node:http') : undefined;
    if (!lib) throw new TypeError(`${url.protocol} URLs are not supported; use http:// or https://`);
    const body = typeof init.body === 'string' ? Buffer.from(init.body) : init.body;
    const headers = { ...init.headers, ...(body ? { 'content-length': String(body.length) } : {}) };
    return new Promise<HttpAnswer>((resolve, reject) => {
      const req = lib.request(
        url,
        { method: init.method, headers, ...(caPem && url.protocol === 'https:' ? { ca: caPem } : {}) },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > HTTP_ANSWER_MAX_BYTES) res.destroy(new Error(`the answer is larger than ${HTTP_ANSWER_MAX_BYTES} bytes`));
            else chunks.push(c);
          });
          res.on('error', reject);
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  };
}
