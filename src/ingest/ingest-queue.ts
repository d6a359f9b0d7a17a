// The order ingest transactions run in, one at a time. When a message lands in a room shared by
// 200 users, 200 pollers bring it: the first copy stores it and wakes every waiting connection,
// the other 199 are repeats that only advance their device's `since` and unread counts. In one
// first-come queue the first copy of the next message waited behind all of those repeats (on a
// loaded machine, 2 s apart, 75 ms each: the wait grew by seconds with every message). So a
// response that brings anything new goes before the queued responses that only repeat what is
// stored; each lane keeps its own arrival order, and a device's responses never overtake each
// other (its poller sends the next one only once the previous one is stored).
import type { RoomEvent, SyncResponse } from '../upstream/sync-response.js';
import type { KnownEvents } from './known-events.js';

export type Lane = 'news' | 'repeats';

export interface IngestQueue {
  /** Runs `fn` once every transaction before it in its lane, and every queued piece of news, is done. */
  run<T>(fn: () => Promise<T>, lane?: Lane): Promise<T>;
}

/** `onIdle` is called each time the last queued transaction is done. */
export function createIngestQueue(onIdle?: () => void): IngestQueue {
  const waiting: Record<Lane, (() => Promise<void>)[]> = { news: [], repeats: [] };
  let busy = false;
  const next = () => {
    const job = waiting.news.shift() ?? waiting.repeats.shift();
    if (!job && busy) onIdle?.();
    busy = job !== undefined;
    // A microtask later, as a promise chain would: the caller's own synchronous code runs first.
    if (job) void Promise.resolve().then(job).finally(next);
  };
  return {
    run: (fn, lane = 'news') =>
      new Promise((resolve, reject) => {
        waiting[lane].push(() => fn().then(resolve, reject));
        if (!busy) next();
      }),
  };
}

/**
 * Whether `response` (to `userId`'s device) only repeats stored events: every room event already
 * stored, no membership of the user's own among them, and nothing else that is the device's or
 * the user's alone and waited for (to-device messages, device lists, account data, invites,
 * knocks, leaves, a limited timeline). Unread counts, receipts and typing may come with it: they
 * are the user's, but wait only for the repeats queued before them.
 */
export function onlyRepeats(response: SyncResponse, known: Pick<KnownEvents, 'get'>, userId: string): boolean {
  const { rooms } = response;
  if (response.to_device.length || response.account_data.length) return false;
  if (response.device_lists?.changed.length || response.device_lists?.left.length) return false;
  if (Object.keys(rooms.invite).length || Object.keys(rooms.knock).length || Object.keys(rooms.leave).length) return false;
  const repeat = (e: RoomEvent) => e.state_key !== userId && known.get(e.event_id) !== undefined;
  for (const roomId in rooms.join) {
    const room = rooms.join[roomId];
    if (!room || room.account_data.length || room.timeline.limited) return false;
    if (!room.state.every(repeat) || !room.timeline.events.every(repeat)) return false;
  }
  return true;
}
