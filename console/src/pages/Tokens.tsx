import { useState } from 'react';
import { Link } from '../App.tsx';
import { useAction, useApi, useApp, useNow } from '../hooks.ts';
import { Badge, Empty, ErrorBox, Labels, Loading, Section } from '../components/ui.tsx';
import { ApiError } from '../lib/api.ts';
import { ago, can, parseLabelFilter } from '../state/derive.ts';
import type { CreatedToken, JoinToken } from '../types.ts';

export function TokensPage() {
  const { api, me, live } = useApp();
  const now = useNow(5000);
  const list = useApi<{ items: JoinToken[] }>('/api/v1/tokens');
  const [created, setCreated] = useState<CreatedToken>();
  const [labels, setLabels] = useState('');
  const [region, setRegion] = useState('default');
  const [ttlH, setTtlH] = useState('24');
  const [description, setDescription] = useState('');
  const [copied, setCopied] = useState(false);
  const create = useAction(async () => {
    const parsed = parseLabelFilter(labels);
    if (!parsed.ok) throw new ApiError(0, 'VALIDATION_FAILED', `labels: ${parsed.error}`, 'labels');
    if (parsed.terms.some((t) => t.value === undefined || t.not))
      throw new ApiError(0, 'VALIDATION_FAILED', 'labels: write each label as key=value', 'labels');
    const hours = Number(ttlH);
    const t = await api.post<CreatedToken>('/api/v1/tokens', {
      labels: Object.fromEntries(parsed.terms.map((x) => [x.key, x.value!])),
      region: region.trim() || 'default',
      ttlSeconds: Number.isFinite(hours) ? Math.round(hours * 3600) : Number.NaN,
      description,
    });
    setCreated(t);
    setCopied(false);
    list.reload();
  });
  const remove = useAction(async (id: string) => {
    await api.del(`/api/v1/tokens/${encodeURIComponent(id)}`);
    list.reload();
  });
  const copy = async () => {
    if (!created) return;
    try {
      await navigator.clipboard.writeText(created.installCommand);
      setCopied(true);
    } catch {
      // No clipboard permission (plain http, say): select the text so Ctrl+C copies it.
      const el = document.getElementById('install-command');
      if (el) getSelection()?.selectAllChildren(el);
    }
  };
  return (
    <div>
      <h1 tabIndex={-1}>Join tokens</h1>
      {can(me.permissions, 'tokens:write') ? (
        <Section title="Enroll a new site">
          <form
            className="form"
            noValidate
            onSubmit={(e) => {
              e.preventDefault();
              void create.run();
            }}
          >
            <label htmlFor="tok-labels">Labels</label>
            <input
              id="tok-labels"
              value={labels}
              onChange={(e) => setLabels(e.target.value)}
              placeholder="city=hangzhou industry=manufacturing"
              aria-describedby="tok-labels-help"
            />
            <span id="tok-labels-help" className="muted">
              key=value pairs, separated by spaces or commas; deployments pick sites by these.
            </span>
            <label htmlFor="tok-region">Region</label>
            <input id="tok-region" value={region} onChange={(e) => setRegion(e.target.value)} />
            <label htmlFor="tok-ttl">Valid for (hours)</label>
            <input id="tok-ttl" type="number" min={1 / 60} max={720} step="any" value={ttlH} onChange={(e) => setTtlH(e.target.value)} />
            <label htmlFor="tok-desc">Description</label>
            <input id="tok-desc" value={description} onChange={(e) => setDescription(e.target.value)} maxLength={500} />
            <div>
              <button type="submit" disabled={create.busy}>
                {create.busy ? 'Creating…' : 'Create join token'}
              </button>
            </div>
          </form>
          <ErrorBox error={create.error} title="Cannot create the token" />
          {created ? (
            <div className="created" role="status" aria-live="polite">
              <p>
                Run this on the new edge machine. The token works once, until {new Date(created.expiresAt).toLocaleString()}, and is not
                shown again.
              </p>
              <pre id="install-command" className="code-block" data-testid="install-command" tabIndex={0}>
                {created.installCommand}
              </pre>
              <button type="button" onClick={() => void copy()}>
                {copied ? 'Copied' : 'Copy command'}
              </button>
            </div>
          ) : null}
        </Section>
      ) : null}
      <Section
        title="Tokens"
        actions={
          <button type="button" onClick={list.reload}>
            Refresh
          </button>
        }
      >
        {list.loading && !list.data ? <Loading what="tokens" /> : null}
        <ErrorBox error={list.error ?? remove.error} title="Join tokens" />
        {list.data ? (
          list.data.items.length === 0 ? (
            <Empty>No join tokens.</Empty>
          ) : (
            <div className="table-wrap">
              <table>
                <thead>
                  <tr>
                    <th scope="col">Token</th>
                    <th scope="col">Region</th>
                    <th scope="col">Labels</th>
                    <th scope="col">State</th>
                    <th scope="col">Created</th>
                    <th scope="col">
                      <span className="sr-only">Actions</span>
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {[...list.data.items]
                    .sort((a, b) => b.createdAt - a.createdAt)
                    .map((t) => {
                      const state = t.usedAt !== null ? 'used' : t.expiresAt <= now ? 'expired' : 'unused';
                      return (
                        <tr key={t.id} data-testid="token-row">
                          <th scope="row">
                            <code>{t.id}</code>
                            {t.description ? <div className="muted">{t.description}</div> : null}
                          </th>
                          <td>{t.region}</td>
                          <td>
                            <Labels labels={t.labels} />
                          </td>
                          <td>
                            <Badge kind={state === 'unused' ? 'online' : 'offline'}>{state}</Badge>
                            {t.siteId ? (
                              <>
                                {' '}
                                by <Link to={`/sites/${encodeURIComponent(t.siteId)}`}>{live.sites.get(t.siteId)?.name ?? t.siteId}</Link>
                              </>
                            ) : null}
                            {state === 'unused' ? <span className="muted"> expires {new Date(t.expiresAt).toLocaleString()}</span> : null}
                          </td>
                          <td>{ago(t.createdAt, now)}</td>
                          <td>
                            {state !== 'used' && can(me.permissions, 'tokens:write') ? (
                              <button type="button" className="danger" disabled={remove.busy} onClick={() => void remove.run(t.id)}>
                                Delete<span className="sr-only"> token {t.id}</span>
                              </button>
                            ) : null}
                          </td>
                        </tr>
                      );
                    })}
                </tbody>
              </table>
            </div>
          )
        ) : null}
      </Section>
    </div>
  );
}
