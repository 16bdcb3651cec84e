import { useMemo, useState } from 'react';
import { Link } from '../App.tsx';
import { useLive, useNow } from '../hooks.ts';
import { Badge, Empty, ErrorBox, Labels } from '../components/ui.tsx';
import { ApiError } from '../lib/api.ts';
import { Chart } from '../components/Chart.tsx';
import { ago, fleetCounts, groupByRegion, parseLabelFilter, siteMatches } from '../state/derive.ts';

const PER_REGION = 48;

export function FleetPage() {
  const live = useLive();
  const now = useNow(1000);
  const [filter, setFilter] = useState('');
  // A large region shows its first sites (offline ones first) until asked for all.
  const [expanded, setExpanded] = useState(new Set<string>());
  const parsed = useMemo(() => parseLabelFilter(filter), [filter]);
  const all = [...live.sites.values()];
  const shown = all.filter((s) => siteMatches(s, parsed));
  const counts = fleetCounts(shown);
  const groups = groupByRegion(shown);
  const rate = live.resultRate(now, 120);
  const loaded = live.sitesLoaded;
  return (
    <div>
      <h1 tabIndex={-1}>Fleet</h1>
      <div className="summary" aria-label="fleet summary">
        <div className="stat">
          <span className="num" data-testid="sites-online">
            {counts.online}
          </span>{' '}
          online
        </div>
        <div className="stat">
          <span className="num">{counts.offline}</span> offline
        </div>
        <div className="stat">
          <span className="num">{counts.revoked}</span> revoked
        </div>
        <div className="stat">
          <span className="num">{counts.total}</span> sites shown
        </div>
      </div>
      <div className="filter">
        <label htmlFor="label-filter">Filter by label</label>
        <input
          id="label-filter"
          value={filter}
          onChange={(e) => setFilter(e.target.value)}
          placeholder="city=hangzhou industry!=retail gpu"
          aria-invalid={!parsed.ok}
          aria-describedby="label-filter-help"
        />
        <span id="label-filter-help" className={parsed.ok ? 'muted' : 'error-text'}>
          {parsed.ok ? 'key=value, key!=value or key; region=… also filters by region' : parsed.error}
        </span>
      </div>
      <Chart title="Results per second, whole fleet" series={['results/s']} data={rate} height={140} />
      {live.listError ? <ErrorBox error={new ApiError(0, live.listError.code, live.listError.message)} title="Cannot list sites" /> : null}
      {!loaded ? (
        live.listError ? null : (
          <p role="status" className="muted">
            Loading sites…
          </p>
        )
      ) : all.length === 0 ? (
        <Empty>
          No sites yet. Create a <Link to="/tokens">join token</Link> and run its one-line command on an edge machine.
        </Empty>
      ) : shown.length === 0 ? (
        <Empty>No site matches this filter.</Empty>
      ) : (
        groups.map((g) => (
          <section key={g.region} className="region" aria-labelledby={`region-${g.region}`}>
            <h2 id={`region-${g.region}`}>
              {g.region}{' '}
              <span className="muted">
                ({g.sites.filter((s) => s.state === 'online').length}/{g.sites.length} online)
              </span>
            </h2>
            <ul className="site-grid">
              {(expanded.has(g.region) ? g.sites : g.sites.slice(0, PER_REGION)).map((s) => {
                const st = s.status;
                const load = st ? st.system.loadAvg1 / Math.max(1, st.system.cores) : null;
                return (
                  <li key={s.id} className={`site-card state-${s.state}`} data-testid="site-card" data-state={s.state}>
                    <div className="site-head">
                      <Link to={`/sites/${encodeURIComponent(s.id)}`} className="site-name">
                        {s.name}
                      </Link>
                      <Badge kind={s.state}>{s.state}</Badge>
                    </div>
                    <dl className="facts">
                      <dt>Last seen</dt>
                      <dd>{ago(s.lastSeenAt, now)}</dd>
                      <dt>Load</dt>
                      <dd>
                        {load === null ? (
                          '—'
                        ) : (
                          <meter
                            min={0}
                            max={1}
                            optimum={0.2}
                            high={0.8}
                            value={Math.min(1, load)}
                            aria-label={`load ${Math.round(load * 100)} % of ${st!.system.cores} cores`}
                          />
                        )}{' '}
                        {load === null ? '' : `${Math.round(load * 100)} %`}
                      </dd>
                      <dt>Apps</dt>
                      <dd>
                        {st?.apps.length ? st.apps.map((a) => `${a.name}@${a.version}`).join(', ') : <span className="muted">none</span>}
                      </dd>
                      <dt>Sync</dt>
                      <dd>
                        {s.inSync ? 'in sync' : s.desiredGeneration === 0 ? 'nothing desired' : `applying gen ${s.desiredGeneration}`}
                      </dd>
                    </dl>
                    <Labels labels={s.labels} />
                  </li>
                );
              })}
            </ul>
            {g.sites.length > PER_REGION && !expanded.has(g.region) ? (
              <button type="button" className="more" onClick={() => setExpanded(new Set([...expanded, g.region]))}>
                Show all {g.sites.length} sites of {g.region}
              </button>
            ) : null}
          </section>
        ))
      )}
    </div>
  );
}
