import { it } from 'node:test';
import assert from 'node:assert/strict';
import { checkChatCascade, checkTensorCascade } from './cascade.ts';

const probs = { name: 'probs', shape: [2, 3], data: [0.9, 0.05, 0.05, 0.5, 0.3, 0.2] };

it('confidence and margin thresholds read every row; the least sure row decides', () => {
  assert.deepEqual(checkTensorCascade({ confidence: { below: 0.6 } }, [probs]), { escalate: true, why: 'confidence 0.5000 < 0.6' });
  assert.equal(checkTensorCascade({ confidence: { below: 0.5 } }, [probs]).escalate, false, 'exactly at the threshold does not escalate');
  assert.equal(checkTensorCascade({ margin: { output: 'probs', below: 0.25 } }, [probs]).escalate, true); // 0.5 - 0.3 = 0.2
  assert.equal(checkTensorCascade({ margin: { below: 0.15 } }, [probs]).escalate, false);
});

it('score thresholds (an OCR line score, an anomaly score) escalate below or above', () => {
  const scores = { name: 'scores', shape: [3], data: [0.99, 0.62, 0.97] };
  assert.equal(checkTensorCascade({ score: { output: 'scores', below: 0.7 } }, [probs, scores]).escalate, true);
  assert.equal(checkTensorCascade({ score: { output: 'scores', below: 0.6 } }, [probs, scores]).escalate, false);
  assert.equal(checkTensorCascade({ score: { output: 'scores', above: 0.98 } }, [scores]).escalate, true);
  assert.throws(() => checkTensorCascade({ score: { output: 'nope', below: 1 } }, [scores]), /reads output "nope".*it has scores/);
});

it('chat answers escalate on refusals and on low mean log-probability', () => {
  assert.equal(checkChatCascade({ refusal: true }, "I'm sorry, I can't help with that.").escalate, true);
  assert.equal(checkChatCascade({ refusal: true }, '抱歉，我无法回答。').escalate, true);
  assert.equal(checkChatCascade({ refusal: true }, 'The bearing on m2 shows high kurtosis.').escalate, false);
  assert.equal(checkChatCascade({ logprob: { below: -1 } }, 'x', [-0.5, -2, -2]).escalate, true);
  assert.equal(checkChatCascade({ logprob: { below: -1 } }, 'x', [-0.1, -0.2]).escalate, false);
});
