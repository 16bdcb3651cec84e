import { useMemo, useState } from 'react';
import { Link } from '../App.tsx';
import { useApi } from '../hooks.ts';
import { Empty, ErrorBox, Loading, Section } from '../components/ui.tsx';
import { canonicalJson, lineDiff } from '../state/derive.ts';
import type { AppDetail, AppVersion, Deployment } from '../types.ts';

export function AppsPage({ name }: { name?: string }) {
  const list = useApi<{ items: AppVersion[] }>('/api/v1/apps');
  const byName = useMemo(() => {
    const m = new Map<string, AppVersion[]>();
    for (const a of list.data?.items ?? []) m.set(a.name, [...(m.get(a.name) ?? []), a]);
    for (const v of m.values()) v.sort((a, b) => a.createdAt - b.createdAt);
    return m;
  }, [list.data]);
  return (
    <div>
      <h1 tabIndex={-1}>
        {name ? (
          <>
            <Link to="/apps">Apps</Link> / {name}
          </>
        ) : (
          'Apps'
        )}
      </h1>
      {list.loading && !list.data ? <Loading what="apps" /> : null}
      <ErrorBox error={list.error} title="Cannot list apps" />
      {list.data && byName.size === 0 ? (
        <Empty>
          No apps pushed yet. Start from a template: <code>edgeweave app init</code>, then <code>edgeweave app push</code>.
        </Empty>
      ) : null}
      {name ? (
        byName.has(name) ? (
          <AppDetailView name={name} versions={byName.get(name)!} />
        ) : list.data ? (
          <Empty>No app named {name}.</Empty>
        ) : null
      ) : (
        <ul className="app-list">
          {[...byName.entries()].map(([n, vs]) => (
            <li key={n} className="card">
              <Link to={`/apps/${encodeURIComponent(n)}`} className="site-name">
                {n}
              </Link>
              <span className="muted">
                {' '}
                {vs.length} version{vs.length === 1 ? '' : 's'}, latest {vs[vs.length - 1]!.version}
              </span>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

function AppDetailView({ name, versions }: { name: string; versions: AppVersion[] }) {
  const latest = versions[versions.length - 1]!.version;
  const [selected, setSelected] = useState(latest);
  const [from, setFrom] = useState(versions.length > 1 ? versions[versions.length - 2]!.version : latest);
  const [to, setTo] = useState(latest);
  const deps = useApi<{ items: Deployment[] }>('/api/v1/deployments');
  const mine = (deps.data?.items ?? []).filter((d) => d.app === name);
  return (
    <>
      <Section title="Versions">
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Version</th>
                <th scope="col">Pushed</th>
                <th scope="col">Digest</th>
                <th scope="col">Deployed to</th>
              </tr>
            </thead>
            <tbody>
              {[...versions].reverse().map((v) => (
                <tr key={v.version} aria-selected={v.version === selected}>
                  <th scope="row">
                    <button type="button" className="link" onClick={() => setSelected(v.version)} aria-pressed={v.version === selected}>
                      {v.version}
                    </button>
                  </th>
                  <td>{new Date(v.createdAt).toLocaleString()}</td>
                  <td>
                    <code title={v.digest}>{v.digest.slice(0, 12)}</code>
                  </td>
                  <td>
                    {mine
                      .filter((d) => d.version === v.version)
                      .map((d) => (
                        <div key={d.id}>
                          <Link to={`/rollouts/${d.id}`}>
                            {Object.entries(d.selector)
                              .map(([k, x]) => `${k}=${x}`)
                              .join(',') || 'all sites'}
                          </Link>
                        </div>
                      ))}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </Section>
      <Manifest name={name} version={selected} />
      {versions.length > 1 ? (
        <Section title="Diff between versions">
          <div className="row">
            <label>
              From{' '}
              <select value={from} onChange={(e) => setFrom(e.target.value)}>
                {versions.map((v) => (
                  <option key={v.version}>{v.version}</option>
                ))}
              </select>
            </label>
            <label>
              To{' '}
              <select value={to} onChange={(e) => setTo(e.target.value)}>
                {versions.map((v) => (
                  <option key={v.version}>{v.version}</option>
                ))}
              </select>
            </label>
          </div>
          <Diff name={name} from={from} to={to} />
        </Section>
      ) : null}
    </>
  );
}

const versionPath = (name: string, v: string) => `/api/v1/apps/${encodeURIComponent(name)}/versions/${encodeURIComponent(v)}`;

function Manifest({ name, version }: { name: string; version: string }) {
  const r = useApi<AppDetail>(versionPath(name, version));
  const m = r.data?.manifest;
  return (
    <Section title={`Manifest of ${version}`}>
      {r.loading && !r.data ? <Loading what="the manifest" /> : null}
      <ErrorBox error={r.error} title="Cannot read the manifest" />
      {m ? (
        <>
          <dl className="facts wide">
            <dt>Models</dt>
            <dd>{(m.spec.models ?? []).map((x) => `${x.name} (${x.format ?? 'model'})`).join(', ') || 'none'}</dd>
            <dt>Streams</dt>
            <dd>{(m.spec.streams ?? []).map((x) => `${x.name}${x.topic ? ` ← ${x.topic}` : ''}`).join(', ') || 'none'}</dd>
            <dt>Rules</dt>
            <dd>{(m.spec.rules ?? []).map((x) => x.name).join(', ') || 'none'}</dd>
            <dt>Endpoints</dt>
            <dd>{(m.spec.endpoints ?? []).map((x) => x.name).join(', ') || 'none'}</dd>
          </dl>
          <pre className="code-block" tabIndex={0} aria-label={`manifest of ${name}@${version}`}>
            {canonicalJson(m)}
          </pre>
        </>
      ) : null}
    </Section>
  );
}

function Diff({ name, from, to }: { name: string; from: string; to: string }) {
  const a = useApi<AppDetail>(versionPath(name, from));
  const b = useApi<AppDetail>(versionPath(name, to));
  const lines = useMemo(
    () => (a.data && b.data ? lineDiff(canonicalJson(a.data.manifest), canonicalJson(b.data.manifest)) : []),
    [a.data, b.data],
  );
  if (a.error || b.error) return <ErrorBox error={a.error ?? b.error} title="Cannot read a version" />;
  if (!a.data || !b.data) return <Loading what="the versions" />;
  const changes = lines.filter((l) => l.op !== ' ').length;
  return (
    <>
      <p className="muted" role="status">
        {changes === 0
          ? 'The two manifests are identical.'
          : `${lines.filter((l) => l.op === '+').length} lines added, ${lines.filter((l) => l.op === '-').length} removed.`}
      </p>
      <pre className="code-block diff" tabIndex={0} aria-label={`diff from ${from} to ${to}`}>
        {lines.map((l, i) => (
          <div key={i} className={l.op === '+' ? 'add' : l.op === '-' ? 'del' : undefined}>
            <span aria-hidden="true">{l.op} </span>
            {l.op === '+' ? <span className="sr-only">added: </span> : l.op === '-' ? <span className="sr-only">removed: </span> : null}
            {l.text}
          </div>
        ))}
      </pre>
    </>
  );
}
