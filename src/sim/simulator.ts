import mqtt, { type MqttClient } from 'mqtt';
import type { Profile } from './profiles.ts';
import { seeded } from '../lib/random.ts';

export interface SimulatorOptions {
  url: string;
  /** The shared device password's credentials, for every device… */
  username?: string;
  password?: string;
  /** …or each device's own (its id is its client id): what a site without the shared password needs. */
  credentials?: (device: string) => { username: string; password: string; clientId: string };
  profile: Profile;
  seed?: number;
  /** Wall-clock source for the readings' timestamps. */
  now?: () => number;
}

/**
 * Publishes a profile's readings to a site's device broker, one MQTT connection per device
 * (as real devices would), QoS 0 like most sensors. Reconnects by itself.
 */
export class DeviceSimulator {
  private clients: MqttClient[] = [];
  private timers: NodeJS.Timeout[] = [];
  private published = 0;

  constructor(private readonly o: SimulatorOptions) {}

  get count(): number {
    return this.published;
  }

  async start(): Promise<void> {
    const now = this.o.now ?? Date.now;
    const { profile } = this.o;
    const rand = seeded(this.o.seed ?? 42);
    await Promise.all(
      profile.devices.map(async (device, i) => {
        const creds = this.o.credentials?.(device) ?? {
          clientId: `sim-${profile.name}-${device}`,
          username: this.o.username,
          password: this.o.password,
        };
        const client = await mqtt.connectAsync(this.o.url, { ...creds, reconnectPeriod: 1000, protocolVersion: 4 });
        this.clients.push(client);
        // Devices start out of phase, as real ones do.
        const start = setTimeout(
          () => {
            const tick = () => {
              if (!client.connected) return;
              const r = profile.reading(device, now(), rand);
              client.publish(r.topic, JSON.stringify(r.payload), { qos: 0 });
              this.published++;
            };
            tick();
            this.timers.push(setInterval(tick, profile.periodMs));
          },
          Math.floor((profile.periodMs * i) / profile.devices.length),
        );
        this.timers.push(start);
      }),
    );
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    await Promise.all(this.clients.map((c) => c.endAsync()));
  }
}
