import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { EwError, ERROR_CODES, type ErrorBody, type ErrorCode } from '../contracts/errors.ts';
import { fetchTrusting } from '../lib/fetch.ts';

/**
 * The partner CLI's view of the cloud: where it is and the API key, from `edgeweave login`
 * (a 0600 file, `~/.config/edgeweave/config.json`, or `EDGEWEAVE_CONFIG`), overridden by
 * `EW_CLOUD` / `EW_API_KEY`; and a small JSON client whose errors keep the API's code.
 */
export interface CliConfig { cloud: string; apiKey: string; /** PEM of a private CA the cloud's certificate comes from. */ ca?: string }

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
  if (!cloud || !apiKey) throw new EwError('CONFIG_INVALID', 'not logged in: run edgeweave login --cloud <url> --api-key <key> (or set EW_CLOUD and EW_API_KEY)');
  return { cloud, apiKey, ca: file.ca };
}

export class ApiClient {
  private readonly fetch: typeof fetch;
  constructor(readonly cfg: CliConfig) {
    this.fetch = fetchTrusting(cfg.ca);
  }

  async call<T = any>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
    // Rate limited: wait as the cloud says (Retry-After, at most a minute) and try again, twice.
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.once<T>(method, path, body, headers);
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
      res = await this.fetch(new URL(path, this.cfg.cloud), { headers: { authorization: `Bearer ${this.cfg.apiKey}` } });
    } catch (e) {
      throw new EwError('CLOUD_UNREACHABLE', `cannot reach ${this.cfg.cloud}: ${((e as Error).cause as Error | undefined)?.message ?? (e as Error).message}`);
    }
    if (!res.ok) {
      const text = await res.text();
      let json: unknown = undefined;
      try { json = text ? JSON.parse(text) : undefined; } catch { /* not JSON */ }
      throw apiError(json, res, `GET ${path}`);
    }
    return res;
  }

  private async once<T>(method: string, path: string, body: unknown, headers: Record<string, string>): Promise<T> {
    let res: Response;
    try {
      res = await this.fetch(new URL(path, this.cfg.cloud), {
        method,
        headers: { authorization: `Bearer ${this.cfg.apiKey}`, ...(body !== undefined && !(body instanceof Uint8Array) ? { 'content-type': 'application/json' } : {}), ...headers },
        body: body === undefined ? undefined : body instanceof Uint8Array ? (body as unknown as BodyInit) : JSON.stringify(body),
      });
    } catch (e) {
      throw new EwError('CLOUD_UNREACHABLE', `cannot reach ${this.cfg.cloud}: ${((e as Error).cause as Error | undefined)?.message ?? (e as Error).message}`);
    }
    const text = await res.text();
    let json: unknown = undefined;
    try { json = text ? JSON.parse(text) : undefined; } catch { /* not JSON */ }
    if (!res.ok) throw apiError(json, res, `${method} ${path}`);
    return json as T;
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
