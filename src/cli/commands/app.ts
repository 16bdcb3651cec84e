import { copyFileSync, cpSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { parse as parseYaml, parseDocument, stringify as toYaml } from 'yaml';
import { ensureTemplateAssistant } from '../../inference/gguf/tiny-qwen.ts';
import { loadBundle, MANIFEST, pushBundle } from '../bundle.ts';
import { Name } from '../../contracts/manifest.ts';
import { EwError } from '../../contracts/errors.ts';
import { TEMPLATES } from '../templates.ts';
import { client, dim, green, print, red, ref, table, type Format } from './output.ts';

/** `edgeweave app init|validate|push|list|show|diff`. */

function progress(label: string, sent: number, total: number): void {
  if (!process.stderr.isTTY) return;
  const width = 30;
  const done = total ? Math.round((sent / total) * width) : width;
  process.stderr.write(
    `\r${label} [${'#'.repeat(done)}${' '.repeat(width - done)}] ${total ? Math.round((100 * sent) / total) : 100}% ${(sent / 1e6).toFixed(1)}/${(total / 1e6).toFixed(1)} MB`,
  );
  if (sent >= total) process.stderr.write('\n');
}

/** The template's manifests: edgeweave.yaml and its variants (edgeweave.plc.yaml, …). */
const manifestFiles = (dir: string) =>
  readdirSync(dir)
    .filter((f) => /^edgeweave(\.[a-z0-9-]+)?\.ya?ml$/.test(f))
    .sort();

/**
 * The app's name in each manifest: NAME in edgeweave.yaml; a variant keeps what its own name adds
 * to the template's (vibration-guard-plc → NAME-plc), else NAME-<variant>.
 */
function namesFor(src: string, name: string): Map<string, string> {
  const nameOf = (f: string) =>
    String((parseYaml(readFileSync(join(src, f), 'utf8')) as { metadata?: { name?: unknown } })?.metadata?.name ?? '');
  const base = nameOf(MANIFEST);
  const out = new Map<string, string>();
  for (const f of manifestFiles(src)) {
    if (f === MANIFEST) {
      out.set(f, name);
      continue;
    }
    const own = nameOf(f);
    const variant = base && own.startsWith(base) && own !== base ? `${name}${own.slice(base.length)}` : `${name}-${f.split('.')[1]}`;
    const ok = Name.safeParse(variant);
    if (!ok.success)
      throw new EwError(
        'CONFIG_INVALID',
        `the app name "${name}" makes the name of the template's variant ${f} "${variant}", which is not a valid name (${ok.error.issues[0]?.message}); choose a shorter name`,
        { path: 'name' },
      );
    out.set(f, variant);
  }
  return out;
}

export function init(dir: string, o: { template: string; model?: string }): void {
  const src = join(TEMPLATES, o.template);
  if (!existsSync(join(src, MANIFEST)))
    throw new EwError('CONFIG_INVALID', `no template "${o.template}"; choose one of ${readdirSync(TEMPLATES).join(', ')}`, {
      path: 'template',
    });
  // The app is named after its directory: `app init my-guard` makes app my-guard in ./my-guard.
  const name = basename(resolve(dir));
  const valid = Name.safeParse(name);
  if (!valid.success)
    throw new EwError(
      'CONFIG_INVALID',
      `"${name}" cannot name an app: ${valid.error.issues[0]?.message} (the app is named after its directory; e.g. edgeweave app init my-guard)`,
      { path: 'name' },
    );
  if (existsSync(dir) && readdirSync(dir).length)
    throw new EwError('CONFIG_INVALID', `${dir} exists and is not empty; choose a new directory`);
  const names = namesFor(src, name);
  // The template's language model (if it has one): the file given, else the tiny test Qwen.
  const gguf = (
    parseYaml(readFileSync(join(src, MANIFEST), 'utf8')) as { spec?: { models?: { format?: string; path?: string }[] } }
  ).spec?.models?.find((m) => m.format === 'gguf');
  if (o.model) {
    if (!gguf?.path)
      throw new EwError(
        'CONFIG_INVALID',
        `template ${o.template} has no language model; --model is for templates that do (predictive-maintenance)`,
        { path: 'model' },
      );
    if (!existsSync(o.model) || readFileSync(o.model).subarray(0, 4).toString('latin1') !== 'GGUF')
      throw new EwError(
        'CONFIG_INVALID',
        `--model ${o.model} is not a GGUF file (it must start with the bytes "GGUF"); download a .gguf such as Qwen2.5-0.5B-Instruct-Q4_K_M`,
        { path: 'model' },
      );
  } else if (gguf && o.template === 'predictive-maintenance') {
    ensureTemplateAssistant();
  }
  cpSync(src, dir, { recursive: true });
  // Renamed in place: the template's comments and layout stay as they are.
  for (const [f, n] of names) {
    const doc = parseDocument(readFileSync(join(dir, f), 'utf8'));
    doc.setIn(['metadata', 'name'], n);
    writeFileSync(join(dir, f), doc.toString());
  }
  if (o.model) copyFileSync(o.model, join(dir, gguf!.path!));
  process.stderr.write(
    `${green('created')} app ${name} in ${dir} from ${o.template}: edit ${join(dir, MANIFEST)}, then edgeweave app validate ${dir} && edgeweave app push ${dir}\n`,
  );
}

export async function validate(dir: string, o: { manifest: string; output: Format }): Promise<void> {
  const b = await loadBundle(dir, { manifest: o.manifest });
  const out = {
    app: b.manifest.metadata.name,
    version: b.manifest.metadata.version,
    streams: b.manifest.spec.streams.length,
    rules: b.manifest.spec.rules.length,
    models: b.models.map((m) => ({ name: m.name, sha256: m.sha256, bytes: m.size })),
    endpoints: b.manifest.spec.endpoints.length,
  };
  await print(
    o.output,
    out,
    () =>
      `${green('valid')}: ${out.app}@${out.version} — ${out.streams} stream(s), ${out.rules} rule(s), ${out.models.length} model file(s), ${out.endpoints} endpoint(s)`,
  );
}

export async function push(dir: string, o: { manifest: string; output: Format }): Promise<void> {
  const res = await pushBundle(client(), await loadBundle(dir, { manifest: o.manifest }), {
    onProgress: (name, sent, total) => progress(`uploading ${name}`, sent, total),
    onSkip: (name) => process.stderr.write(`${dim(`model ${name}: already on the cloud`)}\n`),
  });
  await print(o.output, res, () => `${green('pushed')} ${res.name}@${res.version} ${dim(res.digest)}`);
}

export async function list(o: { output: Format }): Promise<void> {
  const r = await client().api('GET /api/v1/apps');
  await print(o.output, r.items, () => table(r.items, ['name', 'version', 'digest']));
}

export async function show(s: string, o: { output: Format }): Promise<void> {
  const { name, version } = ref(s);
  const r = await client().api('GET /api/v1/apps/:name/versions/:version', { params: { name, version } });
  await print(o.output, r, () => toYaml(r.manifest));
}

export async function diff(x: string, y: string): Promise<void> {
  const c = client();
  const [a, b] = await Promise.all([
    c.api('GET /api/v1/apps/:name/versions/:version', { params: ref(x) }),
    c.api('GET /api/v1/apps/:name/versions/:version', { params: ref(y) }),
  ]);
  const la = toYaml(a.manifest).split('\n');
  const lb = toYaml(b.manifest).split('\n');
  const setA = new Set(la);
  const setB = new Set(lb);
  const out = [...la.filter((l) => !setB.has(l)).map((l) => red(`- ${l}`)), ...lb.filter((l) => !setA.has(l)).map((l) => green(`+ ${l}`))];
  process.stdout.write(`${out.length ? out.join('\n') : dim('(no difference)')}\n`);
}
