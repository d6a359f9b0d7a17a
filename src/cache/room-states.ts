// Current state of rooms with live traffic, whole (members included), so the connections woken
// by one event in a shared room get their required_state and lazy members from memory: the
// first to need a room loads it (one query), the others wait for that load. Kept while the
// room's state position is where it was when the read started (any state change moves it),
// dropped when its events are changed in place (a redacted state event). Only rooms with a
// room.changed since start, of at most `maxMembers` members, are held; the least recently used
// is dropped once the rooms held have more than `maxHeldMembers` members together or there are
// more than `maxRooms` of them (so a room of 5,000 is held as well as a thousand small ones,
// and memory stays bounded whichever rooms are busy).
import type { Bus } from '../bus/bus.js';
import type { Queryable } from '../store/db.js';
import { currentMembers, currentState, type StateRow, type StateSelector } from '../store/room-reads.js';
import type { RoomMetaCache } from './room-meta-cache.js';
import { WeightedLru } from './weighted-lru.js';

interface Loaded {
  rows: StateRow[];
  /** "type\0stateKey" -> row */
  byKey: Map<string, StateRow>;
  /** type -> indexes into rows, and state key -> indexes (built on first use). */
  byType?: Map<string, number[]>;
  byStateKey?: Map<string, number[]>;
  /** row -> index into rows */
  at?: Map<StateRow, number>;
}

interface Entry {
  statePos: number;
  data: Promise<Loaded | undefined>;
}

const ALL: StateSelector = { all: true, types: [], keys: [], pairTypes: [], pairKeys: [] };

function indexBy(rows: StateRow[], field: (r: StateRow) => string): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (let i = 0; i < rows.length; i++) {
    const k = field(rows[i] as StateRow);
    const list = out.get(k);
    if (list) list.push(i);
    else out.set(k, [i]);
  }
  return out;
}

/**
 * What currentState's SQL selects, in memory, in the held rows' order. Looked up through
 * indexes rather than by testing every row: a room shared by a thousand users holds a thousand
 * member events, and each woken connection that gets the room from scratch selects from it.
 */
function select(data: Loaded, sel: StateSelector, out: StateRow[]): void {
  if (sel.all) {
    for (const row of data.rows) out.push(row);
    return;
  }
  data.byType ??= indexBy(data.rows, (r) => r.type);
  data.byStateKey ??= indexBy(data.rows, (r) => r.stateKey);
  data.at ??= new Map(data.rows.map((r, i) => [r, i]));
  const picked = new Set<number>();
  for (const type of sel.types) for (const i of data.byType.get(type) ?? []) picked.add(i);
  for (const key of sel.keys) for (const i of data.byStateKey.get(key) ?? []) picked.add(i);
  for (let j = 0; j < sel.pairTypes.length; j++) {
    const row = data.byKey.get(`${sel.pairTypes[j]}\0${sel.pairKeys[j]}`);
    if (row) picked.add(data.at.get(row) as number);
  }
  for (const i of [...picked].sort((a, b) => a - b)) out.push(data.rows[i] as StateRow);
}

/**
 * A bigger room is read from the store per request: every state change of a room (in a big
 * room, joins come often) makes the next request that needs it read all of it again.
 */
const MAX_MEMBERS = 10_000;
/** Members of all held rooms together: member events are most of a big room's state, about 1 KiB each. */
const MAX_HELD_MEMBERS = 100_000;

export class RoomStates {
  #live = new Set<string>();
  readonly #rooms: WeightedLru<string, Entry>;

  constructor(
    private readonly pool: Queryable,
    bus: Bus,
    private readonly metas: RoomMetaCache,
    private readonly opts: { maxMembers?: number; maxHeldMembers?: number; maxRooms?: number } = {},
  ) {
    this.#rooms = new WeightedLru(opts.maxHeldMembers ?? MAX_HELD_MEMBERS, opts.maxRooms ?? 1_000);
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
    for (const [, data] of loaded) if (data) select(data, sel, out);
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
    if (!meta) return undefined;
    const held = this.#rooms.get(roomId);
    if (held && held.statePos === meta.statePos) return held.data;
    const weight = 1 + (meta.joinedCount ?? 0) + (meta.invitedCount ?? 0);
    if (weight > (this.opts.maxMembers ?? MAX_MEMBERS) || !this.#rooms.fits(weight)) return undefined;
    const data = currentState(this.pool, [roomId], ALL).then(
      (rows): Loaded => ({ rows, byKey: new Map(rows.map((r) => [`${r.type}\0${r.stateKey}`, r])) }),
      () => undefined,
    );
    const entry: Entry = { statePos: meta.statePos, data };
    this.#rooms.set(roomId, entry, weight);
    void data.then((d) => {
      if (!d && this.#rooms.holds(roomId, entry)) this.#rooms.delete(roomId);
    });
    return entry.data;
  }
}
