/**
 * Device simulator profiles: pure functions of (device, time, seeded randomness) that produce
 * the readings a real device of that kind would send. The shell in simulator.ts publishes them.
 * Each profile has a daily shape (rush hours, shifts, busy hours), noise, and rare incidents,
 * so streaming rules and models downstream see something worth detecting.
 */
import { gaussian } from '../lib/random.ts';

export interface Reading {
  topic: string;
  payload: Record<string, unknown>;
}

export interface Profile {
  name: string;
  /** Device ids this profile simulates. */
  devices: string[];
  /** Milliseconds between two readings of one device. */
  periodMs: number;
  reading(device: string, t: number, rand: () => number): Reading;
}

const hourOf = (t: number) => new Date(t).getUTCHours() + new Date(t).getUTCMinutes() / 60;
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

/** City intersections: vehicle counts and speeds, morning and evening peaks, congestion spells. */
export function trafficProfile(
  city = 'hangzhou',
  intersections = ['wensan-xueyuan', 'yanan-fengqi', 'moganshan-huancheng', 'binjiang-jiangnan'],
): Profile {
  return {
    name: 'traffic',
    devices: intersections,
    periodMs: 1000,
    reading(device, t, rand) {
      const h = hourOf(t + 8 * 3600_000); // local time for a city at UTC+8
      const peak = Math.exp(-((h - 8.5) ** 2) / 1.5) + Math.exp(-((h - 18) ** 2) / 2);
      const idx = intersections.indexOf(device);
      // A congestion spell: a few minutes per half hour at one intersection at a time.
      const spell = Math.floor(t / 1_800_000) % intersections.length === idx && t % 1_800_000 < 240_000;
      const demand = 6 + 18 * peak + (spell ? 10 : 0);
      const vehicles = Math.max(0, Math.round(demand + gaussian(rand) * 2.5));
      const freeFlow = 50;
      const speed = Math.max(2, freeFlow * (1 - 0.55 * peak) * (spell ? 0.25 : 1) + gaussian(rand) * 4);
      return {
        topic: `city/${city}/${device}/traffic`,
        payload: {
          intersection: device,
          ts: t,
          vehicles,
          speed: round(speed, 1),
          occupancy: round(Math.min(1, vehicles / 40 + (spell ? 0.3 : 0)), 3),
          lane: 1 + Math.floor(rand() * 4),
        },
      };
    },
  };
}

/** Machine vibration: healthy machines plus one whose bearing slowly degrades. */
export function vibrationProfile(machines = ['press-01', 'press-02', 'cnc-07', 'pump-12']): Profile {
  return {
    name: 'vibration',
    devices: machines,
    periodMs: 500,
    reading(device, t, rand) {
      const degrading = device === machines[machines.length - 1];
      // Degradation builds over each hour then "maintenance" resets it.
      const wear = degrading ? (t % 3_600_000) / 3_600_000 : 0;
      const rms = 0.9 + 0.6 * wear + Math.abs(gaussian(rand)) * 0.08;
      const kurtosis = 3 + 4 * wear ** 2 + gaussian(rand) * 0.2 + (rand() < 0.002 ? 6 : 0);
      const peakHz = 120 + (degrading ? 35 * wear : 0) + gaussian(rand) * 2;
      return {
        topic: `factory/${device}/vibration`,
        payload: {
          machineId: device,
          ts: t,
          rms: round(rms, 4),
          kurtosis: round(kurtosis, 3),
          peakHz: round(peakHz, 1),
          temperature: round(41 + 12 * wear + gaussian(rand), 1),
        },
      };
    },
  };
}

/** Radio cells at a telco edge: PRB utilisation, throughput and latency that follow the day. */
export function cellKpiProfile(cells = ['cell-3101', 'cell-3102', 'cell-3207']): Profile {
  return {
    name: 'cell-kpi',
    devices: cells,
    periodMs: 2000,
    reading(device, t, rand) {
      const h = hourOf(t + 1 * 3600_000);
      const load = 0.25 + 0.55 * Math.max(0, Math.sin(((h - 6) / 18) * Math.PI));
      const prb = Math.min(1, Math.max(0, load + gaussian(rand) * 0.05));
      const ues = Math.max(0, Math.round(40 + 260 * prb + gaussian(rand) * 10));
      return {
        topic: `telco/${device}/kpi`,
        payload: {
          cellId: device,
          ts: t,
          prbUtil: round(prb, 3),
          activeUes: ues,
          throughputMbps: round(900 * (1 - prb * 0.6) + gaussian(rand) * 20, 1),
          latencyMs: round(8 + 30 * prb ** 3 + Math.abs(gaussian(rand)) * 2, 2),
        },
      };
    },
  };
}

/**
 * Building electricity meters: kW every few seconds, following an office day (low at night, a
 * morning ramp, a midday plateau, an evening fall), with the outdoor temperature adding cooling
 * load in the afternoon, weekends lighter, and noise.
 */
export function energyProfile(meters = ['bldg-a-main', 'bldg-b-main', 'bldg-c-hvac']): Profile {
  return {
    name: 'energy',
    devices: meters,
    periodMs: 5000,
    reading(device, t, rand) {
      const d = new Date(t);
      const h = d.getUTCHours() + d.getUTCMinutes() / 60;
      const weekend = d.getUTCDay() === 0 || d.getUTCDay() === 6;
      const idx = Math.max(0, meters.indexOf(device));
      const base = [120, 80, 60][idx % 3]!;
      const office = Math.max(0, Math.sin(((h - 6) / 14) * Math.PI)) * (weekend ? 0.3 : 1);
      const temperature = 18 + 8 * Math.sin(((h - 9) / 24) * 2 * Math.PI) + gaussian(rand) * 0.5;
      const cooling = Math.max(0, temperature - 22) * (idx === 2 ? 6 : 2);
      const kw = base * (0.35 + 0.65 * office) + cooling + gaussian(rand) * base * 0.03;
      return {
        topic: `energy/${device}/power`,
        payload: { meterId: device, ts: t, kw: round(Math.max(0, kw), 2), temperature: round(temperature, 1) },
      };
    },
  };
}
