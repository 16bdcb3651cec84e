/**
 * MQTT 5 message properties into record fields. Devices on MQTT 5 send metadata beside the
 * payload: user properties (a line id, a firmware version, a unit), a message expiry interval, a
 * content type. A stream maps the ones it needs (`properties: { field: property }`); the fields
 * are added before the schema check, so they are typed and checked like payload fields.
 * Pure: the receive time comes with the properties (the device source stamps it).
 */
export interface Mqtt5Properties {
  userProperties?: Record<string, string | string[]>;
  /** Seconds left until the message expires (the broker has already counted its own time down). */
  messageExpiryInterval?: number;
  contentType?: string;
  responseTopic?: string;
  /** When the site received the message (ms since the epoch). */
  receivedAt: number;
}

/** The fields a stream's `properties` map takes from one message; absent properties give no field. */
export function propertyFields(map: Readonly<Record<string, string>>, p: Mqtt5Properties | undefined): Record<string, unknown> | undefined {
  if (!p) return undefined;
  const out: Record<string, unknown> = {};
  for (const [field, prop] of Object.entries(map)) {
    let v: unknown;
    if (prop.startsWith('user:')) v = p.userProperties?.[prop.slice(5)];
    else if (prop === 'user') v = p.userProperties ? { ...p.userProperties } : undefined;
    else if (prop === 'message-expiry') v = p.messageExpiryInterval;
    else if (prop === 'expires-at') v = p.messageExpiryInterval === undefined ? undefined : p.receivedAt + p.messageExpiryInterval * 1000;
    else if (prop === 'content-type') v = p.contentType;
    else if (prop === 'response-topic') v = p.responseTopic;
    if (v !== undefined) out[field] = v;
  }
  return out;
}
