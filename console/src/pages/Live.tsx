import { useEffect, useMemo, useState } from 'react';
import { Link } from '../App.tsx';
import { useLive, useNow } from '../hooks.ts';
import { Empty } from '../components/ui.tsx';
import { Chart } from '../components/Chart.tsx';
import { isAlert, numericSeries } from '../state/live.ts';
import type { Result } from '../types.ts';

export function LivePage() {
  const live = useLive();
  const now = useNow(1000);
  const [stream, setStream] = useState('');
  useEffect(() => {
    live.markAlertsSeen();
  }, [live, live.unseenAlerts]);
  const results = live.results.toArray().reverse();
  const alerts = live.alerts.toArray().reverse();
  const streams = useMemo(() => [...new Set(results.map((r) => r.stream))].sort(), [results.length, live.version]);
  const shown = stream ? results.filter((r) => r.stream === stream) : results;
  // A numeric field of the chosen stream's results, charted as they arrive.
  const numeric = useMemo(() => numericSeries(stream ? shown.slice().reverse() : []), [shown, stream]);
  return (
    <div>
      <h1 tabIndex={-1}>Live results and alerts</h1>
      {live.skipped > 0 ? (
        <p className="notice" role="status">
          {live.skipped} results arrived faster than the live view shows; read them all with <code>GET /api/v1/results</code>.
        </p>
      ) : null}
      <Chart title="Results per second, whole fleet" series={['results/s']} data={live.resultRate(now, 120)} height={150} />
      <section className="card" aria-labelledby="alerts-h">
        <div className="card-head">
          <h2 id="alerts-h">Alerts</h2>
        </div>
        <div aria-live="polite" aria-relevant="additions" data-testid="alerts">
          {alerts.length === 0 ? (
            <Empty>No alerts since you signed in. Alerts are results on streams whose name contains "alert" or "alarm".</Empty>
          ) : (
            <ul className="feed">
              {alerts.slice(0, 50).map((a) => (
                <ResultItem key={`${a.siteId}/${a.id}`} r={a} siteName={live.sites.get(a.siteId)?.name} alert />
              ))}
            </ul>
          )}
        </div>
      </section>
      <section className="card" aria-labelledby="results-h">
        <div className="card-head">
          <h2 id="results-h">Results</h2>
          <label>
            Stream{' '}
            <select value={stream} onChange={(e) => setStream(e.target.value)}>
              <option value="">all</option>
              {streams.map((s) => (
                <option key={s}>{s}</option>
              ))}
            </select>
          </label>
        </div>
        {numeric.keys.length > 0 ? <Chart title={`${stream}: numeric fields`} series={numeric.keys} data={numeric.data} /> : null}
        {shown.length === 0 ? (
          <Empty>No results since you signed in; they appear here as sites send them.</Empty>
        ) : (
          <ul className="feed" data-testid="results">
            {shown.slice(0, 100).map((r) => (
              <ResultItem key={`${r.siteId}/${r.id}`} r={r} siteName={live.sites.get(r.siteId)?.name} alert={isAlert(r)} />
            ))}
          </ul>
        )}
      </section>
    </div>
  );
}

function ResultItem({ r, siteName, alert }: { r: Result; siteName?: string; alert?: boolean }) {
  return (
    <li className={alert ? 'alert-item' : undefined}>
      <time dateTime={new Date(r.at).toISOString()}>{new Date(r.at).toLocaleTimeString()}</time>{' '}
      <Link to={`/sites/${encodeURIComponent(r.siteId)}`}>{siteName ?? r.siteId}</Link> <strong>{r.stream}</strong>
      {r.app ? (
        <span className="muted">
          {' '}
          {r.app}
          {r.rule ? `/${r.rule}` : ''}
        </span>
      ) : null}{' '}
      <code>{JSON.stringify(r.data).slice(0, 300)}</code>
    </li>
  );
}
