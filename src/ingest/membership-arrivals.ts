// Where a v2 response's invites and knocks go among its events. A response carries no order
// between rooms, and the proxy hands out stream positions as it stores them, so the position an
// invite or knock gets is the only thing that says how recent it is (its room's place in
// recency-sorted lists, MSC4186 `bump_stamp`). The homeserver orders them by when they
// happened; so does this, by the timestamp of the user's own member event, which the
// homeserver puts in the stripped state with the rest of the event (Synapse does; bare stripped
// state has no timestamp, and such invites keep their place after every event of the response).
import type { StrippedEvent, SyncResponse } from '../upstream/sync-response.js';

/** A room the user was invited to or knocked on in one response. */
export interface MembershipArrival {
  roomId: string;
  /** origin_server_ts of the user's own member event (undefined: the stripped state has none). */
  ts: number | undefined;
}

/** The response's invites, then its knocks, in the order the response lists them. */
export function membershipArrivals(response: SyncResponse, userId: string): MembershipArrival[] {
  const arrivals: MembershipArrival[] = [];
  const add = (roomId: string, state: readonly StrippedEvent[] = []) => {
    const own = state.findLast((e) => e.type === 'm.room.member' && e.state_key === userId);
    const ts = own?.origin_server_ts;
    arrivals.push({ roomId, ts: typeof ts === 'number' && Number.isSafeInteger(ts) ? ts : undefined });
  };
  for (const [roomId, room] of Object.entries(response.rooms.invite)) add(roomId, room.invite_state);
  for (const [roomId, room] of Object.entries(response.rooms.knock)) add(roomId, room.knock_state);
  return arrivals;
}

export interface ResponsePositions {
  /** The position of each new event, in the order given. */
  eventNids: number[];
  /** The position of each arrival's membership. */
  arrivalPos: Map<string, number>;
}

/**
 * Consecutive positions from `first` on for a response's new events (in the order they are to
 * be stored) and its invites and knocks: each arrival goes just before the first new event
 * newer than it, arrivals among themselves by time (the response's order when equal), and
 * those without a timestamp after everything. Takes `events.length + arrivals.length` positions.
 */
export function interleaveArrivals(
  events: readonly { originServerTs: number }[],
  arrivals: readonly MembershipArrival[],
  first: number,
): ResponsePositions {
  const at = (a: MembershipArrival) => a.ts ?? Number.POSITIVE_INFINITY;
  // (Array.prototype.sort is stable: equal times keep the response's order.)
  const queue = [...arrivals].sort((a, b) => (at(a) === at(b) ? 0 : at(a) < at(b) ? -1 : 1));
  const eventNids = new Array<number>(events.length);
  const arrivalPos = new Map<string, number>();
  let next = first;
  let q = 0;
  for (let i = 0; i < events.length; i++) {
    const ts = (events[i] as { originServerTs: number }).originServerTs;
    while (q < queue.length && at(queue[q] as MembershipArrival) < ts) arrivalPos.set((queue[q++] as MembershipArrival).roomId, next++);
    eventNids[i] = next++;
  }
  while (q < queue.length) arrivalPos.set((queue[q++] as MembershipArrival).roomId, next++);
  return { eventNids, arrivalPos };
}
