import type { ReactNode } from 'react';
import type { ApiError } from '../lib/api.ts';
import type { StreamState } from '../lib/events-client.ts';

/** An API error where it happened: its stable code, its message, the field it is about. */
export function ErrorBox({ error, title }: { error: ApiError | undefined; title?: string }) {
  if (!error) return null;
  return (
    <div className="error" role="alert">
      <strong>{title ?? 'Error'}</strong> <code className="code">{error.code}</code>
      <span> {error.message}</span>
      {error.path ? (
        <span className="muted">
          {' '}
          (field <code>{error.path}</code>)
        </span>
      ) : null}
    </div>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p className="muted" role="status" aria-live="polite">
      Loading {what}…
    </p>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <div className="empty">{children}</div>;
}

export function Badge({ kind, children }: { kind: string; children: ReactNode }) {
  return <span className={`badge badge-${kind}`}>{children}</span>;
}

export function Labels({ labels }: { labels: Record<string, string> }) {
  const e = Object.entries(labels);
  if (e.length === 0) return <span className="muted">no labels</span>;
  return (
    <ul className="labels" aria-label="labels">
      {e.map(([k, v]) => (
        <li key={k} className="label">
          {k}={v}
        </li>
      ))}
    </ul>
  );
}

export function StreamIndicator({ s }: { s: StreamState }) {
  const text =
    s.state === 'live'
      ? 'Live'
      : s.state === 'connecting'
        ? 'Connecting…'
        : s.state === 'reconnecting'
          ? `Reconnecting in ${Math.ceil(s.retryInMs / 1000)} s — ${s.error.message}`
          : s.state === 'unauthenticated'
            ? 'Signed out'
            : 'Stopped';
  return (
    <span className={`stream stream-${s.state}`} role="status" aria-live="polite" title={text} data-testid="stream-state">
      {text}
    </span>
  );
}

export function Section({ title, children, actions }: { title: string; children: ReactNode; actions?: ReactNode }) {
  const id = `sec-${title.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
  return (
    <section className="card" aria-labelledby={id}>
      <div className="card-head">
        <h2 id={id}>{title}</h2>
        {actions}
      </div>
      {children}
    </section>
  );
}
