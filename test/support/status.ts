import { ENVELOPE_VERSION, type SiteStatusBody } from '../../src/contracts/messages.ts';

/** A minimal valid site status (the contract's required fields), with `over` on top. */
export function statusBody(over: Partial<SiteStatusBody> = {}): SiteStatusBody {
  return {
    agentVersion: '1',
    bootId: 'b1',
    uptimeS: 1,
    heartbeatIntervalS: 1,
    generation: 1,
    apps: [],
    system: {
      hostname: 'h',
      platform: 'linux',
      arch: 'x64',
      cores: 2,
      memoryTotalBytes: 100,
      memoryFreeBytes: 50,
      diskTotalBytes: 100,
      diskFreeBytes: 50,
      loadAvg1: 0.1,
    },
    runtimes: [],
    accelerators: [],
    outbox: { pending: 0, dropped: 0 },
    devices: { connected: 0, messagesIn: 0 },
    ...over,
  };
}

/** `body` as the heartbeat message a site sends on ew/{site}/reported. */
export function heartbeatMessage(body: SiteStatusBody) {
  return { v: ENVELOPE_VERSION as 1, id: 'x', ts: 0, type: 'status' as const, body };
}
