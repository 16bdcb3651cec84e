import { useEffect, useMemo, useState } from 'react';
import { Link } from '../App.tsx';
import { useApp, useLive } from '../hooks.ts';
import { Empty, ErrorBox } from '../components/ui.tsx';
import type { ApiError } from '../lib/api.ts';
import type { AppDetail } from '../types.ts';

/**
 * Endpoints as they exist today: each app's manifest names endpoints (a model exposed for
 * requests) that every site running the app serves on its own local API. The cloud inference
 * router (routing, cascades, cloud-side latency) is not built yet, and this page says so rather
 * than draw numbers that do not exist.
 */
export function EndpointsPage() {
  const { api } = useApp();
  const live = useLive();
  const running = useMemo(() => {
    const m = new Map<string, string[]>();
    for (const s of live.sites.values()) for (const a of s.status?.apps ?? []) {
      const k = `${a.name}@${a.version}`;
      m.set(k, [...(m.get(k) ?? []), s.id]);
    }
    return m;
  }, [live.version]);
  const keys = [...running.keys()].sort();
  const [manifests, setManifests] = useState(new Map<string, AppDetail>());
  const [error, setError] = useState<ApiError>();
  useEffect(() => {
    const missing = keys.filter((k) => !manifests.has(k));
    if (missing.length === 0) return;
    let alive = true;
    Promise.all(missing.map((k) => {
      const at = k.lastIndexOf('@');
      return api.get<AppDetail>(`/api/v1/apps/${encodeURIComponent(k.slice(0, at))}/versions/${encodeURIComponent(k.slice(at + 1))}`);
    })).then((list) => {
      if (!alive) return;
      setManifests((cur) => new Map([...cur, ...list.map((a) => [`${a.name}@${a.version}`, a] as const)]));
    }, (e: ApiError) => { if (alive) setError(e); });
    return () => { alive = false; };
  }, [keys.join()]);
  const rows = keys.flatMap((k) => (manifests.get(k)?.manifest.spec.endpoints ?? []).map((e) => ({ key: k, app: manifests.get(k)!, endpoint: e, sites: running.get(k) ?? [] })));
  return (
    <div>
      <h1 tabIndex={-1}>Endpoints</h1>
      <p className="notice">The cloud inference router is not built yet: there is no cloud-side endpoint, routing, cascade rate or cloud latency to show. Each endpoint below is served by every site that runs its app, on that site's local API (<code>POST /v2/models/&lt;endpoint&gt;/infer</code>, or <code>/v1/chat/completions</code> for LLMs); the figures are the model counters the sites report.</p>
      <ErrorBox error={error} title="Cannot read an app version" />
      {!live.sitesLoaded ? <p role="status" className="muted">Loading…</p> : rows.length === 0 ? <Empty>No endpoint is served: no app that runs on a site declares <code>spec.endpoints</code>.</Empty> : (
        <div className="table-wrap">
          <table>
            <caption className="sr-only">Endpoints per site</caption>
            <thead><tr><th scope="col">Endpoint</th><th scope="col">Model</th><th scope="col">App</th><th scope="col">Site</th><th scope="col">State</th><th scope="col">Requests</th><th scope="col">Errors</th><th scope="col">p95</th></tr></thead>
            <tbody>
              {rows.flatMap((r) => r.sites.map((id) => {
                const s = live.sites.get(id);
                const model = s?.status?.models?.find((m) => m.app === r.app.name && m.name === r.endpoint.model);
                return (
                  <tr key={`${r.key}/${r.endpoint.name}/${id}`}>
                    <th scope="row">{r.endpoint.name}</th>
                    <td>{r.endpoint.model ?? '—'}</td>
                    <td><Link to={`/apps/${encodeURIComponent(r.app.name)}`}>{r.key}</Link></td>
                    <td><Link to={`/sites/${encodeURIComponent(id)}`}>{s?.name ?? id}</Link> ({s?.state ?? 'unknown'})</td>
                    <td>{model?.state ?? '—'}</td>
                    <td>{model?.stats?.requests ?? '—'}</td>
                    <td>{model?.stats?.errors ?? '—'}</td>
                    <td>{model?.stats?.p95Ms != null ? `${model.stats.p95Ms.toFixed(1)} ms` : '—'}</td>
                  </tr>
                );
              }))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
