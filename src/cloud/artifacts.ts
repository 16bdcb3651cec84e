import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, readdirSync, renameSync, rmSync, statSync, type ReadStream } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform, type Readable } from 'node:stream';
import { privateDir } from '../lib/private-fs.ts';
import { EwError } from '../contracts/errors.ts';

/**
 * Model files, content-addressed by sha256, on the cloud's disk (`{dataDir}/artifacts`).
 * Uploads stream to a `.partial` file and can resume: each chunk says where it starts, and must
 * start where the partial file ends. When the last byte arrives the whole file is hashed; a file
 * whose hash is not its name is deleted and refused. Complete files never change.
 */
export interface ArtifactStatus {
  sha256: string;
  complete: boolean;
  size: number;
  received: number;
}

const SHA = /^[a-f0-9]{64}$/;

export class FileArtifactStore {
  constructor(
    private readonly dir: string,
    readonly maxBytes: number,
  ) {
    privateDir(dir);
  }

  /**
   * `scope` (a tenant) gets its own partial file: a tenant uploading a file another tenant
   * already completed sends and proves the bytes itself, and never sees another's upload.
   */
  private paths(sha: string, scope?: string) {
    if (!SHA.test(sha)) throw new EwError('VALIDATION_FAILED', `"${sha}" is not a lower-case hex sha256`, { path: 'sha256' });
    const tag = scope === undefined ? '' : `.${createHash('sha256').update(scope).digest('hex').slice(0, 16)}`;
    return { done: join(this.dir, sha), partial: join(this.dir, `${sha}${tag}.partial`) };
  }

  /** Removes a complete file (its last owning tenant was deleted); false when there was none. */
  remove(sha: string): boolean {
    const p = this.paths(sha).done;
    if (!existsSync(p)) return false;
    rmSync(p, { force: true });
    return true;
  }

  /** Removes a tenant's unfinished uploads (the tenant was deleted); returns how many. */
  removePartials(scope: string): number {
    const suffix = `.${createHash('sha256').update(scope).digest('hex').slice(0, 16)}.partial`;
    let n = 0;
    for (const f of readdirSync(this.dir)) {
      if (f.endsWith(suffix)) {
        rmSync(join(this.dir, f), { force: true });
        n++;
      }
    }
    return n;
  }

  /** Whether the complete file is on disk (whoever uploaded it). */
  exists(sha: string): boolean {
    return existsSync(this.paths(sha).done);
  }

  /**
   * With `scope`, the upload status as that tenant sees it: `complete` only when `owned` (it
   * uploaded the file), else what its own partial upload holds.
   */
  status(sha: string, scope?: string, owned = false): ArtifactStatus {
    const p = this.paths(sha, scope);
    if (existsSync(p.done) && (scope === undefined || owned)) {
      const size = statSync(p.done).size;
      return { sha256: sha, complete: true, size, received: size };
    }
    const received = existsSync(p.partial) ? statSync(p.partial).size : 0;
    return { sha256: sha, complete: false, size: 0, received };
  }

  /**
   * Appends `body` at `start` (which must equal the bytes received so far). `total`, when known,
   * completes the upload once reached; without it the body is the whole file.
   */
  async write(sha: string, start: number, body: Readable, total: number | undefined, scope?: string): Promise<ArtifactStatus> {
    const p = this.paths(sha, scope);
    const st = this.status(sha, scope);
    if (st.complete) {
      body.resume();
      return st;
    }
    if (start !== st.received) {
      body.resume();
      throw new EwError(
        'ARTIFACT_OFFSET_MISMATCH',
        `this chunk starts at byte ${start} but the upload has ${st.received} bytes; resume from ${st.received}`,
        { path: 'Content-Range' },
      );
    }
    if (total !== undefined && total > this.maxBytes) {
      body.resume();
      throw new EwError('PAYLOAD_TOO_LARGE', `the artifact is ${total} bytes; this cloud accepts at most ${this.maxBytes}`);
    }
    let written = st.received;
    const limit = this.maxBytes;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        written += chunk.length;
        if (written > limit) return cb(new EwError('PAYLOAD_TOO_LARGE', `the artifact passed ${limit} bytes; this cloud accepts no more`));
        if (total !== undefined && written > total)
          return cb(
            new EwError('VALIDATION_FAILED', `the upload sent more than the ${total} bytes its Content-Range announced`, {
              path: 'Content-Range',
            }),
          );
        cb(null, chunk);
      },
    });
    try {
      await pipeline(body, counter, createWriteStream(p.partial, { flags: 'a' }));
    } catch (e) {
      // What arrived before the failure stays: the client resumes from `received`.
      if (e instanceof EwError) throw e;
      throw new EwError(
        'VALIDATION_FAILED',
        `the upload was interrupted at byte ${written}: ${(e as Error).message}; resume from ${this.status(sha, scope).received}`,
        { cause: e },
      );
    }
    const done = total === undefined || written === total;
    if (!done) return this.status(sha, scope);
    const hash = createHash('sha256');
    await pipeline(createReadStream(p.partial), hash);
    const got = hash.digest('hex');
    if (got !== sha) {
      rmSync(p.partial, { force: true });
      throw new EwError(
        'ARTIFACT_DIGEST_MISMATCH',
        `the uploaded bytes hash to ${got}, not ${sha}; the upload was discarded — check the file and upload it again`,
        { path: 'sha256' },
      );
    }
    // Another tenant may have completed the same bytes meanwhile: the content is identical.
    if (existsSync(p.done)) rmSync(p.partial, { force: true });
    else renameSync(p.partial, p.done);
    return this.status(sha);
  }

  /** A read stream over a complete artifact, optionally a byte range [start, end]. */
  /** The complete file of an artifact, or undefined while it is missing or partial. */
  file(sha: string): string | undefined {
    const p = this.paths(sha);
    return existsSync(p.done) ? p.done : undefined;
  }

  open(sha: string, range?: { start: number; end?: number }): { stream: ReadStream; size: number } {
    const st = this.status(sha);
    if (!st.complete)
      throw new EwError('ARTIFACT_NOT_FOUND', `no complete artifact ${sha}; upload it first (PUT /api/v1/artifacts/${sha})`, {
        path: 'sha256',
      });
    return { stream: createReadStream(this.paths(sha).done, range), size: st.size };
  }
}
