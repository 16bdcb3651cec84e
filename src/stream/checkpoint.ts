import { deserialize, serialize } from 'node:v8';
import type { RuntimeState } from './runtime.ts';

/**
 * A rule's checkpoint, as stored beside its journal cursor: the runtime's state (maps, rows,
 * accumulator fields — V8's structured serialization keeps Maps, -Infinity and nested rows as
 * they are), the rule's fingerprint (a changed rule does not restore an old state), and the
 * emission counter that makes result ids deterministic across a crash and its replay.
 */
export interface RuleCheckpointData {
  fingerprint: string;
  /** Starts anew whenever a rule starts without a state to restore. */
  epoch: string;
  /** Results emitted in this epoch up to the checkpoint. */
  ordinal: number;
  runtime: RuntimeState;
}

export function encodeCheckpoint(c: RuleCheckpointData): Buffer {
  return serialize(c);
}

export function decodeCheckpoint(b: Buffer): RuleCheckpointData {
  return deserialize(b) as RuleCheckpointData;
}
