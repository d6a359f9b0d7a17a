// Current state of rooms with live traffic, whole (members included), so the connections woken
// by one event in a shared room get their required_state and lazy members from memory: the
// first to need a room loads it (one query), the others wait for that load. Kept while the
// room's state position is where it was when the read started (any state change moves it),
// dropped when its events are changed in place (a redacted state event). Only rooms with at
// most `maxMembers` members and a room.changed since start are held; `maxRooms` bounds the rest.
import type { Bus } from '../bus/bus.js';
import type { Queryable } from '../store/db.js';
import { currentMembers, currentState, type StateRow, type StateSelector } from '../store/room-reads.js';
import type { RoomMetaCache } from './room-meta-cache.js';

interface Loaded {
  rows: StateRow[];
  /** "type\0stateKey" -> row */
  byKey: Map<string, StateRow>;
}

interface Entry {
  statePos: number;
  data: Promise<Loaded | undefined>;
}

const ALL: StateSelector = { all: true, types: [], keys: [], pairTypes: [], pairKeys: [] };

/** What currentState's SQL selects, in memory. */
function selected(sel: StateSelector, row: StateRow): boolean {
  if (sel.all || sel.types.includes(row.type) || sel.keys.includes(row.stateKey)) return true;
  for (let i = 0; i < sel.pairTypes.length; i++) if (sel.pairTypes[i] === row.type && sel.pairKeys[i] === row.stateKey) return true;
  return false;
}

export class RoomStates {
  #live = new Set<string>();
  #rooms = new Map<string, Entry>();

  constructor(
    private readonly pool: Queryable,
    bus: Bus,
    private readonly metas: RoomMetaCache,
    private readonly opts: { maxMembers?: number; maxRooms?: number } = {},
  ) {
    bus.subscribe('room.changed', ({ roomId }) => {
      this.#live.add(roomId);
      if (this.#live.size > (this.opts.maxRooms ?? 1_000) * 4) this.#live.delete(this.#live.values().next().value as string);
    });
    bus.subscribe('room.rewritten', ({ roomIds }) => {
      for (const id of roomIds) this.#rooms.delete(id);
    });
  }

  /** currentState: from memory for live rooms, the others from the store. */
  async current(roomIds: string[], sel: StateSelector): Promise<StateRow[]> {
    const held = new Map<string, Promise<Loaded | undefined>>();
    for (const id of roomIds) {
      const data = this.#entry(id);
      if (data) held.set(id, data);
    }
    const direct = roomIds.filter((id) => !held.has(id));
    const loaded = await Promise.all([...held].map(async ([id, data]) => [id, await data] as const));
    for (const [id, data] of loaded) if (!data) direct.push(id);
    const out: StateRow[] = [];
    for (const [, data] of loaded) if (data) for (const row of data.rows) if (selected(sel, row)) out.push(row);
    if (direct.length) out.push(...(await currentState(this.pool, direct, sel)));
    return out;
  }

  /** currentMembers: from memory for live rooms, the others from the store. */
  async members(pairs: { roomId: string; userId: string }[]): Promise<StateRow[]> {
    const out: StateRow[] = [];
    const direct: { roomId: string; userId: string }[] = [];
    const rooms = new Map<string, Promise<Loaded | undefined>>();
    for (const p of pairs) {
      const data = rooms.get(p.roomId) ?? this.#entry(p.roomId);
      if (data) rooms.set(p.roomId, data);
    }
    const loaded = new Map(await Promise.all([...rooms].map(async ([id, data]) => [id, await data] as const)));
    for (const p of pairs) {
      const data = loaded.get(p.roomId);
      if (!data) direct.push(p);
      else {
        const row = data.byKey.get(`m.room.member\0${p.userId}`);
        if (row) out.push(row);
      }
    }
    if (direct.length) out.push(...(await currentMembers(this.pool, direct)));
    return out;
  }

  forget(roomIds: Iterable<string>): void {
    for (const id of roomIds) {
      this.#rooms.delete(id);
      this.#live.delete(id);
    }
  }

  /** The room's state, held or being loaded; undefined when it is read from the store. */
  #entry(roomId: string): Promise<Loaded | undefined> | undefined {
    if (!this.#live.has(roomId)) return undefined;
    const meta = this.metas.get(roomId);
    if (!meta || (meta.joinedCount ?? 0) + (meta.invitedCount ?? 0) > (this.opts.maxMembers ?? 2_000)) return undefined;
    let entry = this.#rooms.get(roomId);
    if (entry && entry.statePos !== meta.statePos) entry = undefined;
    if (!entry) {
      const data = currentState(this.pool, [roomId], ALL).then(
        (rows): Loaded => ({ rows, byKey: new Map(rows.map((r) => [`${r.type}\0${r.stateKey}`, r])) }),
        () => undefined,
      );
      entry = { statePos: meta.statePos, data };
      void data.then((d) => {
        if (!d && this.#rooms.get(roomId) === entry) this.#rooms.delete(roomId);
      });
    }
    this.#rooms.delete(roomId);
    this.#rooms.set(roomId, entry);
    if (this.#rooms.size > (this.opts.maxRooms ?? 1_000)) this.#rooms.delete(this.#rooms.keys().next().value as string);
    return entry.data;
  }
}
