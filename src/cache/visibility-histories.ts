// The history a user's view of a room is decided from (see sync/visibility.ts): the room's
// history_visibility changes and the user's own membership changes. Read once per room for
// all its members and kept while the room's state does not change: both kinds of change are
// state, so a room whose state position is where it was at the read has the same history.
// Many users woken by one event in a room they share then need no query each. Rooms too big
// to read whole at every state change, or without cached metadata, are read per user; the rooms
// held are bounded by their members together (a few changes each), not only by their number.
// Changes stored below every stream position (fetched history, room.rewritten) move no state
// position, so that message drops the room's copy.
import type { Bus } from '../bus/bus.js';
import type { Queryable } from '../store/db.js';
import { roomVisibilityHistories, visibilityHistory } from '../store/room-reads.js';
import type { RoomMetaCache } from './room-meta-cache.js';
import { WeightedLru } from './weighted-lru.js';

interface Change {
  pos: number;
  value: string;
}

export interface RoomHistory {
  visibility: Change[];
  membership: Change[];
}

interface Entry {
  /** The room's state position when the read started: valid while it is still that. */
  statePos: number;
  data: Promise<{ visibility: Change[]; members: Map<string, Change[]> } | undefined>;
}

/**
 * Rooms with more members than this are read per user: each state change of a room makes the
 * next request that needs it read every member's changes again.
 */
const MAX_MEMBERS = 10_000;
/** Members of all held rooms together (each a few changes of about 100 bytes). */
const MAX_HELD_MEMBERS = 1_000_000;

export class VisibilityHistories {
  readonly #rooms: WeightedLru<string, Entry>;

  constructor(
    private readonly pool: Queryable,
    bus: Bus,
    private readonly metas: RoomMetaCache,
    maxRooms = 10_000,
  ) {
    this.#rooms = new WeightedLru(MAX_HELD_MEMBERS, maxRooms);
    bus.subscribe('room.rewritten', ({ roomIds }) => this.forget(roomIds));
  }

  /** Each room's history for the user, from memory where it is fresh. */
  async get(userId: string, roomIds: string[]): Promise<Map<string, RoomHistory>> {
    const out = new Map<string, RoomHistory>();
    const direct: string[] = [];
    const toLoad: [string, Entry][] = [];
    const entries: [string, Entry][] = [];
    for (const roomId of roomIds) {
      const meta = this.metas.get(roomId);
      const weight = 1 + (meta?.joinedCount ?? 0) + (meta?.invitedCount ?? 0);
      if (!meta || weight > MAX_MEMBERS || !this.#rooms.fits(weight)) {
        direct.push(roomId);
        continue;
      }
      let entry = this.#rooms.get(roomId);
      if (entry && entry.statePos !== meta.statePos) entry = undefined;
      if (!entry) {
        entry = { statePos: meta.statePos, data: Promise.resolve(undefined) };
        toLoad.push([roomId, entry]);
        this.#rooms.set(roomId, entry, weight);
      }
      entries.push([roomId, entry]);
    }
    if (toLoad.length) {
      // One read for the rooms this request is the first to need; concurrent requests share it.
      const loaded = roomVisibilityHistories(
        this.pool,
        toLoad.map(([roomId]) => roomId),
      );
      for (const [roomId, entry] of toLoad) {
        entry.data = loaded.then((m) => m.get(roomId));
        entry.data.catch(() => {
          if (this.#rooms.holds(roomId, entry)) this.#rooms.delete(roomId);
        });
      }
    }
    const [own] = await Promise.all([
      visibilityHistory(this.pool, userId, direct),
      ...entries.map(async ([roomId, entry]) => {
        const data = await entry.data;
        if (data) out.set(roomId, { visibility: data.visibility, membership: data.members.get(userId) ?? [] });
      }),
    ]);
    for (const [roomId, history] of own) out.set(roomId, history);
    return out;
  }

  /** Rooms no cached user holds any more. */
  forget(roomIds: Iterable<string>): void {
    for (const id of roomIds) this.#rooms.delete(id);
  }
}
