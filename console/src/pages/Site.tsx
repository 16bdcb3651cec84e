import { useMemo } from 'react';
import { Link } from '../App.tsx';
import { useApi, useApp, useLive, useNow } from '../hooks.ts';
import { Badge, Empty, ErrorBox, Labels, Loading, Section } from '../components/ui.tsx';
import { Chart } from '../components/Chart.tsx';
import { rateOf, type SiteSample } from '../state/live.ts';
import { ago, bytes } from '../state/derive.ts';
import type { Site } from '../types.ts';

export function SitePage({ id }: { id: string }) {
  const live = useLive();
  const now = useNow(1000);
  const fetched = useApi<Site>(live.sites.has(id) ? null : `/api/v1/sites/${encodeURIComponent(id)}`);
  const s = live.sites.get(id) ?? fetched.data;
  const samples = live.siteSamples(id);
  if (!s) {
    return (
      <div>
        <h1 tabIndex={-1}>Site {id}</h1>
        {fetched.loading ? <Loading what="the site" /> : <ErrorBox error={fetched.error} title="Cannot load the site" />}
        <p>
          <Link to="/">Back to the fleet</Link>
        </p>
      </div>
    );
  }
  const st = s.status;
  return (
    <div>
      <p className="crumbs">
        <Link to="/">Fleet</Link> / {s.region}
      </p>
      <h1 tabIndex={-1}>
        {s.name} <Badge kind={s.state}>{s.state}</Badge>
      </h1>
      <dl className="facts wide">
        <dt>Id</dt>
        <dd>
          <code>{s.id}</code>
        </dd>
        <dt>Region</dt>
        <dd>{s.region}</dd>
        <dt>Last seen</dt>
        <dd>{ago(s.lastSeenAt, now)}</dd>
        <dt>Agent</dt>
        <dd>{st ? `${st.agentVersion}, up ${Math.round(st.uptimeS)} s` : '—'}</dd>
        <dt>Desired state</dt>
        <dd>
          {s.inSync ? `in sync (generation ${s.reportedGeneration})` : `generation ${s.reportedGeneration} of ${s.desiredGeneration}`}
        </dd>
        <dt>Labels</dt>
        <dd>
          <Labels labels={s.labels} />
        </dd>
      </dl>
      {st?.applyError ? (
        <div className="error" role="alert">
          <strong>Apply error</strong> {st.applyError}
        </div>
      ) : null}
      {!st ? (
        <Empty>This site has not reported its status yet.</Empty>
      ) : (
        <>
          <Section title="Resource use">
            <dl className="facts wide">
              <dt>Machine</dt>
              <dd>
                {st.system.hostname} ({st.system.platform}/{st.system.arch}), {st.system.cores} cores
                {st.accelerators.length ? `, ${st.accelerators.join(', ')}` : ''}
              </dd>
              <dt>Memory</dt>
              <dd>
                {bytes(st.system.memoryTotalBytes - st.system.memoryFreeBytes)} of {bytes(st.system.memoryTotalBytes)} used
              </dd>
              <dt>Disk</dt>
              <dd>
                {bytes(st.system.diskTotalBytes - st.system.diskFreeBytes)} of {bytes(st.system.diskTotalBytes)} used
              </dd>
              <dt>Devices</dt>
              <dd>
                {st.devices.connected} connected, {st.devices.messagesIn} messages in
              </dd>
              <dt>Outbox</dt>
              <dd>
                {st.outbox.pending} pending, {st.outbox.dropped} dropped
              </dd>
              <dt>Runtimes</dt>
              <dd>{st.runtimes.join(', ') || '—'}</dd>
            </dl>
            <div className="charts">
              <Chart title="Load (1 min average)" series={['load']} data={series(samples, (x) => x.load)} />
              <Chart title="Results per second from this site" series={['results/s']} data={live.resultRate(now, 120, id)} />
            </div>
          </Section>
          <Section title="Apps">
            {st.apps.length === 0 ? (
              <Empty>No app runs here. Deploy one to a pool this site is in.</Empty>
            ) : (
              <ul>
                {st.apps.map((a) => (
                  <li key={a.name}>
                    <Link to={`/apps/${encodeURIComponent(a.name)}`}>{a.name}</Link>@{a.version}
                  </li>
                ))}
              </ul>
            )}
          </Section>
          <RulesSection site={s} samples={samples} />
          <ModelsSection site={s} samples={samples} />
        </>
      )}
      {s.state === 'online' ? (
        <>
          <DeadLetters id={s.id} />
          <Logs id={s.id} />
        </>
      ) : (
        <Section title="Dead letters and logs">
          <Empty>The site is {s.state}: dead letters and logs are asked of the site itself, so they are shown when it is online.</Empty>
        </Section>
      )}
      <Egress id={s.id} />
    </div>
  );
}

function series(samples: SiteSample[], pick: (s: SiteSample) => number | null): (number | null)[][] {
  return [samples.map((x) => x.t), samples.map(pick)];
}

function RulesSection({ site, samples }: { site: Site; samples: SiteSample[] }) {
  const rules = site.status?.rules ?? [];
  const keys = rules.map((r) => `${r.app}/${r.rule}`);
  const outRate = useMemo(() => {
    const series = keys.map((k) => rateOf(samples, (x) => x.rules[k]?.out));
    return [series[0]?.[0] ?? [], ...series.map((x) => x[1])];
  }, [samples, keys.join()]);
  return (
    <Section title="Rules">
      {rules.length === 0 ? (
        <Empty>No streaming rules run on this site.</Empty>
      ) : (
        <>
          <div className="table-wrap">
            <table>
              <caption className="sr-only">Rules and their counters</caption>
              <thead>
                <tr>
                  <th scope="col">Rule</th>
                  <th scope="col">State</th>
                  <th scope="col">In</th>
                  <th scope="col">Out</th>
                  <th scope="col">Filtered</th>
                  <th scope="col">Late</th>
                  <th scope="col">Errors</th>
                  <th scope="col">Dropped</th>
                  <th scope="col">Sink errors</th>
                  <th scope="col">Last output</th>
                </tr>
              </thead>
              <tbody>
                {rules.map((r) => (
                  <tr key={`${r.app}/${r.rule}`}>
                    <th scope="row">
                      {r.app}/{r.rule}
                    </th>
                    <td>
                      <Badge kind={r.state === 'running' ? 'online' : 'failed'}>{r.state}</Badge>
                      {r.error ? <div className="error-text">{r.error}</div> : null}
                    </td>
                    <td>{r.in}</td>
                    <td>{r.out}</td>
                    <td>{r.filtered}</td>
                    <td>{r.late}</td>
                    <td>{r.errors}</td>
                    <td>{r.dropped}</td>
                    <td>{r.sinkErrors}</td>
                    <td>{r.lastOutputAt ? new Date(r.lastOutputAt).toLocaleTimeString() : '—'}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <Chart title="Rule output per second" series={keys} data={outRate} />
        </>
      )}
    </Section>
  );
}

function ModelsSection({ site, samples }: { site: Site; samples: SiteSample[] }) {
  const models = site.status?.models ?? [];
  const keys = models.filter((m) => m.stats).map((m) => `${m.app}/${m.name}`);
  const p95 = useMemo(
    () => [samples.map((x) => x.t), ...keys.map((k) => samples.map((x) => x.models[k]?.p95Ms ?? null))],
    [samples, keys.join()],
  );
  const rps = useMemo(() => {
    const series = keys.map((k) => rateOf(samples, (x) => x.models[k]?.requests));
    return [series[0]?.[0] ?? [], ...series.map((x) => x[1])];
  }, [samples, keys.join()]);
  return (
    <Section title="Models">
      {models.length === 0 ? (
        <Empty>No models on this site.</Empty>
      ) : (
        <>
          <div className="table-wrap">
            <table>
              <caption className="sr-only">Models, their state and counters</caption>
              <thead>
                <tr>
                  <th scope="col">Model</th>
                  <th scope="col">State</th>
                  <th scope="col">Device</th>
                  <th scope="col">Requests</th>
                  <th scope="col">Errors</th>
                  <th scope="col">p95</th>
                  <th scope="col">Mean output</th>
                </tr>
              </thead>
              <tbody>
                {models.map((m) => (
                  <tr key={`${m.app}/${m.name}`}>
                    <th scope="row">
                      {m.app}/{m.name}@{m.version}
                    </th>
                    <td>
                      <Badge kind={m.state === 'ready' ? 'online' : m.state === 'failed' ? 'failed' : 'pending'}>{m.state}</Badge>
                      {m.download && m.state === 'fetching' ? (
                        <progress max={m.download.total} value={m.download.received} aria-label="download progress" />
                      ) : null}
                      {m.error ? <div className="error-text">{m.error}</div> : null}
                    </td>
                    <td>{m.device ?? '—'}</td>
                    <td>{m.stats?.requests ?? '—'}</td>
                    <td>{m.stats?.errors ?? '—'}</td>
                    <td>{m.stats?.p95Ms != null ? `${m.stats.p95Ms.toFixed(1)} ms` : '—'}</td>
                    <td>{m.stats?.outputMean != null ? m.stats.outputMean.toFixed(3) : '—'}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          {keys.length > 0 ? (
            <div className="charts">
              <Chart title="Model p95 latency" series={keys} data={p95} unit=" ms" />
              <Chart title="Model requests per second" series={keys} data={rps} />
            </div>
          ) : null}
        </>
      )}
    </Section>
  );
}

function DeadLetters({ id }: { id: string }) {
  const r = useApi<{
    total: number;
    items: { id: number; at: number; app: string; stream: string; reason: string; payloadBytes: number }[];
  }>(`/api/v1/sites/${encodeURIComponent(id)}/dead-letters?limit=50`);
  return (
    <Section
      title="Dead letters"
      actions={
        <button type="button" onClick={r.reload}>
          Refresh
        </button>
      }
    >
      {r.loading && !r.data ? <Loading what="dead letters" /> : null}
      <ErrorBox error={r.error} title="Cannot read dead letters" />
      {r.data ? (
        r.data.items.length === 0 ? (
          <Empty>No dead letters: every record this site received was usable.</Empty>
        ) : (
          <div className="table-wrap">
            <p className="muted">
              {r.data.total} in total; the newest {r.data.items.length} (reasons and sizes only — raw device data stays on the site).
            </p>
            <table>
              <thead>
                <tr>
                  <th scope="col">When</th>
                  <th scope="col">App / stream</th>
                  <th scope="col">Reason</th>
                  <th scope="col">Bytes</th>
                </tr>
              </thead>
              <tbody>
                {r.data.items.map((d) => (
                  <tr key={d.id}>
                    <td>{new Date(d.at).toLocaleString()}</td>
                    <td>
                      {d.app}/{d.stream}
                    </td>
                    <td>{d.reason}</td>
                    <td>{d.payloadBytes}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )
      ) : null}
    </Section>
  );
}

function Logs({ id }: { id: string }) {
  const r = useApi<{ lines: { time: number; line: string }[] }>(`/api/v1/sites/${encodeURIComponent(id)}/logs?limit=200`);
  return (
    <Section
      title="Logs"
      actions={
        <button type="button" onClick={r.reload}>
          Refresh
        </button>
      }
    >
      {r.loading && !r.data ? <Loading what="logs" /> : null}
      <ErrorBox error={r.error} title="Cannot read logs" />
      {r.data ? (
        r.data.lines.length === 0 ? (
          <Empty>No log lines.</Empty>
        ) : (
          <pre className="logs" tabIndex={0} aria-label="site log lines">
            {r.data.lines.map((l) => l.line).join('\n')}
          </pre>
        )
      ) : null}
    </Section>
  );
}

function Egress({ id }: { id: string }) {
  const { me } = useApp();
  const r = useApi<{ items: Record<string, unknown>[] }>(
    me.permissions.includes('results:read') ? `/api/v1/sites/${encodeURIComponent(id)}/egress?limit=200` : null,
  );
  const rows = r.data?.items ?? [];
  const cols = [...new Set(rows.flatMap((x) => Object.keys(x)))].slice(0, 8);
  return (
    <Section
      title="Egress audit"
      actions={
        <button type="button" onClick={r.reload}>
          Refresh
        </button>
      }
    >
      {r.loading && !r.data ? <Loading what="the egress audit" /> : null}
      <ErrorBox error={r.error} title="Cannot read the egress audit" />
      {r.data ? (
        rows.length === 0 ? (
          <Empty>Nothing has left this site yet (no egress audit records).</Empty>
        ) : (
          <div className="table-wrap">
            <table>
              <thead>
                <tr>
                  {cols.map((c) => (
                    <th key={c} scope="col">
                      {c}
                    </th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {rows
                  .slice(-100)
                  .reverse()
                  .map((x, i) => (
                    <tr key={i}>
                      {cols.map((c) => (
                        <td key={c}>{fmt(x[c])}</td>
                      ))}
                    </tr>
                  ))}
              </tbody>
            </table>
          </div>
        )
      ) : null}
    </Section>
  );
}

function fmt(v: unknown): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}
