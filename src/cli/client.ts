import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { EwError, ERROR_CODES, type ErrorBody, type ErrorCode } from '../contracts/errors.ts';
import { fetchTrusting, httpRequest, type HttpAnswer, type HttpRequest } from '../lib/fetch.ts';
// Types only: the client takes each answer's shape from the API's own zod schemas at no load cost.
import type { ApiResponses } from '../cloud/api/schemas.ts';
import type { ZodType, infer as zInfer } from 'zod';

/** A route of the cloud API, as `METHOD /path/:param` (src/cloud/api/schemas.ts ApiResponses). */
export type ApiRoute = keyof ApiResponses;
type PathOf<R> = R extends `${string} ${infer P}` ? P : never;
/** The `:name` parameters of a path pattern. */
type ParamNames<P> = P extends `${string}:${infer N}/${infer Rest}`
  ? N | ParamNames<`/${Rest}`>
  : P extends `${string}:${infer N}`
    ? N
    : never;
type Query = Record<string, string | number | boolean | undefined>;
interface RequestParts {
  query?: Query;
  body?: unknown;
  headers?: Record<string, string>;
}
/** What a call to `route` takes: its path parameters (when it has some), query, body and headers. */
export type ApiArgs<R extends ApiRoute> = [ParamNames<PathOf<R>>] extends [never]
  ? [args?: RequestParts]
  : [args: RequestParts & { params: Record<ParamNames<PathOf<R>>, string> }];

/** The URL path of `route` with its parameters filled in (each encoded) and the query appended. */
export function routePath(route: string, params: Record<string, string> = {}, query: Query = {}): string {
  const path = route.slice(route.indexOf(' ') + 1).replace(/:([A-Za-z0-9_]+)/g, (_m, n: string) => {
    const v = params[n];
    if (v === undefined) throw new EwError('INTERNAL', `${route}: no value for :${n}`);
    return encodeURIComponent(v);
  });
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') q.set(k, String(v));
  const qs = q.toString();
  return qs ? `${path}?${qs}` : path;
}

/**
 * The partner CLI's view of the cloud: where it is and the API key, from `edgeweave login`
 * (a 0600 file, `~/.config/edgeweave/config.json`, or `EDGEWEAVE_CONFIG`), overridden by
 * `EW_CLOUD` / `EW_API_KEY`; and a small JSON client whose errors keep the API's code.
 */
export interface CliConfig {
  cloud: string;
  apiKey: string /** PEM of a private CA the cloud's certificate comes from. */;
  ca?: string;
}

export function configPath(): string {
  return process.env.EDGEWEAVE_CONFIG ?? join(process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'edgeweave', 'config.json');
}

export function saveConfig(c: CliConfig): string {
  const p = configPath();
  mkdirSync(dirname(p), { recursive: true, mode: 0o700 });
  writeFileSync(p, `${JSON.stringify(c, null, 2)}\n`, { mode: 0o600 });
  chmodSync(p, 0o600);
  return p;
}

export function loadConfig(): CliConfig {
  let file: Partial<CliConfig> = {};
  const p = configPath();
  if (existsSync(p)) {
    try {
      file = JSON.parse(readFileSync(p, 'utf8')) as Partial<CliConfig>;
    } catch (e) {
      throw new EwError('CONFIG_INVALID', `${p} is not valid JSON (${(e as Error).message}); run edgeweave login again`);
    }
  }
  const cloud = process.env.EW_CLOUD || file.cloud;
  const apiKey = process.env.EW_API_KEY || file.apiKey;
  if (!cloud || !apiKey)
    throw new EwError(
      'CONFIG_INVALID',
      'not logged in: run edgeweave login --cloud <url> --api-key <key> (or set EW_CLOUD and EW_API_KEY)',
    );
  return { cloud, apiKey, ca: file.ca };
}

export class ApiClient {
  private readonly request: HttpRequest;
  constructor(readonly cfg: CliConfig) {
    // Short JSON calls: node:http, which starts faster than the global fetch (lib/fetch.ts).
    this.request = httpRequest(cfg.ca);
  }

  /**
   * One route of the cloud API, its answer typed from the API's response schema:
   * `api('GET /api/v1/sites/:id', { params: { id } })`.
   */
  async api<R extends ApiRoute>(route: R, ...[args]: ApiArgs<R>): Promise<ApiResponses[R]> {
    const a: RequestParts & { params?: Record<string, string> } = args ?? {};
    const method = route.slice(0, route.indexOf(' '));
    // The cloud validated and serialised this answer with the same schema the type comes from.
    return (await this.call(method, routePath(route, a.params, a.query), a.body, a.headers)) as ApiResponses[R];
  }

  /** A request outside the cloud's API (a site's local API), its answer checked with `schema`. */
  async parsed<S extends ZodType>(schema: S, method: string, path: string, body?: unknown): Promise<zInfer<S>> {
    const r = schema.safeParse(await this.call(method, path, body));
    if (!r.success)
      throw new EwError(
        'INTERNAL',
        `${method} ${path}: the answer does not have the expected shape (${r.error.issues[0]?.path.join('.') || 'root'}: ${r.error.issues[0]?.message})`,
      );
    return r.data;
  }

  /** Any request; its answer is unknown (prefer `api`, which is typed). */
  async call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<unknown> {
    // Rate limited: wait as the cloud says (Retry-After, at most a minute) and try again, twice.
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.once(method, path, body, headers);
      } catch (e) {
        const wait = (e as { retryAfterS?: number }).retryAfterS;
        if (!(e instanceof EwError && e.code === 'RATE_LIMITED') || attempt >= 2 || wait === undefined || wait > 60) throw e;
        process.stderr.write(`rate limited by the cloud; retrying in ${wait} s\n`);
        await new Promise((r) => setTimeout(r, wait * 1000));
      }
    }
  }

  /** A GET whose body is read as a stream (exports): the response when 2xx, else the API's error. */
  async download(path: string): Promise<Response> {
    let res: Response;
    try {
      // A stream, possibly gigabytes: fetch (loaded now, only for exports), not the buffered node:http call.
      res = await fetchTrusting(this.cfg.ca)(new URL(path, this.cfg.cloud), { headers: { authorization: `Bearer ${this.cfg.apiKey}` } });
    } catch (e) {
      throw new EwError(
        'CLOUD_UNREACHABLE',
        `cannot reach ${this.cfg.cloud}: ${((e as Error).cause as Error | undefined)?.message ?? (e as Error).message}`,
      );
    }
    if (!res.ok) {
      const text = await res.text();
      let json: unknown;
      try {
        json = text ? JSON.parse(text) : undefined;
      } catch {
        /* not JSON */
      }
      throw apiError(json, res, `GET ${path}`);
    }
    return res;
  }

  private async once(method: string, path: string, body: unknown, headers: Record<string, string>): Promise<unknown> {
    let res: HttpAnswer;
    try {
      res = await this.request(new URL(path, this.cfg.cloud), {
        method,
        headers: {
          authorization: `Bearer ${this.cfg.apiKey}`,
          ...(body !== undefined && !(body instanceof Uint8Array) ? { 'content-type': 'application/json' } : {}),
          ...headers,
        },
        body: body === undefined ? undefined : body instanceof Uint8Array ? body : JSON.stringify(body),
      });
    } catch (e) {
      throw new EwError(
        'CLOUD_UNREACHABLE',
        `cannot reach ${this.cfg.cloud}: ${((e as Error).cause as Error | undefined)?.message ?? (e as Error).message}`,
      );
    }
    const text = res.body.toString('utf8');
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      /* not JSON */
    }
    if (res.status < 200 || res.status > 299) {
      const b = (json ?? {}) as Partial<ErrorBody>;
      const code = (b.code && b.code in ERROR_CODES ? b.code : 'INTERNAL') as ErrorCode;
      const err = new EwError(code, b.message ?? `${method} ${path}: HTTP ${res.status}`, { path: b.path, pos: b.pos });
      if (res.status === 429) Object.assign(err, { retryAfterS: Math.max(1, Number(res.headers['retry-after']) || 1) });
      throw err;
    }
    return json;
  }
}

/** The EwError an API error body stands for (429 carries the Retry-After to wait). */
function apiError(json: unknown, res: Response, what: string): EwError {
  const b = (json ?? {}) as Partial<ErrorBody>;
  const code = (b.code && b.code in ERROR_CODES ? b.code : 'INTERNAL') as ErrorCode;
  const err = new EwError(code, b.message ?? `${what}: HTTP ${res.status}`, { path: b.path, pos: b.pos });
  if (res.status === 429) Object.assign(err, { retryAfterS: Math.max(1, Number(res.headers.get('retry-after')) || 1) });
  return err;
}
