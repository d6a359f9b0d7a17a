// Exact pagination tokens for timelines the proxy serves. A v2 chunk gives a token from just
// before its first event only; when a served timeline starts at another event, the nearest
// stored token would make a client's back-pagination repeat events. Asking the homeserver's
// /context (no events around) with the device's own token gives the exact one, which is then
// stored with the event for every later response and user (pagination tokens are positions in
// the room, not per user). A homeserver that cannot answer leaves the nearest token in use.
import type { Bus } from '../bus/bus.js';
import type { Pool } from '../store/db.js';
import type { DeviceRef } from '../store/device-inbox-table.js';
import { setPrevBatch } from '../store/events-table.js';
import type { Logger } from '../telemetry/logger.js';
import { UpstreamError } from '../upstream/errors.js';
import type { Homeserver } from '../upstream/homeserver-client.js';
import type { PollerManager } from './poller-manager.js';

/** Failed look-ups remembered (not retried), at most. */
const MAX_REMEMBERED_FAILURES = 10_000;

export interface ExactPrevBatchDeps {
  pollers: Pick<PollerManager, 'get'>;
  homeserver: Pick<Homeserver, 'tokenBefore'>;
  pool: Pool;
  logger: Logger;
  /** Kept short: a response waits for it. */
  timeoutMs: number;
  /** Told that the event was rewritten (its token stored), so in-memory copies drop. */
  bus?: Pick<Bus, 'publish'>;
  /** The homeserver said the device's token is dead: it is refused from then on. */
  onTokenRefused?: (token: string, softLogout: boolean) => Promise<void>;
}

/** Implements sync/ports.ts's PrevBatchSource (its shape is checked where proxy.ts wires it). */
export function exactPrevBatches(deps: ExactPrevBatchDeps) {
  const failed = new Set<number>();
  const inFlight = new Map<number, Promise<string | undefined>>();
  const lookUp = async (token: string, roomId: string, event: { nid: number; eventId: string }) => {
    try {
      const start = await deps.homeserver.tokenBefore(token, roomId, event.eventId, { timeoutMs: deps.timeoutMs });
      if (start) {
        await setPrevBatch(deps.pool, event.nid, start);
        deps.bus?.publish('room.rewritten', { roomIds: [roomId] });
      } else remember(event.nid);
      return start;
    } catch (err) {
      deps.logger.debug({ err, roomId, eventId: event.eventId }, 'no exact prev_batch from the homeserver; serving the nearest');
      // Only the token's own death: a 403 here means the event is not visible, not a dead token.
      if (err instanceof UpstreamError && err.details.errcode === 'M_UNKNOWN_TOKEN') {
        await deps
          .onTokenRefused?.(token, err.details.softLogout === true)
          .catch((e) => deps.logger.warn({ err: e }, 'forgetting a refused token failed'));
        return undefined;
      }
      remember(event.nid);
      return undefined;
    }
  };
  const remember = (nid: number) => {
    if (failed.size >= MAX_REMEMBERED_FAILURES) failed.delete(failed.values().next().value as number);
    failed.add(nid);
  };
  return {
    exactPrevBatch(device: DeviceRef, roomId: string, event: { nid: number; eventId: string }): Promise<string | undefined> {
      const token = deps.pollers.get(device.userId, device.deviceId)?.token;
      if (!token || failed.has(event.nid)) return Promise.resolve(undefined);
      const running = inFlight.get(event.nid);
      if (running) return running;
      const p = lookUp(token, roomId, event).finally(() => inFlight.delete(event.nid));
      inFlight.set(event.nid, p);
      return p;
    },
  };
}
