import { EwError } from '../../contracts/errors.ts';
import { parseSelector } from '../../contracts/selector.ts';
import type { ApiClient } from '../client.ts';
import type { ApiResponses } from '../../cloud/api/schemas.ts';
import { client, dim, green, labelsText, parseDuration, print, red, ref, table, type Format } from './output.ts';

/**
 * `edgeweave deploy`, `edgeweave deployments list|show` and `edgeweave rollout …`. A deployment
 * (and its rollout, which has the same id) is named by its id or by the `app@version` it deployed.
 */

type Rollout = ApiResponses['GET /api/v1/rollouts/:id'];
const ENDED = ['succeeded', 'failed', 'rolled-back', 'aborted'];

/**
 * The deployment an argument names: an id as it is; `app@version` the deployment of that version
 * (the newest when it was deployed more than once; `steering` refuses to guess then, since pausing
 * or aborting the wrong one changes sites).
 */
async function resolveDeployment(c: ApiClient, s: string, steering: boolean): Promise<string> {
  if (!s.includes('@')) return s;
  const { name, version } = ref(s);
  const all = (await c.api('GET /api/v1/deployments')).items.filter((d) => d.app === name && d.version === version);
  if (all.length === 0)
    throw new EwError(
      'DEPLOYMENT_NOT_FOUND',
      `${s} has no deployment; deploy it with edgeweave deploy ${s} --to <selector> (edgeweave deployments list shows what is deployed)`,
      { path: 'deployment' },
    );
  const newest = all.reduce((a, b) => (b.createdAt >= a.createdAt ? b : a));
  if (all.length > 1) {
    const ids = all.map((d) => `${d.id} (to ${labelsText(d.selector)})`).join(', ');
    if (steering)
      throw new EwError('CONFIG_INVALID', `${s} was deployed ${all.length} times: ${ids}; name the deployment by its id`, {
        path: 'deployment',
      });
    process.stderr.write(`${dim(`${s} was deployed ${all.length} times (${ids}); showing the newest, ${newest.id}`)}\n`);
  }
  return newest.id;
}

function rolloutTable(r: Rollout): string {
  const phase = r.phase === 'succeeded' ? green(r.phase) : ['failed', 'rolled-back', 'aborted'].includes(r.phase) ? red(r.phase) : r.phase;
  const sites = Object.entries(r.sites).map(([id, s]) => ({ site: id, state: s.phase, reason: s.reason ?? '' }));
  return `deployment ${r.id}  ${r.app}@${r.version}  ${phase}${r.reason ? `  ${r.reason}` : ''}\n${table(sites, ['site', 'state', 'reason'])}`;
}

/** Polls a rollout until it ends, printing each new event on a TTY. */
async function follow(c: ApiClient, id: string, narrate: boolean): Promise<Rollout> {
  let seen = 0;
  for (;;) {
    const r = await c.api('GET /api/v1/rollouts/:id', { params: { id } });
    if (narrate) for (const h of r.history.slice(seen)) process.stderr.write(`${dim(new Date(h.at).toISOString())} ${h.event}\n`);
    seen = r.history.length;
    if (ENDED.includes(r.phase)) return r;
    await new Promise((res) => setTimeout(res, 1000));
  }
}

export async function deploy(s: string, o: any): Promise<void> {
  const { name, version } = ref(s);
  const pct = String(o.canary).endsWith('%');
  const strategy =
    o.strategy === 'all'
      ? { type: 'all' }
      : o.strategy === 'rolling'
        ? { type: 'rolling', maxUnavailable: o.maxUnavailable }
        : {
            type: 'canary',
            canary: Number(String(o.canary).replace('%', '')),
            canaryPercent: pct,
            bakeTimeS: parseDuration(o.bake),
            gates: { maxErrorRate: o.maxErrorRate, maxP95Ms: o.maxP95Ms, maxDrift: o.maxDrift },
            then: 'all',
          };
  const c = client();
  const r = await c.api('POST /api/v1/deployments', {
    body: { app: name, version, selector: parseSelector(o.to), strategy, stepTimeoutS: parseDuration(o.stepTimeout) },
  });
  if (!o.wait) {
    await print(
      o.output,
      r,
      () =>
        `${green('deploying')} ${name}@${version} to ${r.sites.length} site(s) (${o.strategy})\ndeployment ${r.id}\nfollow it: edgeweave rollout status ${r.id}   (or: edgeweave rollout status ${name}@${version})`,
    );
    return;
  }
  // The id first, so that a script (or a person) waiting on a long rollout can steer it meanwhile.
  if (o.output === 'table')
    process.stderr.write(`${green('deploying')} ${name}@${version} to ${r.sites.length} site(s) (${o.strategy}): deployment ${r.id}\n`);
  const final = await follow(c, r.id, o.output === 'table');
  await print(o.output, final, () => rolloutTable(final));
  if (final.phase !== 'succeeded') process.exitCode = 1;
}

export async function list(o: { app?: string; output: Format }): Promise<void> {
  const c = client();
  const [deps, rollouts] = await Promise.all([c.api('GET /api/v1/deployments'), c.api('GET /api/v1/rollouts')]);
  const byId = new Map(rollouts.items.map((r) => [r.id, r]));
  const items = deps.items
    .filter((d) => !o.app || d.app === o.app)
    .map((d) => ({ ...d, phase: byId.get(d.id)?.phase ?? null, sites: Object.keys(byId.get(d.id)?.sites ?? {}).length }));
  await print(o.output, items, () =>
    table(
      items.map((d) => ({
        ...d,
        app: `${d.app}@${d.version}`,
        selector: labelsText(d.selector),
        created: new Date(d.createdAt).toISOString(),
      })),
      ['id', 'app', 'selector', 'phase', 'sites', 'created'],
    ),
  );
}

export async function show(s: string, o: { output: Format }): Promise<void> {
  const c = client();
  const id = await resolveDeployment(c, s, false);
  const [dep, rollout] = await Promise.all([
    c.api('GET /api/v1/deployments/:id', { params: { id } }),
    c.api('GET /api/v1/rollouts/:id', { params: { id } }),
  ]);
  await print(
    o.output,
    { ...dep, rollout },
    () => `to ${labelsText(dep.selector)} since ${new Date(dep.createdAt).toISOString()}\n${rolloutTable(rollout)}`,
  );
}

export async function status(s: string, o: { watch?: boolean; output: Format }): Promise<void> {
  const c = client();
  const id = await resolveDeployment(c, s, false);
  const r = o.watch ? await follow(c, id, o.output === 'table') : await c.api('GET /api/v1/rollouts/:id', { params: { id } });
  await print(o.output, r, () => rolloutTable(r));
}

export async function act(action: 'pause' | 'resume' | 'abort' | 'undo', s: string, o: { output: Format }): Promise<void> {
  const c = client();
  const id = await resolveDeployment(c, s, true);
  const r = await c.api('POST /api/v1/rollouts/:id/:action', { params: { id, action } });
  await print(o.output, r, () => rolloutTable(r));
}
