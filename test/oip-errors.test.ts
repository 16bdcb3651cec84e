import { it } from 'node:test';
import assert from 'node:assert/strict';
import { startTestCloud } from './support/harness.ts';

/** Every error a /v2 route of the cloud answers has the Open Inference Protocol's body: {"error": "..."} (our code as an extra). */
it('the cloud answers every /v2 failure with {"error": …}, and other routes with {code, message}', async () => {
  const cloud = await startTestCloud();
  try {
    const cases: [string, string, unknown, string | undefined, number, string][] = [
      ['GET', '/v2/no/such/route', undefined, undefined, 404, 'NOT_FOUND'],
      ['POST', '/v2/models/x/infer', { inputs: [] }, '', 401, 'UNAUTHENTICATED'],
      ['POST', '/v2/models/x/infer', '{"inputs":', undefined, 400, 'INVALID_JSON'],
      ['GET', '/v2/models/nope', undefined, undefined, 404, 'MODEL_NOT_FOUND'],
    ];
    for (const [method, path, body, key, status, code] of cases) {
      const r = await cloud.api(method, path, body, key);
      assert.equal(r.status, status, `${method} ${path}: ${JSON.stringify(r.body)}`);
      assert.equal(typeof r.body.error, 'string', `${method} ${path}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, code);
      assert.equal(r.body.message, undefined);
    }
    const v1 = await cloud.api('GET', '/api/v1/no/such/route');
    assert.deepEqual(Object.keys(v1.body).sort(), ['code', 'message']);
  } finally {
    await cloud.stop();
  }
});
