import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { openEdgeDb } from './db.ts';
import { ArtifactCache, type ArtifactSource } from './artifacts.ts';
import { ManualClock } from '../lib/clock.ts';
import { silentLogger } from '../lib/logger.ts';
import { isEwError } from '../contracts/errors.ts';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A source serving blobs from memory; it can cut a transfer after N bytes, or lie about content. */
function memorySource(blobs: Map<string, Buffer>) {
  const calls: { sha: string; offset: number }[] = [];
  let cutAfter: number | undefined;
  const src: ArtifactSource & { calls: typeof calls; cut(n: number): void } = {
    calls,
    cut(n) {
      cutAfter = n;
    },
    async fetch(s, offset) {
      calls.push({ sha: s, offset });
      const b = blobs.get(s);
      if (!b) throw Object.assign(new Error('nope'), {});
      const rest = b.subarray(offset);
      if (cutAfter !== undefined) {
        const n = cutAfter;
        cutAfter = undefined;
        // Sends n bytes, then the connection breaks.
        let sent = false;
        const body = new Readable({
          read() {
            if (!sent) {
              sent = true;
              this.push(rest.subarray(0, n));
            } else this.destroy(new Error('connection reset'));
          },
        });
        return { body, total: b.length };
      }
      return { body: Readable.from([rest]), total: b.length };
    },
  };
  return src;
}

describe('ArtifactCache', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ew-cache-'));
  const db = openEdgeDb(dir);
  after(() => {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const a = Buffer.alloc(3000, 1);
  const b = Buffer.alloc(3000, 2);
  const c = Buffer.alloc(3000, 3);
  const blobs = new Map([
    [sha(a), a],
    [sha(b), b],
    [sha(c), c],
  ]);
  const src = memorySource(blobs);
  const clock = new ManualClock(1);
  const cache = new ArtifactCache(db, join(dir, 'models'), 7000, src, clock, silentLogger());

  it('downloads, verifies and reports progress', async () => {
    const progress: number[] = [];
    const file = await cache.ensure(sha(a), (r) => progress.push(r));
    assert.ok(readFileSync(file).equals(a));
    assert.equal(progress.at(-1), 3000);
    assert.equal(await cache.ensure(sha(a)), file, 'cached: no second download');
    assert.equal(src.calls.filter((x) => x.sha === sha(a)).length, 1);
  });

  it('resumes an interrupted download from where it stopped', async () => {
    src.cut(1000);
    clock.advance(1);
    const file = await cache.ensure(sha(b));
    assert.ok(readFileSync(file).equals(b));
    const calls = src.calls.filter((x) => x.sha === sha(b));
    assert.deepEqual(
      calls.map((x) => x.offset),
      [0, 1000],
    );
  });

  it('refuses a file whose bytes do not match its sha256, and deletes it', async () => {
    const fake = sha(Buffer.from('what the manifest promised'));
    blobs.set(fake, Buffer.from('something else entirely'));
    await assert.rejects(cache.ensure(fake), (e: unknown) => isEwError(e, 'ARTIFACT_DIGEST_MISMATCH'));
    assert.equal(existsSync(join(dir, 'models', fake)), false);
    assert.equal(existsSync(join(dir, 'models', `${fake}.partial`)), false);
  });

  it('refuses a cached file changed on disk and fetches it again', async () => {
    const file = join(dir, 'models', sha(a));
    writeFileSync(file, 'tampered');
    const again = await cache.ensure(sha(a));
    assert.ok(readFileSync(again).equals(a));
    assert.equal(src.calls.filter((x) => x.sha === sha(a)).length, 2);
  });

  it('does not hash an unchanged cached file again at a restart, but does when its bytes changed behind an unchanged size and mtime', async () => {
    const restarted = new ArtifactCache(db, join(dir, 'models'), 7000, src, clock, silentLogger());
    const file = await restarted.ensure(sha(a));
    assert.equal(restarted.stats.hashed, 0, 'the verified marker matched: no re-hash');
    const before = statSync(file);
    writeFileSync(file, Buffer.alloc(3000, 9)); // same size
    utimesSync(file, before.atime, before.mtime); // mtime put back; ctime cannot be
    const downloads = src.calls.filter((x) => x.sha === sha(a)).length;
    const again = await restarted.ensure(sha(a));
    assert.equal(restarted.stats.hashed, 1);
    assert.ok(readFileSync(again).equals(a), 'the changed file was caught and fetched again');
    assert.equal(src.calls.filter((x) => x.sha === sha(a)).length, downloads + 1);
  });

  it('evicts the least recently used files over budget, never one in use', async () => {
    cache.acquire(sha(b)); // b is loaded; a was used last
    clock.advance(1);
    await cache.ensure(sha(c)); // a + b + c = 9000 > 7000
    const left = cache.cached().map((x) => x.sha256);
    assert.ok(left.includes(sha(b)), 'b is in use');
    assert.ok(left.includes(sha(c)), 'c was just fetched');
    assert.equal(left.length, 2);
    assert.equal(existsSync(join(dir, 'models', left.includes(sha(a)) ? 'none' : sha(a))), false);
    cache.release(sha(b));
  });
});
