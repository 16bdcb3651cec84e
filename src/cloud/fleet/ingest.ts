import { Counter, type Registry } from 'prom-client';
import { decodePayload, PAYLOAD_LIMITS, ReportedMessage, RpcResponse, UplinkMessage } from '../../contracts/messages.ts';
import { isFrame, MAX_FRAME_BYTES } from '../../contracts/infer-wire.ts';
import { parseTopic } from '../../contracts/topics.ts';
import { isEwError } from '../../contracts/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import type { SiteDirectory } from './sites.ts';
import type { SiteStatuses } from './status.ts';
import type { UplinkWriter } from './uplink.ts';
import type { SiteRpc } from './rpc.ts';

/**
 * Everything sites send, in: the topic is checked against the contract, the payload against its
 * topic class's size bound and schema, the sender against the site directory (a revoked or
 * unknown site's late messages are ignored); then status, uplink or an RPC answer goes to its part.
 */
export class Ingest {
  private readonly m;

  constructor(
    private readonly o: {
      log: Logger;
      registry: Registry;
      sites: SiteDirectory;
      status: SiteStatuses;
      uplink: UplinkWriter;
      rpc: SiteRpc;
      /** Whether one more result of this tenant fits its results-per-day quota (cloud/quotas.ts). */
      admitResult?: (tenantId: string) => Promise<boolean>;
    },
  ) {
    const r = o.registry;
    this.m = {
      ignored: new Counter({
        name: 'ew_cloud_site_messages_ignored_total',
        help: 'MQTT messages from revoked or unknown sites, acknowledged and ignored, by reason',
        labelNames: ['reason'],
        registers: [r],
      }),
      badPayloads: new Counter({
        name: 'ew_cloud_mqtt_payload_invalid_total',
        help: 'MQTT messages refused as malformed',
        labelNames: ['kind'],
        registers: [r],
      }),
      oversized: new Counter({
        name: 'ew_cloud_mqtt_payload_oversized_total',
        help: 'MQTT messages dropped for exceeding their topic class bound',
        labelNames: ['kind'],
        registers: [r],
      }),
      quotaDropped: new Counter({
        name: 'ew_cloud_uplink_quota_dropped_total',
        help: 'Results dropped because their tenant was at its quota of results per day (QUOTA_EXCEEDED)',
        registers: [r],
      }),
    };
  }

  /** The hub handler: never throws for a bad message (it is counted and logged); rejects only when storing failed (the site resends). */
  readonly handle = async (topic: string, payload: Buffer): Promise<void> => {
    const t = parseTopic(topic);
    // Another replica owns this site's heartbeats (fleet/ownership.ts): dropped before anything
    // is parsed — this is what splits heartbeat work between replicas.
    if (t?.kind === 'reported' && !this.o.status.owns(t.siteId)) {
      this.o.status.notOwned();
      return;
    }
    try {
      if (!t) throw new Error(`topic ${topic} is outside the contract`);
      // Routed inference answers are binary frames with their own bound (infer-wire.ts); JSON
      // messages have their topic class's.
      const limit = t.kind === 'rpc-res' && isFrame(payload) ? MAX_FRAME_BYTES : PAYLOAD_LIMITS[t.kind as keyof typeof PAYLOAD_LIMITS];
      if (limit !== undefined && payload.length > limit) {
        // Acknowledged and dropped: resending would not make it smaller (docs/operators.md).
        this.m.oversized.inc({ kind: t.kind });
        this.o.log.warn({ siteId: t.siteId, topic, bytes: payload.length, limit }, 'MQTT message over its size bound dropped');
        return;
      }
      const site = await this.o.sites.get(t.siteId);
      if (!site || site.revoked) {
        // A revoked or unknown site's late messages are ignored (counted: a revoked site still
        // sending is a broker whose ACL was not told, docs/operators.md).
        this.m.ignored.inc({ reason: site ? 'revoked' : 'unknown' });
        return;
      }
      if (t.kind === 'reported') return this.o.status.onReported(t.siteId, decodePayload(ReportedMessage, payload, topic));
      if (t.kind === 'up') {
        const msg = decodePayload(UplinkMessage, payload, topic);
        if (this.o.admitResult && !(await this.o.admitResult(site.tenantId))) {
          // Acknowledged and dropped, counted: the site resending it would not fit either.
          this.m.quotaDropped.inc();
          this.o.log.warn(
            { code: 'QUOTA_EXCEEDED', siteId: t.siteId, tenantId: site.tenantId, stream: t.stream },
            'result dropped: the tenant is at its quota of results per day',
          );
          return;
        }
        return await this.o.uplink.store(t.siteId, t.stream, msg);
      }
      if (t.kind === 'rpc-res' && isFrame(payload)) return this.o.rpc.frame(t.siteId, t.id, payload);
      if (t.kind === 'rpc-res') return this.o.rpc.answer(t.siteId, t.id, decodePayload(RpcResponse, payload, topic));
    } catch (e) {
      // A newer major's message is refused like a malformed one: acknowledged (resending would not
      // change it), counted and logged with its own code.
      if (isEwError(e, 'MQTT_PAYLOAD_INVALID') || isEwError(e, 'CONTRACT_VERSION_UNSUPPORTED')) {
        this.m.badPayloads.inc({ kind: t?.kind ?? 'unknown' });
        this.o.log.warn({ code: e.code, path: e.path, siteId: t?.siteId }, e.message);
        return;
      }
      throw e;
    }
  };
}
