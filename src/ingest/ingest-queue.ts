// The order ingest transactions run in, one at a time. When a message lands in a room shared by
// 200 users, 200 pollers bring it: the first copy stores it and wakes every waiting connection,
// the other 199 are repeats that only advance their device's `since` and unread counts. In one
// first-come queue the first copy of the next message waited behind all of those repeats (on a
// loaded machine, 2 s apart, 75 ms each: the wait grew by seconds with every message). So a
// response that brings anything new goes before the queued responses that only repeat what is
// stored; each lane keeps its own arrival order, and a device's responses never overtake each
// other (its poller sends the next one only once the previous one is stored). Repeats that queued
// up while others ran are stored together, several devices' in one transaction (see repeats.ts):
// one by one, each cost about eight statements and its own commit, and 1,000 pollers bringing
// one message every 2 s fell behind.
import type { RoomEvent, SyncResponse } from '../upstream/sync-response.js';
import type { KnownEvents } from './known-events.js';

export interface IngestQueue<R> {
  /** Runs `fn` once every transaction queued before it, and every queued piece of news, is done. */
  run<T>(fn: () => Promise<T>): Promise<T>;
  /**
   * Queues a repeat behind the repeats queued before it and every queued piece of news. When
   * their turn comes, the repeats queued by then (up to the batch size) go to the queue's
   * `repeats` handler together, which settles each of them.
   */
  repeat(item: R): void;
}

export interface IngestQueueOptions<R> {
  /** Called each time the last queued transaction is done. */
  onIdle?: () => void;
  /** Stores repeats taken from the queue together, in their arrival order; settles every one, never throws. */
  repeats: (items: R[]) => Promise<void>;
  /** At most this many repeats go to the handler at once (news waits for at most one batch). */
  batch: number;
}

export function createIngestQueue<R>(opts: IngestQueueOptions<R>): IngestQueue<R> {
  const news: (() => Promise<void>)[] = [];
  const repeats: R[] = [];
  let busy = false;
  const take = (): (() => Promise<void>) | undefined => {
    const job = news.shift();
    if (job || repeats.length === 0) return job;
    const items = repeats.splice(0, opts.batch);
    return () => opts.repeats(items);
  };
  const next = () => {
    const job = take();
    if (!job && busy) opts.onIdle?.();
    busy = job !== undefined;
    // A microtask later, as a promise chain would: the caller's own synchronous code runs first.
    if (job) void Promise.resolve().then(job).finally(next);
  };
  return {
    run: (fn) =>
      new Promise((resolve, reject) => {
        news.push(() => fn().then(resolve, reject));
        if (!busy) next();
      }),
    repeat: (item) => {
      repeats.push(item);
      if (!busy) next();
    },
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
