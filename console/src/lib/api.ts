/**
 * The console's API client: every call goes through the same authenticated HTTP API the CLI
 * uses (`Authorization: Bearer <key>`). An error answer becomes an ApiError with the API's
 * stable code, message and field path, so the page can show them where the action happened.
 */
export class ApiError extends Error {
  override readonly name = 'ApiError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly path?: string,
  ) {
    super(message);
  }
}

/** Turns a non-2xx answer into an ApiError (the body is `{code, message, path?}` when it is ours). */
export async function errorFrom(res: Response): Promise<ApiError> {
  const text = await res.text().catch(() => '');
  try {
    // Ours: {code, message, path?}; the inference routes speak OIP's {error, code}.
    const b = JSON.parse(text) as { code?: unknown; message?: unknown; error?: unknown; path?: unknown };
    const message = typeof b.message === 'string' ? b.message : typeof b.error === 'string' ? b.error : undefined;
    if (typeof b.code === 'string' && message !== undefined)
      return new ApiError(res.status, b.code, message, typeof b.path === 'string' ? b.path : undefined);
  } catch {
    /* not JSON: a proxy's page, say */
  }
  return new ApiError(res.status, `HTTP_${res.status}`, text.slice(0, 200) || res.statusText || 'the server answered with an error');
}

export interface ApiClientOptions {
  key: string;
  /** Origin of the cloud; '' (same origin) in the browser. */
  baseUrl?: string;
  fetch?: typeof fetch;
  /** Called when the key is refused (expired or revoked): the console goes back to sign-in. */
  onUnauthenticated?: (e: ApiError) => void;
}

export class ApiClient {
  private readonly f: typeof fetch;
  constructor(readonly o: ApiClientOptions) {
    this.f = o.fetch ?? ((...a) => fetch(...a));
  }

  async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    let res: Response;
    try {
      res = await this.f(`${this.o.baseUrl ?? ''}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.o.key}`,
          accept: 'application/json',
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        cache: 'no-store',
      });
    } catch (e) {
      if ((e as Error).name === 'AbortError') throw e;
      throw new ApiError(0, 'NETWORK', `cannot reach the cloud: ${(e as Error).message}`);
    }
    if (!res.ok) {
      const err = await errorFrom(res);
      if (res.status === 401) this.o.onUnauthenticated?.(err);
      throw err;
    }
    if (res.status === 204) return undefined as T;
    return (await res.json()) as T;
  }

  get<T>(path: string, signal?: AbortSignal): Promise<T> {
    return this.request<T>('GET', path, undefined, signal);
  }
  post<T>(path: string, body?: unknown): Promise<T> {
    return this.request<T>('POST', path, body ?? {});
  }
  del(path: string): Promise<void> {
    return this.request<void>('DELETE', path);
  }
}
