// The history a user's view of a room is decided from (see sync/visibility.ts): the room's
// history_visibility changes and the user's own membership changes. Read once per room for
// all its members and kept while the room's state does not change: both kinds of change are
// state, so a room whose state position is where it was at the read has the same history.
// Many users woken by one event in a room they share then need no query each. Rooms too big
// to hold every member's changes, or without cached metadata, are read per user as before.
// Changes stored below every stream position (fetched history, room.rewritten) move no state
// position, so that message drops the room's copy.
import type { Bus } from '../bus/bus.js';
import type { Queryable } from '../store/db.js';
import { roomVisibilityHistories, visibilityHistory } from '../store/room-reads.js';
import type { RoomMetaCache } from './room-meta-cache.js';

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

/** Rooms with more members than this are read per user (holding every member's changes would cost too much). */
const MAX_MEMBERS = 2_000;

export class VisibilityHistories {
  #rooms = new Map<string, Entry>();

  constructor(
    private readonly pool: Queryable,
    bus: Bus,
    private readonly metas: RoomMetaCache,
    private readonly maxRooms = 10_000,
  ) {
    bus.subscribe('room.rewritten', ({ roomIds }) => this.forget(roomIds));
  }

  /** Each room's history for the user, from memory where it is fresh. */
  async get(userId: string, roomIds: string[]): Promise<Map<string, RoomHistory>> {
    const out = new Map<string, RoomHistory>();
    const direct: string[] = [];
    const toLoad: string[] = [];
    const entries: [string, Entry][] = [];
    for (const roomId of roomIds) {
      const meta = this.metas.get(roomId);
      if (!meta || (meta.joinedCount ?? 0) + (meta.invitedCount ?? 0) > MAX_MEMBERS) {
        direct.push(roomId);
        continue;
      }
      let entry = this.#rooms.get(roomId);
      if (entry && entry.statePos !== meta.statePos) entry = undefined;
      if (entry) {
        // Most recently used last, so the oldest goes first past the cap.
        this.#rooms.delete(roomId);
        this.#rooms.set(roomId, entry);
      } else {
        toLoad.push(roomId);
        entry = { statePos: meta.statePos, data: Promise.resolve(undefined) };
        this.#set(roomId, entry);
      }
      entries.push([roomId, entry]);
    }
    if (toLoad.length) {
      // One read for the rooms this request is the first to need; concurrent requests share it.
      const loaded = roomVisibilityHistories(this.pool, toLoad);
      for (const roomId of toLoad) {
        const entry = this.#rooms.get(roomId) as Entry;
        entry.data = loaded.then((m) => m.get(roomId));
        entry.data.catch(() => {
          if (this.#rooms.get(roomId) === entry) this.#rooms.delete(roomId);
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

  #set(roomId: string, entry: Entry) {
    this.#rooms.delete(roomId);
    this.#rooms.set(roomId, entry);
    if (this.#rooms.size > this.maxRooms) this.#rooms.delete(this.#rooms.keys().next().value as string);
  }
}
