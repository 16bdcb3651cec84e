import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { LineCounter, parseDocument, isScalar, type Document } from 'yaml';
import { EwError, isEwError, type ErrorCode } from '../contracts/errors.ts';
import { parseManifest, type AppManifest } from '../contracts/manifest.ts';
import { checkApp } from '../stream/app.ts';
import { OnnxRuntime } from '../inference/onnx.ts';
import type { ApiClient } from './client.ts';
import type { ApiResponses } from '../cloud/api/schemas.ts';

/**
 * An app bundle is one directory: `edgeweave.yaml` (the manifest), SQL files the rules name with
 * `sqlFile`, model files the models name with `path`, and a README. `loadBundle` checks all of it
 * the way the cloud and the sites will, and reports each problem at `file:line:col`.
 */
export const MANIFEST = 'edgeweave.yaml';

export interface BundleModel {
  index: number;
  name: string;
  file: string;
  sha256: string;
  size: number;
}
export interface Bundle {
  dir: string;
  manifest: AppManifest;
  raw: Record<string, unknown>;
  models: BundleModel[];
}

/** A problem in a bundle, located in its file. */
export class BundleError extends EwError {
  constructor(
    code: ErrorCode,
    readonly file: string,
    readonly line: number,
    readonly col: number,
    message: string,
    cause?: unknown,
  ) {
    super(code, `${file}:${line}:${col}: ${message}`, { pos: { file, line, col }, detail: message, cause });
  }
}

function splitPath(path: string): (string | number)[] {
  const out: (string | number)[] = [];
  for (const m of path.matchAll(/([^.[\]]+)|\[(\d+)\]/g)) out.push(m[2] !== undefined ? Number(m[2]) : m[1]!);
  return out;
}

/** Where a manifest path (`spec.rules[0].sql`) is in the YAML file; the nearest existing parent otherwise. */
function locate(doc: Document, lc: LineCounter, path: (string | number)[]): { line: number; col: number; node?: unknown } {
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n), true) as { range?: [number, number, number] } | undefined;
    if (node && node.range) {
      const p = lc.linePos(node.range[0]);
      return { line: p.line, col: p.col, node };
    }
  }
  return { line: 1, col: 1 };
}

export async function loadBundle(dirArg: string, opts: { checkModels?: boolean; manifest?: string } = {}): Promise<Bundle> {
  const dir = resolve(dirArg);
  // A bundle may hold variants of its app (edgeweave.plc.yaml): same models and SQL files, another manifest.
  const file = join(dir, opts.manifest ?? MANIFEST);
  const rel = (f: string) => relative(process.cwd(), f) || f;
  if (!existsSync(file)) throw new EwError('INVALID_MANIFEST', `${rel(file)}: no ${MANIFEST} here; create one with edgeweave app init`);
  const text = readFileSync(file, 'utf8');
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false });
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    const p = lc.linePos(e.pos[0]);
    throw new BundleError('INVALID_MANIFEST', rel(file), p.line, p.col, `not valid YAML: ${e.message.split('\n')[0]}`);
  }
  const raw = (doc.toJS() ?? {}) as Record<string, any>;
  // Rules may keep their SQL in files of the bundle.
  const sqlFiles = new Map<number, string>();
  for (const [i, rule] of ((raw.spec?.rules ?? []) as Record<string, unknown>[]).entries()) {
    if (typeof rule?.sqlFile === 'string') {
      const f = join(dir, rule.sqlFile);
      if (!existsSync(f)) {
        const at = locate(doc, lc, ['spec', 'rules', i, 'sqlFile']);
        throw new BundleError(
          'INVALID_MANIFEST',
          rel(file),
          at.line,
          at.col,
          `rule ${String(rule.name)}: sqlFile ${rule.sqlFile} does not exist in the bundle`,
        );
      }
      rule.sql = readFileSync(f, 'utf8');
      delete rule.sqlFile;
      sqlFiles.set(i, f);
    }
  }
  const where = (e: unknown): never => {
    if (!isEwError(e) || e.path === undefined) throw e;
    const path = splitPath(e.path);
    // An error inside a rule's SQL: its position is within the SQL text, wherever that text is.
    if (e.pos && path.length === 4 && path[0] === 'spec' && path[1] === 'rules' && typeof path[2] === 'number' && path[3] === 'sql') {
      const i = path[2];
      const { line, col } = e.pos;
      const f = sqlFiles.get(i);
      if (f) throw new BundleError(e.code, rel(f), line, col, e.detail, e);
      // Inline SQL: a block scalar starts on the next line, at its indentation.
      const at = locate(doc, lc, ['spec', 'rules', i, 'sql']);
      const node = at.node as { type?: string; range: [number, number, number] } | undefined;
      if (node && isScalar(node) && (node.type === 'BLOCK_LITERAL' || node.type === 'BLOCK_FOLDED')) {
        const contentLine = at.line + line;
        // The block's indentation is its first content line's; deeper lines keep the rest.
        const first = text.split('\n')[at.line] ?? '';
        const indent = first.length - first.trimStart().length;
        throw new BundleError(e.code, rel(file), contentLine, indent + col, e.detail, e);
      }
      const quoted = node && isScalar(node) && node.type !== 'PLAIN' ? 1 : 0;
      throw new BundleError(e.code, rel(file), at.line + line - 1, (line === 1 ? at.col + quoted : 0) + col, e.detail, e);
    }
    const at = locate(doc, lc, path);
    throw new BundleError(e.code, rel(file), at.line, at.col, e.detail, e);
  };

  let manifest: AppManifest;
  try {
    manifest = parseManifest({
      ...raw,
      spec: { ...raw.spec, models: ((raw.spec?.models ?? []) as Record<string, unknown>[]).map((m) => ({ sha256: '0'.repeat(64), ...m })) },
    });
    checkApp(manifest);
  } catch (e) {
    return where(e);
  }
  // Model files: present, hashed, and loadable by their runtime.
  const models: BundleModel[] = [];
  for (const [index, m] of ((raw.spec?.models ?? []) as Record<string, any>[]).entries()) {
    if (m.format !== 'onnx' && m.format !== 'gguf') continue;
    const at = locate(doc, lc, ['spec', 'models', index, 'path']);
    if (typeof m.path !== 'string')
      throw new BundleError('INVALID_MANIFEST', rel(file), at.line, at.col, `model ${m.name} needs a path to its file in the bundle`);
    const f = join(dir, m.path);
    if (!existsSync(f))
      throw new BundleError('INVALID_MANIFEST', rel(file), at.line, at.col, `model ${m.name}: ${m.path} does not exist in the bundle`);
    const bytes = readFileSync(f);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    if (m.sha256 && m.sha256 !== sha256) {
      const s = locate(doc, lc, ['spec', 'models', index, 'sha256']);
      throw new BundleError(
        'ARTIFACT_DIGEST_MISMATCH',
        rel(file),
        s.line,
        s.col,
        `model ${m.name}: ${m.path} hashes to ${sha256}, not the sha256 written here; remove the sha256 line (push fills it in)`,
      );
    }
    if (opts.checkModels !== false && m.format === 'onnx') {
      try {
        const loaded = await new OnnxRuntime().load({ name: m.name, format: 'onnx', file: f });
        await loaded.close();
      } catch (e) {
        throw new BundleError(
          'MODEL_LOAD_FAILED',
          rel(f),
          1,
          1,
          `not a model ONNX Runtime can load: ${isEwError(e) ? e.detail : (e as Error).message}`,
          e,
        );
      }
    }
    models.push({ index, name: m.name, file: f, sha256, size: statSync(f).size });
  }
  // The manifest as it will be pushed: SQL inline, model hashes filled in.
  const spec = raw.spec ?? {};
  for (const bm of models) spec.models[bm.index].sha256 = bm.sha256;
  return { dir, manifest: parseManifest(raw), raw, models };
}

/**
 * Uploads a bundle's model files (skipping those the cloud has; resuming a partial upload from
 * where the cloud's copy ends, in 4 MiB chunks) and pushes the manifest. `edgeweave app push`
 * and the demo both go through here.
 */
export async function pushBundle(
  c: Pick<ApiClient, 'api'>,
  b: Bundle,
  hooks: { onProgress?: (model: string, sent: number, total: number) => void; onSkip?: (model: string) => void } = {},
): Promise<ApiResponses['POST /api/v1/apps']> {
  for (const m of b.models) {
    const st = await c.api('GET /api/v1/artifacts/:sha256/status', { params: { sha256: m.sha256 } });
    if (st.complete) {
      hooks.onSkip?.(m.name);
      continue;
    }
    const bytes = readFileSync(m.file);
    const chunk = 4 * 1024 * 1024;
    for (let start = st.received; start < bytes.length; start += chunk) {
      const end = Math.min(bytes.length, start + chunk);
      await c.api('PUT /api/v1/artifacts/:sha256', {
        params: { sha256: m.sha256 },
        body: new Uint8Array(bytes.subarray(start, end)),
        headers: { 'content-type': 'application/octet-stream', 'content-range': `bytes ${start}-${end - 1}/${bytes.length}` },
      });
      hooks.onProgress?.(m.name, end, bytes.length);
    }
  }
  return c.api('POST /api/v1/apps', { body: { manifest: b.raw } });
}
