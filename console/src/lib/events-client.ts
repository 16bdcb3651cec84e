import { ApiError, errorFrom } from './api.ts';
import { backoffDelay } from './backoff.ts';
import { SseParser, type SseEvent } from './sse.ts';

/**
 * The live stream from `GET /api/v1/events`, read with fetch streaming so the API key travels in
 * the Authorization header (EventSource cannot set one, and a key in a URL ends up in logs).
 * It reconnects by itself with back-off, resumes with Last-Event-ID so no result is missed, and
 * reports its state for the console to show; a refused key ends it (back to sign-in).
 */
export type StreamState =
  | { state: 'connecting'; attempt: number }
  | { state: 'live'; since: number }
  | { state: 'reconnecting'; attempt: number; retryInMs: number; error: { code: string; message: string } }
  | { state: 'unauthenticated'; error: { code: string; message: string } }
  | { state: 'closed' };

export interface EventsClientOptions {
  key: string;
  baseUrl?: string;
  fetch?: typeof fetch;
  onEvent: (e: SseEvent) => void;
  onState: (s: StreamState) => void;
  /** A stream silent this long is presumed dead (the server pings every 15 s). */
  idleTimeoutMs?: number;
  random?: () => number;
  now?: () => number;
  /** Reconnect back-off base and cap. */
  baseDelayMs?: number;
  maxDelayMs?: number;
}

export function connectEvents(o: EventsClientOptions): { close(): void } {
  const f = o.fetch ?? ((...a: Parameters<typeof fetch>) => fetch(...a));
  const now = o.now ?? Date.now;
  let stopped = false;
  let current: AbortController | undefined;
  let wake: (() => void) | undefined;
  let lastId: string | undefined;

  const sleep = (ms: number) =>
    new Promise<void>((r) => {
      const t = setTimeout(r, ms);
      wake = () => {
        clearTimeout(t);
        r();
      };
    });

  const run = async () => {
    let attempt = 0;
    while (!stopped) {
      o.onState({ state: 'connecting', attempt });
      const ac = new AbortController();
      current = ac;
      let error: { code: string; message: string };
      let idle: ReturnType<typeof setTimeout> | undefined;
      const resetIdle = () => {
        if (idle) clearTimeout(idle);
        idle = setTimeout(() => ac.abort(new Error('no data for too long')), o.idleTimeoutMs ?? 45_000);
      };
      try {
        resetIdle();
        const res = await f(`${o.baseUrl ?? ''}/api/v1/events`, {
          headers: {
            authorization: `Bearer ${o.key}`,
            accept: 'text/event-stream',
            ...(lastId !== undefined ? { 'last-event-id': lastId } : {}),
          },
          signal: ac.signal,
          cache: 'no-store',
        });
        if (!res.ok || !res.body) {
          const e = res.ok ? new ApiError(res.status, 'NO_BODY', 'the event stream has no body') : await errorFrom(res);
          if (res.status === 401) {
            o.onState({ state: 'unauthenticated', error: { code: e.code, message: e.message } });
            return;
          }
          throw e;
        }
        const parser = new SseParser();
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          resetIdle();
          for (const ev of parser.push(value)) {
            if (ev.id !== undefined) lastId = ev.id;
            if (ev.event === 'ready') {
              attempt = 0;
              o.onState({ state: 'live', since: now() });
            }
            if (ev.event === 'error') {
              const body = JSON.parse(ev.data) as { code: string; message: string };
              if (body.code === 'UNAUTHENTICATED') {
                o.onState({ state: 'unauthenticated', error: body });
                stopped = true;
                ac.abort();
                return;
              }
            }
            o.onEvent(ev);
          }
        }
        error = { code: 'STREAM_ENDED', message: 'the cloud closed the live stream' };
      } catch (e) {
        if (stopped) break;
        error =
          e instanceof ApiError
            ? { code: e.code, message: e.message }
            : {
                code: 'NETWORK',
                message: ac.signal.aborted ? 'the live stream went silent' : `lost the connection to the cloud (${(e as Error).message})`,
              };
      } finally {
        if (idle) clearTimeout(idle);
      }
      if (stopped) break;
      const retryInMs = backoffDelay(attempt, o.random, o.baseDelayMs, o.maxDelayMs);
      o.onState({ state: 'reconnecting', attempt: attempt + 1, retryInMs, error });
      attempt++;
      await sleep(retryInMs);
    }
    o.onState({ state: 'closed' });
  };
  void run();
  return {
    close() {
      stopped = true;
      current?.abort();
      wake?.();
    },
  };
}
