/**
 * The cloud's side of the MQTT link, with two real implementations that pass one conformance
 * suite (`test/hub.conformance.ts`):
 *  - EmbeddedHub: an in-process aedes broker that authenticates each site with the credentials
 *    issued at enrollment and confines it to `ew/{siteId}/#`;
 *  - ExternalHub: an MQTT client of an operator's broker (Mosquitto, EMQX, NATS), which does the
 *    authentication and ACL itself (see docs/operators.md), reading with shared subscriptions so
 *    several cloud replicas split the load.
 *
 * Lifecycle: construct → start(handler) → publish()… → close().
 * Delivery is at least once: a message is acknowledged to its sender (embedded) or to the broker
 * (external) only after `handler` resolves, so the handler must be idempotent (the store keys
 * uplink messages by id) and must not throw for bad payloads (it counts and logs them).
 */
export type HubHandler = (topic: string, payload: Buffer) => Promise<void>;

export interface Hub {
  readonly kind: 'embedded' | 'external';
  /** Subscribes to the cloud's filters (`ew/+/reported`, `ew/+/up/#`) and starts delivering. */
  start(handler: HubHandler): Promise<void>;
  /**
   * QoS 1 publish (default); resolves when the broker has it (external) or it is routed
   * (embedded). QoS 0 is for routed inference: a request must not wait in an offline site's
   * session and run minutes later, after its caller gave up.
   */
  publish(topic: string, payload: string | Buffer, opts?: { retain?: boolean; qos?: 0 | 1 }): Promise<void>;
  /** Cuts a site's live connection at once (revocation). A no-op for an external broker. */
  disconnectSite(siteId: string): void;
  /** Clears every retained message under `ew/{siteId}/` (revocation); resolves to how many. */
  clearRetained(siteId: string): Promise<number>;
  /** What an agent should dial, as given to it at enrollment. */
  readonly agentUrl: string;
  /**
   * The MQTT protocol agents must speak to this hub: 4 (3.1.1) for the embedded aedes broker,
   * which does not implement MQTT 5, and 5 for an external broker. Told to agents at enrollment.
   */
  readonly agentProtocolVersion: 4 | 5;
  /** Put before every topic on the broker (external hub with --topic-prefix); told to agents at enrollment. */
  readonly agentTopicPrefix?: string;
  /** Number of MQTT connections the hub has open (embedded) or -1 when unknown (external). */
  connectionCount(): number;
  close(): Promise<void>;
}

/** How the embedded hub checks a site's MQTT credentials; backed by the store. */
export interface SiteAuthenticator {
  /** True when `secret` is the live (unrevoked) secret of `siteId`. */
  verify(siteId: string, secret: string): Promise<boolean>;
}
