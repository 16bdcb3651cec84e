import { readFileSync } from 'node:fs';
import { EwError } from '../../contracts/errors.ts';
import { DeviceSimulator } from '../../sim/simulator.ts';
import * as p from '../../sim/profiles.ts';
import { green, parseDuration } from './output.ts';

/** `edgeweave simulate`: realistic device data into a site's broker. */
export async function simulate(o: {
  profile: string;
  broker: string;
  username: string;
  password?: string;
  credentials?: string;
  duration?: string;
}): Promise<void> {
  const profiles: Record<string, () => p.Profile> = {
    traffic: () => p.trafficProfile(),
    vibration: () => p.vibrationProfile(),
    'cell-kpi': () => p.cellKpiProfile(),
    energy: () => p.energyProfile(),
  };
  const make = profiles[o.profile];
  if (!make)
    throw new EwError('CONFIG_INVALID', `no simulator profile "${o.profile}"; choose ${Object.keys(profiles).join(', ')}`, {
      path: 'profile',
    });
  let creds: Record<string, string> | undefined;
  if (o.credentials) {
    try {
      creds = JSON.parse(readFileSync(o.credentials, 'utf8')) as Record<string, string>;
    } catch (e) {
      throw new EwError('CONFIG_INVALID', `--credentials ${o.credentials}: ${(e as Error).message}`, { path: 'credentials' });
    }
    const missing = make().devices.filter((d) => typeof creds![d] !== 'string');
    if (missing.length)
      throw new EwError(
        'CONFIG_INVALID',
        `--credentials ${o.credentials} has no secret for ${missing.join(', ')}; register them with edgeweave devices add`,
        { path: 'credentials' },
      );
  } else if (!o.password) {
    throw new EwError(
      'CONFIG_INVALID',
      "give the devices' credentials with --credentials <file>, or the shared device password with --password (or EW_DEVICE_PASSWORD)",
      { path: 'password' },
    );
  }
  const sim = new DeviceSimulator(
    creds
      ? { url: o.broker, credentials: (d) => ({ username: d, password: creds![d]!, clientId: d }), profile: make() }
      : { url: o.broker, username: o.username, password: o.password!, profile: make() },
  );
  await sim.start();
  process.stderr.write(`${green('simulating')} ${make().devices.length} ${o.profile} device(s) into ${o.broker}; Ctrl-C stops\n`);
  const stop = async () => {
    await sim.stop();
    process.stderr.write(`${sim.count} readings sent\n`);
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  if (o.duration) setTimeout(() => void stop(), parseDuration(o.duration) * 1000);
}
