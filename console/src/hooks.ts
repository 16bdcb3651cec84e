import { createContext, useCallback, useContext, useEffect, useRef, useState, useSyncExternalStore } from 'react';
import type { ApiClient } from './lib/api.ts';
import { ApiError } from './lib/api.ts';
import type { LiveStore } from './state/live.ts';
import type { Me } from './types.ts';

export interface Ctx {
  api: ApiClient;
  me: Me;
  live: LiveStore;
  navigate: (to: string) => void;
  signOut: (notice?: string) => void;
}
export const AppContext = createContext<Ctx | null>(null);
export function useApp(): Ctx {
  const c = useContext(AppContext);
  if (!c) throw new Error('useApp outside the signed-in app');
  return c;
}

export type Loadable<T> = { data?: T; error?: ApiError; loading: boolean; reload: () => void };

/** GETs a path (null: nothing yet), with loading and error states; re-fetches on `reload`. */
export function useApi<T>(path: string | null): Loadable<T> {
  const { api } = useApp();
  const [state, setState] = useState<{ data?: T; error?: ApiError; loading: boolean }>({ loading: path !== null });
  const [n, setN] = useState(0);
  useEffect(() => {
    if (path === null) return;
    const ac = new AbortController();
    setState((s) => ({ ...s, loading: true, error: undefined }));
    api.get<T>(path, ac.signal).then(
      (data) => setState({ data, loading: false }),
      (e: unknown) => {
        if ((e as Error).name === 'AbortError') return;
        setState((s) => ({
          data: s.data,
          loading: false,
          error: e instanceof ApiError ? e : new ApiError(0, 'CLIENT', (e as Error).message),
        }));
      },
    );
    return () => ac.abort();
  }, [api, path, n]);
  const reload = useCallback(() => setN((x) => x + 1), []);
  return { ...state, reload };
}

/** Re-renders on every change of the live store. */
export function useLive(): LiveStore {
  const { live } = useApp();
  useSyncExternalStore(live.subscribe, live.getVersion);
  return live;
}

/** The time, refreshed every `ms` (relative times, chart windows). */
export function useNow(ms = 1000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(t);
  }, [ms]);
  return now;
}

/** An action's busy and error state, for buttons that call the API. */
export function useAction<A extends unknown[]>(
  fn: (...a: A) => Promise<unknown>,
): { run: (...a: A) => Promise<void>; busy: boolean; error?: ApiError; clear: () => void } {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError>();
  const alive = useRef(true);
  useEffect(
    () => () => {
      alive.current = false;
    },
    [],
  );
  const run = useCallback(
    async (...a: A) => {
      setBusy(true);
      setError(undefined);
      try {
        await fn(...a);
      } catch (e) {
        if (alive.current) setError(e instanceof ApiError ? e : new ApiError(0, 'CLIENT', (e as Error).message));
      } finally {
        if (alive.current) setBusy(false);
      }
    },
    [fn],
  );
  return { run, busy, error, clear: () => setError(undefined) };
}
