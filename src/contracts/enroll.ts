import { z } from 'zod';

/**
 * Enrollment (`POST /api/v1/enroll`): a join token for site credentials. Both ends check these
 * schemas: the cloud the agent's request, the agent the cloud's answer. `contractVersion` (1.1)
 * is the sender's wire-contract version (contracts/messages.ts CONTRACT); absent means 1.0, and
 * the receiver refuses a version it cannot read with CONTRACT_VERSION_UNSUPPORTED.
 */
export const EnrollRequest = z.object({
  token: z.string().min(1).max(200),
  name: z.string().min(1).max(128).optional(),
  contractVersion: z.string().max(16).optional().describe('the agent\'s wire-contract version, "major.minor" (absent: 1.0)'),
});
export type EnrollRequest = z.infer<typeof EnrollRequest>;

export const EnrollResponse = z.object({
  siteId: z.string(),
  tenantId: z.string(),
  region: z.string(),
  labels: z.record(z.string(), z.string()).describe('label key → value, Kubernetes label syntax'),
  heartbeatIntervalS: z.number(),
  mqtt: z.object({
    url: z.string(),
    username: z.string(),
    password: z.string(),
    clientId: z.string(),
    protocolVersion: z.union([z.literal(4), z.literal(5)]),
    /** Put before every topic on the broker (an installation sharing it with others: docs/operators.md). */
    topicPrefix: z.string().max(300).optional(),
  }),
  contractVersion: z.string().max(16).optional().describe('the cloud\'s wire-contract version, "major.minor" (absent: 1.0)'),
});
export type EnrollResponse = z.infer<typeof EnrollResponse>;
