import { Link } from '../App.tsx';
import { useAction, useApp, useLive, useNow } from '../hooks.ts';
import { Badge, Empty, ErrorBox } from '../components/ui.tsx';
import { ApiError } from '../lib/api.ts';
import { ago, allowedActions, can, gateReadings, rolloutProgress, type RolloutAction } from '../state/derive.ts';
import type { Rollout } from '../types.ts';

const PHASE_KIND: Record<string, string> = {
  progressing: 'pending',
  baking: 'pending',
  paused: 'paused',
  succeeded: 'online',
  failed: 'failed',
  'rolled-back': 'offline',
  aborted: 'offline',
};

export function RolloutsPage({ id }: { id?: string }) {
  const live = useLive();
  const list = [...live.rollouts.values()].sort((a, b) => b.startedAt - a.startedAt);
  const one = id ? live.rollouts.get(id) : undefined;
  return (
    <div>
      <h1 tabIndex={-1}>
        {id ? (
          <>
            <Link to="/rollouts">Rollouts</Link> / {one ? `${one.app}@${one.version}` : id}
          </>
        ) : (
          'Rollouts'
        )}
      </h1>
      {live.listError ? (
        <ErrorBox error={new ApiError(0, live.listError.code, live.listError.message)} title="Cannot list rollouts" />
      ) : null}
      {id ? (
        one ? (
          <RolloutView r={one} detailed />
        ) : (
          <Empty>{live.sitesLoaded ? `No rollout ${id}.` : 'Loading…'}</Empty>
        )
      ) : list.length === 0 ? (
        <Empty>
          No rollouts yet. Deploy an app version to a pool: <code>edgeweave deploy</code>.
        </Empty>
      ) : (
        list.map((r) => <RolloutView key={r.id} r={r} />)
      )}
    </div>
  );
}

function RolloutView({ r, detailed }: { r: Rollout; detailed?: boolean }) {
  const { api, me } = useApp();
  const live = useLive();
  const now = useNow(1000);
  const p = rolloutProgress(r);
  const act = useAction(async (a: RolloutAction) => {
    const next = await api.post<Rollout>(`/api/v1/rollouts/${encodeURIComponent(r.id)}/${a}`);
    live.apply({ event: 'rollouts', data: JSON.stringify({ items: [next] }) }, Date.now());
  });
  const actions = can(me.permissions, 'rollouts:act') ? allowedActions(r.phase) : [];
  const gates = gateReadings(r, live.sites);
  const s = r.strategy;
  const strategy =
    s.type === 'all'
      ? 'all at once'
      : s.type === 'rolling'
        ? `rolling, ${s.maxUnavailable} at a time`
        : `canary ${s.canary}${s.canaryPercent ? ' %' : ''}, bake ${s.bakeTimeS} s, then ${s.then}`;
  const label = `${r.app}@${r.version}`;
  return (
    <section className="card rollout" aria-label={`rollout ${label}`} data-testid="rollout" data-phase={r.phase}>
      <div className="card-head">
        <h2>
          {detailed ? label : <Link to={`/rollouts/${encodeURIComponent(r.id)}`}>{label}</Link>}{' '}
          <Badge kind={PHASE_KIND[r.phase] ?? 'pending'}>{r.phase}</Badge>
        </h2>
        <div className="actions">
          {actions.map((a) => (
            <button
              key={a}
              type="button"
              className={a === 'abort' || a === 'undo' ? 'danger' : undefined}
              disabled={act.busy}
              onClick={() => {
                if (
                  (a !== 'abort' && a !== 'undo') ||
                  confirm(`${a === 'abort' ? 'Abort' : 'Undo'} the rollout of ${label}? Its sites go back to the previous version.`)
                )
                  void act.run(a);
              }}
            >
              {a[0]!.toUpperCase() + a.slice(1)}
              <span className="sr-only"> rollout {label}</span>
            </button>
          ))}
        </div>
      </div>
      <ErrorBox error={act.error} title={`Cannot change the rollout`} />
      <p>
        {strategy}; started {ago(r.startedAt, now)}
        {r.reason ? (
          <>
            {' '}
            — <span className={r.phase === 'failed' || r.phase === 'rolled-back' ? 'error-text' : undefined}>{r.reason}</span>
          </>
        ) : null}
      </p>
      <div className="progress-row">
        <progress max={Math.max(1, p.total)} value={p.updated} aria-label={`${p.updated} of ${p.total} sites updated`} />
        <span>
          {p.updated}/{p.total} updated{p.failed ? `, ${p.failed} failed or reverted` : ''}
          {p.deferred ? `, ${p.deferred} deferred (offline)` : ''}
          {p.pending ? `, ${p.pending} to go` : ''}
        </span>
      </div>
      {gates.length > 0 ? (
        <div className="table-wrap">
          <table>
            <caption>
              Canary gates{r.canaries.length ? ` (canaries: ${r.canaries.map((c) => live.sites.get(c)?.name ?? c).join(', ')})` : ''}
              {r.canaryPassed ? ' — passed' : ''}
            </caption>
            <thead>
              <tr>
                <th scope="col">Gate</th>
                <th scope="col">Limit</th>
                <th scope="col">Reading now</th>
                <th scope="col">Verdict</th>
              </tr>
            </thead>
            <tbody>
              {gates.map((g) => (
                <tr key={g.gate}>
                  <th scope="row">{g.gate}</th>
                  <td>{g.gate === 'maxP95Ms' ? `${g.limit} ms` : `${(g.limit * 100).toFixed(2)} %`}</td>
                  <td>
                    {g.value === null ? (
                      <span className="muted">{g.note}</span>
                    ) : g.gate === 'maxP95Ms' ? (
                      `${g.value.toFixed(1)} ms`
                    ) : (
                      `${(g.value * 100).toFixed(2)} %`
                    )}
                  </td>
                  <td>{g.ok === null ? '—' : g.ok ? <Badge kind="online">pass</Badge> : <Badge kind="failed">over</Badge>}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      {detailed || Object.keys(r.sites).length <= 12 ? (
        <div className="table-wrap">
          <table>
            <caption className="sr-only">Sites of the rollout</caption>
            <thead>
              <tr>
                <th scope="col">Site</th>
                <th scope="col">Phase</th>
                <th scope="col">Since</th>
                <th scope="col">Reason</th>
              </tr>
            </thead>
            <tbody>
              {Object.entries(r.sites).map(([id, x]) => (
                <tr key={id}>
                  <th scope="row">
                    <Link to={`/sites/${encodeURIComponent(id)}`}>{live.sites.get(id)?.name ?? id}</Link>
                    {r.canaries.includes(id) ? <span className="muted"> (canary)</span> : null}
                  </th>
                  <td>
                    <Badge kind={x.phase === 'updated' ? 'online' : x.phase === 'failed' || x.phase === 'reverted' ? 'failed' : 'pending'}>
                      {x.phase}
                    </Badge>
                  </td>
                  <td>{ago(x.since, now)}</td>
                  <td>{x.reason ?? ''}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      {detailed ? (
        <details open>
          <summary>History</summary>
          <ol className="history">
            {r.history.map((h, i) => (
              <li key={i}>
                <time dateTime={new Date(h.at).toISOString()}>{new Date(h.at).toLocaleTimeString()}</time> {h.event}
              </li>
            ))}
          </ol>
        </details>
      ) : null}
    </section>
  );
}
