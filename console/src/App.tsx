import { useCallback, useEffect, useMemo, useState, type MouseEvent, type ReactNode } from 'react';
import { ApiClient, ApiError } from './lib/api.ts';
import { connectEvents } from './lib/events-client.ts';
import { LiveStore } from './state/live.ts';
import { can } from './state/derive.ts';
import { checkKeyShape, loadKey, saveKey, signOut as forget, takeNotice } from './state/session.ts';
import { AppContext, useApp, useLive } from './hooks.ts';
import { ErrorBox, StreamIndicator } from './components/ui.tsx';
import type { Me, Rollout, Site } from './types.ts';
import { CONSOLE_PAGES, type ConsolePage } from '../../src/contracts/console-routes.ts';
import { FleetPage } from './pages/Fleet.tsx';
import { SitePage } from './pages/Site.tsx';
import { AppsPage } from './pages/Apps.tsx';
import { RolloutsPage } from './pages/Rollouts.tsx';
import { LivePage } from './pages/Live.tsx';
import { EndpointsPage } from './pages/Endpoints.tsx';
import { TokensPage } from './pages/Tokens.tsx';

/** The path the browser shows; pages are chosen from it (the cloud serves index.html for all). */
function usePath(): [string, (to: string) => void] {
  const [path, setPath] = useState(location.pathname);
  useEffect(() => {
    const on = () => setPath(location.pathname);
    addEventListener('popstate', on);
    return () => removeEventListener('popstate', on);
  }, []);
  const navigate = useCallback((to: string) => {
    if (to !== location.pathname) history.pushState(null, '', to);
    setPath(to);
    // Move focus to the new page's heading, as a screen reader user expects after navigation.
    requestAnimationFrame(() => document.querySelector<HTMLElement>('main h1')?.focus());
  }, []);
  return [path, navigate];
}

export function Root() {
  const [key, setKey] = useState(() => loadKey(sessionStorage));
  const [me, setMe] = useState<Me>();
  const [meError, setMeError] = useState<ApiError>();
  const [attempt, setAttempt] = useState(0);
  const [notice, setNotice] = useState(() => takeNotice(sessionStorage));
  const [path, navigate] = usePath();

  const signOut = useCallback((why?: string) => {
    forget(sessionStorage, why);
    setNotice(why);
    setKey(undefined);
    setMe(undefined);
  }, []);

  const api = useMemo(
    () => (key ? new ApiClient({ key, onUnauthenticated: (e) => signOut(`Signed out: ${e.message} (${e.code}).`) }) : undefined),
    [key, signOut],
  );

  useEffect(() => {
    if (!api) return;
    let live = true;
    setMeError(undefined);
    // A refused key signs out (onUnauthenticated); any other failure keeps the key and offers a retry.
    api.get<Me>('/api/v1/me').then(
      (m) => {
        if (live) setMe(m);
      },
      (e: ApiError) => {
        if (live && e.status !== 401) setMeError(e);
      },
    );
    return () => {
      live = false;
    };
  }, [api, signOut, attempt]);

  if (!key || !api)
    return (
      <SignIn
        notice={notice}
        onKey={(k) => {
          saveKey(sessionStorage, k);
          setNotice(undefined);
          setKey(k);
        }}
      />
    );
  if (!me) {
    return (
      <main className="center">
        {meError ? (
          <div className="card signin">
            <h1>Edgeweave console</h1>
            <ErrorBox error={meError} title="Cannot reach the cloud" />
            <div className="actions">
              <button type="button" onClick={() => setAttempt((n) => n + 1)}>
                Try again
              </button>
              <button type="button" className="danger" onClick={() => signOut()}>
                Sign out
              </button>
            </div>
          </div>
        ) : (
          <p role="status">Signing in…</p>
        )}
      </main>
    );
  }
  return <SignedIn api={api} me={me} path={path} navigate={navigate} signOut={signOut} />;
}

function SignIn({ notice, onKey }: { notice?: string; onKey: (k: string) => void }) {
  const [text, setText] = useState('');
  const [error, setError] = useState<ApiError>();
  const [busy, setBusy] = useState(false);
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    const shape = checkKeyShape(text);
    if (!shape.ok) {
      setError(new ApiError(0, 'KEY_SHAPE', shape.error));
      return;
    }
    setBusy(true);
    setError(undefined);
    try {
      // Checked against the API before it is kept: a wrong key stays on this page with the reason.
      await new ApiClient({ key: shape.key }).get<Me>('/api/v1/me');
      onKey(shape.key);
    } catch (err) {
      setError(err instanceof ApiError ? err : new ApiError(0, 'CLIENT', (err as Error).message));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main className="center">
      <form className="card signin" onSubmit={submit} aria-labelledby="signin-title">
        <h1 id="signin-title">Edgeweave console</h1>
        {notice ? (
          <p className="notice" role="alert">
            {notice}
          </p>
        ) : null}
        <label htmlFor="apikey">API key</label>
        <input
          id="apikey"
          name="apikey"
          type="password"
          autoComplete="off"
          spellCheck={false}
          value={text}
          onChange={(e) => setText(e.target.value)}
          placeholder="ewk_…"
          aria-describedby="apikey-help"
          autoFocus
        />
        <p id="apikey-help" className="muted">
          The key stays in this browser tab only (session storage) and is sent to this cloud's API only.
        </p>
        <ErrorBox error={error} title="Sign-in failed" />
        <button type="submit" disabled={busy}>
          {busy ? 'Checking…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}

function SignedIn({
  api,
  me,
  path,
  navigate,
  signOut,
}: {
  api: ApiClient;
  me: Me;
  path: string;
  navigate: (to: string) => void;
  signOut: (n?: string) => void;
}) {
  const live = useMemo(() => new LiveStore(), []);
  useEffect(() => {
    // The lists come from the API; the stream brings changes. On every (re)connection the lists
    // are read again, so nothing that changed while the stream was down stays stale.
    const failed = (e: unknown) => live.setListError(e instanceof ApiError ? e : new ApiError(0, 'CLIENT', (e as Error).message));
    const refresh = () => {
      api.get<{ items: Site[] }>('/api/v1/sites').then((r) => live.setSites(r.items, Date.now()), failed);
      if (can(me.permissions, 'deployments:read'))
        api.get<{ items: Rollout[] }>('/api/v1/rollouts').then((r) => live.setRollouts(r.items), failed);
    };
    refresh();
    const c = connectEvents({
      key: api.o.key,
      onEvent: (ev) => {
        if (ev.event === 'ready') refresh();
        live.apply(ev, Date.now());
      },
      onState: (s) => {
        live.setStream(s);
        if (s.state === 'unauthenticated') signOut(`Signed out: ${s.error.message} (${s.error.code}).`);
      },
    });
    return () => c.close();
  }, [api, me, live, signOut]);
  const ctx = useMemo(() => ({ api, me, live, navigate, signOut }), [api, me, live, navigate, signOut]);
  return (
    <AppContext.Provider value={ctx}>
      <Layout path={path}>
        <Page path={path} />
      </Layout>
    </AppContext.Provider>
  );
}

const NAV: { to: string; label: string; perm: string }[] = [
  { to: '/', label: 'Fleet', perm: 'sites:read' },
  { to: '/apps', label: 'Apps', perm: 'apps:read' },
  { to: '/rollouts', label: 'Rollouts', perm: 'deployments:read' },
  { to: '/live', label: 'Live results', perm: 'results:read' },
  { to: '/endpoints', label: 'Endpoints', perm: 'apps:read' },
  { to: '/tokens', label: 'Join tokens', perm: 'tokens:read' },
];

/** An in-app link: a real <a href> (opens in a new tab, readable by screen readers), routed here. */
export function Link({ to, children, className }: { to: string; children: ReactNode; className?: string }) {
  const { navigate } = useApp();
  const on = (e: MouseEvent<HTMLAnchorElement>) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(to);
  };
  return (
    <a href={to} onClick={on} className={className}>
      {children}
    </a>
  );
}

function Layout({ path, children }: { path: string; children: ReactNode }) {
  const { me, signOut } = useApp();
  const live = useLive();
  const section = (to: string) => (to === '/' ? path === '/' || path.startsWith('/sites') : path.startsWith(to));
  return (
    <div className="shell">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="top">
        <span className="brand">Edgeweave</span>
        <nav aria-label="Main">
          <ul>
            {NAV.filter((n) => can(me.permissions, n.perm)).map((n) => (
              <li key={n.to}>
                <Link to={n.to} className={section(n.to) ? 'active' : undefined}>
                  {n.label}
                  {n.to === '/live' && live.unseenAlerts > 0 ? (
                    <span className="count" aria-label={`${live.unseenAlerts} new alerts`}>
                      {live.unseenAlerts}
                    </span>
                  ) : null}
                </Link>
              </li>
            ))}
          </ul>
        </nav>
        <div className="who">
          <StreamIndicator s={live.stream} />
          <span className="muted" title={me.keyId}>
            {me.keyName} ({me.role})
          </span>
          <button type="button" className="link" onClick={() => signOut()}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {children}
      </main>
    </div>
  );
}

/** Each page of the console by its path's first segment; the cloud serves index.html for exactly these. */
const PAGES: Record<ConsolePage, { perm: string; render: (rest?: string) => ReactNode }> = {
  sites: { perm: 'sites:read', render: (id) => (id ? <SitePage id={id} /> : <FleetPage />) },
  apps: { perm: 'apps:read', render: (name) => <AppsPage name={name} /> },
  rollouts: { perm: 'deployments:read', render: (id) => <RolloutsPage id={id} /> },
  live: { perm: 'results:read', render: () => <LivePage /> },
  endpoints: { perm: 'apps:read', render: () => <EndpointsPage /> },
  tokens: { perm: 'tokens:read', render: () => <TokensPage /> },
};

function Page({ path }: { path: string }) {
  const { me } = useApp();
  const seg = path.split('/').filter(Boolean).map(decodeURIComponent);
  const allowed = (p: string, el: ReactNode) => (can(me.permissions, p) ? el : <Forbidden />);
  if (seg.length === 0) return allowed('sites:read', <FleetPage />);
  const page = (CONSOLE_PAGES as readonly string[]).includes(seg[0]!) ? PAGES[seg[0] as ConsolePage] : undefined;
  if (!page)
    return (
      <div>
        <h1 tabIndex={-1}>Not found</h1>
        <p>
          No page at <code>{path}</code>. <Link to="/">Go to the fleet</Link>.
        </p>
      </div>
    );
  return allowed(page.perm, page.render(seg[1]));
}

function Forbidden() {
  return (
    <div>
      <h1 tabIndex={-1}>Not allowed</h1>
      <p>This API key's role may not see this page.</p>
    </div>
  );
}
