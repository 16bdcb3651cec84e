import { useEffect, useMemo, useState } from 'react';
import { Link } from '../App.tsx';
import { Badge, Empty, ErrorBox, Loading, Section } from '../components/ui.tsx';
import { Chart } from '../components/Chart.tsx';
import { useApi, useApp, useLive, useNow } from '../hooks.ts';
import { endpointStats, requestSeries } from '../state/derive.ts';
import type { RouteDecision, RoutedEndpoint } from '../types.ts';
import type { ApiError } from '../lib/api.ts';
import type { AppDetail } from '../types.ts';

/**
 * Endpoints: what the cloud's inference router serves (GET /v2/models) with what its audit says
 * about the recent requests — latency, throughput, cascade rate, where they went — and, below,
 * each endpoint on each site that runs its app, with the counters the site reports.
 */
export function EndpointsPage() {
  const { api } = useApp();
  const live = useLive();
  const running = useMemo(() => {
    const m = new Map<string, string[]>();
    for (const s of live.sites.values())
      for (const a of s.status?.apps ?? []) {
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
    Promise.all(
      missing.map((k) => {
        const at = k.lastIndexOf('@');
        return api.get<AppDetail>(`/api/v1/apps/${encodeURIComponent(k.slice(0, at))}/versions/${encodeURIComponent(k.slice(at + 1))}`);
      }),
    ).then(
      (list) => {
        if (!alive) return;
        setManifests((cur) => new Map([...cur, ...list.map((a) => [`${a.name}@${a.version}`, a] as const)]));
      },
      (e: ApiError) => {
        if (alive) setError(e);
      },
    );
    return () => {
      alive = false;
    };
  }, [keys.join()]);
  const rows = keys.flatMap((k) =>
    (manifests.get(k)?.manifest.spec.endpoints ?? []).map((e) => ({
      key: k,
      app: manifests.get(k)!,
      endpoint: e,
      sites: running.get(k) ?? [],
    })),
  );
  return (
    <div>
      <h1 tabIndex={-1}>Endpoints</h1>
      <Routed />
      <h2 className="subhead">On the sites</h2>
      <p className="muted">
        Each endpoint is also served by every site that runs its app, on that site's local API; the figures are the model counters the sites
        report.
      </p>
      <ErrorBox error={error} title="Cannot read an app version" />
      {!live.sitesLoaded ? (
        <p role="status" className="muted">
          Loading…
        </p>
      ) : rows.length === 0 ? (
        <Empty>
          No endpoint is served: no app that runs on a site declares <code>spec.endpoints</code>.
        </Empty>
      ) : (
        <div className="table-wrap">
          <table>
            <caption className="sr-only">Endpoints per site</caption>
            <thead>
              <tr>
                <th scope="col">Endpoint</th>
                <th scope="col">Model</th>
                <th scope="col">App</th>
                <th scope="col">Site</th>
                <th scope="col">State</th>
                <th scope="col">Requests</th>
                <th scope="col">Errors</th>
                <th scope="col">p95</th>
              </tr>
            </thead>
            <tbody>
              {rows.flatMap((r) =>
                r.sites.map((id) => {
                  const s = live.sites.get(id);
                  const model = s?.status?.models?.find((m) => m.app === r.app.name && m.name === r.endpoint.model);
                  return (
                    <tr key={`${r.key}/${r.endpoint.name}/${id}`}>
                      <th scope="row">{r.endpoint.name}</th>
                      <td>{r.endpoint.model ?? '—'}</td>
                      <td>
                        <Link to={`/apps/${encodeURIComponent(r.app.name)}`}>{r.key}</Link>
                      </td>
                      <td>
                        <Link to={`/sites/${encodeURIComponent(id)}`}>{s?.name ?? id}</Link> ({s?.state ?? 'unknown'})
                      </td>
                      <td>{model?.state ?? '—'}</td>
                      <td>{model?.stats?.requests ?? '—'}</td>
                      <td>{model?.stats?.errors ?? '—'}</td>
                      <td>{model?.stats?.p95Ms != null ? `${model.stats.p95Ms.toFixed(1)} ms` : '—'}</td>
                    </tr>
                  );
                }),
              )}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}

const WINDOW_MS = 10 * 60_000;

/** The router's view: endpoints served by the cloud and the last ten minutes of its audit. */
function Routed() {
  const live = useLive();
  const now = useNow(5000);
  const models = useApi<{ models: RoutedEndpoint[] }>('/v2/models');
  // The audit is read again every 5 s (it is not on the event stream).
  const decisions = useApi<{ items: RouteDecision[] }>('/api/v1/router/decisions?limit=5000');
  const { reload } = decisions;
  const tick = Math.floor(now / 5000);
  useEffect(() => {
    if (tick) reload();
  }, [tick, reload]);
  const stats = useMemo(() => endpointStats(decisions.data?.items ?? [], now, WINDOW_MS), [decisions.data, now]);
  const names = (models.data?.models ?? []).map((m) => m.name);
  const series = useMemo(
    () => requestSeries(decisions.data?.items ?? [], names.slice(0, 6), now, WINDOW_MS),
    [decisions.data, now, names.join()],
  );
  const target = (t: string) => (t === 'cloud' ? 'cloud runtime' : (live.sites.get(t)?.name ?? t));
  return (
    <Section title="Through the cloud's router">
      <p className="muted">
        Clients call the cloud (<code>POST /v2/models/&lt;endpoint&gt;/infer</code>, <code>/v1/chat/completions</code>); the router sends
        each request to a site allowed to see its data, or to the cloud-side fallback. Figures from the routing audit, last 10 minutes.
      </p>
      {models.loading && !models.data ? <Loading what="endpoints" /> : null}
      <ErrorBox error={models.error ?? decisions.error} title="Cannot read the router" />
      {models.data ? (
        models.data.models.length === 0 ? (
          <Empty>
            No endpoint is routed: no deployed app declares <code>spec.endpoints</code>.
          </Empty>
        ) : (
          <>
            <div className="table-wrap">
              <table>
                <caption className="sr-only">Routed endpoints and their recent figures</caption>
                <thead>
                  <tr>
                    <th scope="col">Endpoint</th>
                    <th scope="col">Ready</th>
                    <th scope="col">Requests/min</th>
                    <th scope="col">Errors</th>
                    <th scope="col">p50</th>
                    <th scope="col">p95</th>
                    <th scope="col">Cascade rate</th>
                    <th scope="col">Answered by</th>
                  </tr>
                </thead>
                <tbody>
                  {models.data.models.map((m) => {
                    const st = stats.find((x) => x.endpoint === m.name);
                    return (
                      <tr key={m.name} data-testid="routed-endpoint">
                        <th scope="row">
                          {m.name}
                          <div className="muted">
                            {m.kind ?? m.platform} · {m.versions.join(', ')}
                          </div>
                        </th>
                        <td>{m.ready ? <Badge kind="online">ready</Badge> : <Badge kind="offline">no target</Badge>}</td>
                        <td>{st ? st.perMinute.toFixed(1) : '0'}</td>
                        <td>
                          {st ? (
                            <>
                              {st.errors}
                              {st.errorCodes.length ? (
                                <div className="muted">{st.errorCodes.map(([c, n]) => `${c} ×${n}`).join(', ')}</div>
                              ) : null}
                            </>
                          ) : (
                            '0'
                          )}
                        </td>
                        <td>{st?.p50Ms != null ? `${st.p50Ms} ms` : '—'}</td>
                        <td>{st?.p95Ms != null ? `${st.p95Ms} ms` : '—'}</td>
                        <td>{st?.cascadeRate != null ? `${(st.cascadeRate * 100).toFixed(1)} % escalated` : '—'}</td>
                        <td>{st?.answeredBy.length ? st.answeredBy.map(([t, n]) => `${target(t)} ×${n}`).join(', ') : '—'}</td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            </div>
            {names.length > 0 ? (
              <Chart title="Routed requests per second (10 s buckets)" series={names.slice(0, 6)} data={series} height={160} />
            ) : null}
          </>
        )
      ) : null}
    </Section>
  );
}
