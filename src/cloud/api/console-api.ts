import type { FastifyInstance } from 'fastify';
import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/logger.ts';
import type { Fleet } from '../fleet.ts';
import type { Store } from '../store/store.ts';
import { defaultConsoleDir, registerConsole } from './console.ts';
import { EventHub, registerEvents, type EventStreamLimits } from './events.ts';
import { registerMe } from './me.ts';

export type { EventStreamLimits };

/**
 * What the web console adds to the cloud, wired in one call: `GET /api/v1/me`, the live event
 * stream `GET /api/v1/events`, and the console's static files at `/`. The console itself uses
 * only the authenticated API, like the CLI.
 */
export function registerConsoleApi(
  app: FastifyInstance,
  o: {
    store: Store;
    fleet: Pick<Fleet, 'isOnline' | 'liveState' | 'status'>;
    clock: Clock;
    log: Logger;
    consoleDir?: string | false;
    eventStreams?: Partial<EventStreamLimits>;
  },
): EventHub {
  registerMe(app, o.store);
  const hub = new EventHub({
    store: o.store,
    isOnline: (id) => o.fleet.isOnline(id),
    liveState: (id) => o.fleet.liveState(id),
    liveStatus: (id) => {
      const status = o.fleet.status.statuses.get(id);
      const at = o.fleet.status.heardAt.get(id);
      return status && at !== undefined ? { status, at } : undefined;
    },
    clock: o.clock,
    log: o.log,
    limits: o.eventStreams,
  });
  registerEvents(app, hub);
  if (o.consoleDir !== false) registerConsole(app, { dir: o.consoleDir ?? defaultConsoleDir(), log: o.log });
  return hub;
}
