import { createHash } from 'node:crypto';
import { createReadStream, existsSync, renameSync, rmSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import type { Statement } from 'better-sqlite3';
import type { EdgeDb } from './db.ts';
import type { Clock } from '../lib/clock.ts';
import type { Logger } from '../lib/logger.ts';
import { EwError } from '../contracts/errors.ts';
import { privateDir } from '../lib/private-fs.ts';

/**
 * The site's model cache (`{dataDir}/models`): files named by their sha256, downloaded from the
 * cloud when a desired app needs them, resumed from where an interrupted download stopped (HTTP
 * Range), verified by sha256 before they are used — and again each time one is loaded, so a file
 * changed on disk is refused, deleted and fetched anew. A disk budget evicts the least recently
 * used files, never one a loaded model uses.
 */
export interface ArtifactSource {
  /** Streams bytes from `offset`; resolves with the stream and the artifact's total size. */
  fetch(sha256: string, offset: number): Promise<{ body: Readable; total: number }>;
}

/** The cloud as the source: `GET /api/v1/artifacts/{sha}` with the site's credentials. */
export function cloudArtifactSource(cloudUrl: string, siteId: string, secret: string, fetchImpl: typeof fetch = fetch): ArtifactSource {
  const auth = `Basic ${Buffer.from(`${siteId}:${secret}`).toString('base64')}`;
  return {
    async fetch(sha, offset) {
      let res: Response;
      try {
        res = await fetchImpl(new URL(`/api/v1/artifacts/${sha}`, cloudUrl), {
          headers: { authorization: auth, ...(offset > 0 ? { range: `bytes=${offset}-` } : {}) },
        });
      } catch (e) {
        throw new EwError('CLOUD_UNREACHABLE', `cannot reach the cloud for artifact ${sha}: ${(e as Error).message}`, { cause: e });
      }
      if (res.status === 404) throw new EwError('ARTIFACT_NOT_FOUND', `the cloud has no artifact ${sha}`);
      if (!res.ok || !res.body) throw new EwError('CLOUD_UNREACHABLE', `artifact ${sha}: the cloud answered ${res.status}`);
      const range = /\/(\d+)$/.exec(res.headers.get('content-range') ?? '');
      const total = range ? Number(range[1]) : Number(res.headers.get('content-length') ?? 0);
      if (offset > 0 && res.status !== 206) {
        // The server ignored the range: start over.
        throw new EwError('CLOUD_UNREACHABLE', `artifact ${sha}: the cloud did not resume at ${offset}`);
      }
      return { body: Readable.fromWeb(res.body as never), total };
    },
  };
}

/** What a file looked like when it was last hashed in full. */
function verifiedMarker(file: string): string {
  const st = statSync(file, { bigint: true });
  return `${st.size}:${st.ino}:${st.mtimeNs}:${st.ctimeNs}`;
}

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(file), h);
  return h.digest('hex');
}

export class ArtifactCache {
  private readonly touch: Statement;
  private readonly inUse = new Map<string, number>();
  private readonly downloads = new Map<string, Promise<string>>();

  constructor(
    private readonly db: EdgeDb,
    private readonly dir: string,
    private readonly budgetBytes: number,
    private readonly source: ArtifactSource,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {
    privateDir(dir);
    this.touch = db.prepare(
      'INSERT INTO artifacts (sha256, size, last_used) VALUES (?, ?, ?) ON CONFLICT(sha256) DO UPDATE SET last_used = excluded.last_used, size = excluded.size',
    );
  }

  /** Marks a file as used by a loaded model (never evicted until released). */
  acquire(sha: string): void {
    this.inUse.set(sha, (this.inUse.get(sha) ?? 0) + 1);
  }
  release(sha: string): void {
    const n = (this.inUse.get(sha) ?? 1) - 1;
    if (n <= 0) this.inUse.delete(sha);
    else this.inUse.set(sha, n);
  }

  cached(): { sha256: string; size: number; lastUsed: number; inUse: boolean }[] {
    return (
      this.db.prepare('SELECT sha256, size, last_used AS lastUsed FROM artifacts ORDER BY last_used DESC').all() as {
        sha256: string;
        size: number;
        lastUsed: number;
      }[]
    ).map((r) => ({ ...r, inUse: this.inUse.has(r.sha256) }));
  }

  /** Full sha256 checks of cached files (a restart with unchanged files does none). */
  readonly stats = { hashed: 0 };

  private markVerified(sha: string, file: string): void {
    this.db.prepare('UPDATE artifacts SET verified = ? WHERE sha256 = ?').run(verifiedMarker(file), sha);
  }

  /** A verified local path for the artifact, downloading (or resuming) it when needed. */
  ensure(sha: string, onProgress?: (received: number, total: number) => void): Promise<string> {
    if (!/^[a-f0-9]{64}$/.test(sha)) return Promise.reject(new EwError('VALIDATION_FAILED', `"${sha}" is not a sha256`));
    const running = this.downloads.get(sha);
    if (running) return running;
    const p = this.ensureNow(sha, onProgress).finally(() => this.downloads.delete(sha));
    this.downloads.set(sha, p);
    return p;
  }

  private async ensureNow(sha: string, onProgress?: (received: number, total: number) => void): Promise<string> {
    const file = join(this.dir, sha);
    if (existsSync(file)) {
      // A restart does not re-hash an unchanged file (minutes for a large model): the full check
      // left a marker of the file as it was then (size, inode, mtime, ctime — ctime moves on any
      // write, and cannot be set back); a file that differs in any of them is hashed again.
      const stored = (
        this.db.prepare('SELECT verified FROM artifacts WHERE sha256 = ?').get(sha) as { verified: string | null } | undefined
      )?.verified;
      if (stored && stored === verifiedMarker(file)) {
        this.touch.run(sha, statSync(file).size, this.clock.now());
        return file;
      }
      this.stats.hashed++;
      if ((await sha256File(file)) === sha) {
        this.touch.run(sha, statSync(file).size, this.clock.now());
        this.markVerified(sha, file);
        return file;
      }
      this.log.error({ sha256: sha }, 'cached model file does not match its sha256 (changed on disk); deleted, downloading again');
      rmSync(file, { force: true });
    }
    const partial = `${file}.partial`;
    for (let attempt = 0; ; attempt++) {
      const have = existsSync(partial) ? statSync(partial).size : 0;
      try {
        const { body, total } = await this.source.fetch(sha, have);
        let received = have;
        onProgress?.(received, total);
        // Each chunk is on disk before the next is read, so an interruption loses nothing that
        // arrived: the next attempt resumes at the partial file's size.
        const fh = await open(partial, have > 0 ? 'a' : 'w');
        try {
          for await (const chunk of body as AsyncIterable<Buffer>) {
            await fh.write(chunk);
            received += chunk.length;
            onProgress?.(received, total);
          }
        } finally {
          await fh.close();
        }
        if (received < total) throw new Error(`the download stopped at ${received} of ${total} bytes`);
        break;
      } catch (e) {
        if (e instanceof EwError && e.code === 'ARTIFACT_NOT_FOUND') throw e;
        if (attempt >= 4)
          throw new EwError('CLOUD_UNREACHABLE', `downloading ${sha} failed ${attempt + 1} times: ${(e as Error).message}`, { cause: e });
        this.log.warn({ sha256: sha, err: (e as Error).message, attempt }, 'model download interrupted; resuming');
        await new Promise((r) => setTimeout(r, 200 * 2 ** attempt));
      }
    }
    const got = await sha256File(partial);
    if (got !== sha) {
      rmSync(partial, { force: true });
      throw new EwError('ARTIFACT_DIGEST_MISMATCH', `the downloaded model hashes to ${got}, not ${sha}; it was deleted and is not loaded`, {
        path: 'sha256',
      });
    }
    renameSync(partial, file);
    this.touch.run(sha, statSync(file).size, this.clock.now());
    this.markVerified(sha, file);
    this.evict(sha);
    return file;
  }

  /** Least recently used out first until under budget; skips files in use and `keep`. */
  evict(keep?: string): void {
    const rows = this.db.prepare('SELECT sha256, size FROM artifacts ORDER BY last_used ASC').all() as { sha256: string; size: number }[];
    let total = rows.reduce((a, r) => a + r.size, 0);
    for (const r of rows) {
      if (total <= this.budgetBytes) break;
      if (r.sha256 === keep || this.inUse.has(r.sha256)) continue;
      rmSync(join(this.dir, r.sha256), { force: true });
      this.db.prepare('DELETE FROM artifacts WHERE sha256 = ?').run(r.sha256);
      total -= r.size;
      this.log.info({ sha256: r.sha256, size: r.size }, 'model evicted from the cache (disk budget)');
    }
    if (total > this.budgetBytes)
      this.log.warn({ total, budget: this.budgetBytes }, 'model cache over budget: every remaining file is in use');
  }
}
