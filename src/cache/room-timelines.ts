// The latest timeline events of rooms with live traffic, as stored rows (JSON text), so that
// the many connections woken by one event in a shared room read their timeline from memory:
// the first to need a room's new events loads them (one query), the others wait for that load.
// A room gets a ring when the bus says it has new events (quiet rooms, e.g. a whole list sent
// from scratch, are read from the store as before); it covers every timeline event in
// (base, top] and grows by loading (top, upTo] when a response reads past top. Stored events
// changed in place (room.rewritten) drop the room's ring. Bounded: `perRoom` events per room,
// `maxRooms` rooms (least recently used go first), and rooms no cached user holds are forgotten.
// Retention (store/retention.ts) keeps the newest 1,000 events of a room, far more than a ring
// holds, so it never deletes or marks an event a ring has.
import type { Bus } from '../bus/bus.js';
import type { Queryable } from '../store/db.js';
import { latestTimelines, type TimelineQuery, type TimelineRow } from '../store/room-reads.js';

interface Ring {
  /** Every timeline event with a position in (base, top] is in rows. */
  base: number;
  top: number;
  /** Newest first. */
  rows: TimelineRow[];
}

interface Entry {
  ring: Ring | undefined;
  /** The load in flight and the position it reads up to. */
  loading: { upTo: number; done: Promise<Ring | undefined> } | undefined;
  /** Bumped by a rewrite: a load started before it must not be kept. */
  generation: number;
}

export class RoomTimelines {
  #rooms = new Map<string, Entry>();
  /** Queries answered from memory and from the store (tests and the benchmark look). */
  readonly served = { memory: 0, store: 0 };

  constructor(
    private readonly pool: Queryable,
    bus: Bus,
    private readonly opts: { perRoom?: number; maxRooms?: number } = {},
  ) {
    bus.subscribe('room.changed', ({ roomId, newEvents }) => {
      if (newEvents > 0 && !this.#rooms.has(roomId)) this.#touch(roomId, { ring: undefined, loading: undefined, generation: 0 });
    });
    bus.subscribe('room.rewritten', ({ roomIds }) => {
      for (const id of roomIds) {
        const entry = this.#rooms.get(id);
        if (!entry) continue;
        entry.generation++;
        entry.ring = undefined;
        entry.loading = undefined;
      }
    });
  }

  get #perRoom(): number {
    return this.opts.perRoom ?? 32;
  }

  /** latestTimelines, from memory for the rooms with a ring that covers the query. */
  async latest(queries: TimelineQuery[]): Promise<Map<string, TimelineRow[]>> {
    const fromStore: TimelineQuery[] = [];
    const fromRing: { q: TimelineQuery; ring: Promise<Ring | undefined> }[] = [];
    const loads: { roomId: string; entry: Entry; upTo: number; slot: number }[] = [];
    for (const q of queries) {
      const entry = this.#rooms.get(q.roomId);
      if (!entry || q.limit + 1 > this.#perRoom) {
        fromStore.push(q);
        continue;
      }
      this.#touch(q.roomId, entry);
      if (entry.ring && entry.ring.top >= q.upTo) fromRing.push({ q, ring: Promise.resolve(entry.ring) });
      else if (entry.loading && entry.loading.upTo >= q.upTo) fromRing.push({ q, ring: entry.loading.done });
      else {
        loads.push({ roomId: q.roomId, entry, upTo: q.upTo, slot: fromRing.length });
        fromRing.push({ q, ring: Promise.resolve(undefined) });
      }
    }
    if (loads.length) {
      // One query for every room this response is the first to need past its ring.
      const read = latestTimelines(
        this.pool,
        loads.map(({ roomId, entry, upTo }) => ({ roomId, after: entry.ring?.top ?? 0, upTo, limit: this.#perRoom })),
      );
      for (const load of loads) {
        const { entry, upTo } = load;
        const generation = entry.generation;
        const before = entry.ring;
        const done = read.then(
          (rows) => {
            const ring = grow(before, rows.get(load.roomId) ?? [], upTo, this.#perRoom);
            if (entry.generation === generation && (entry.ring?.top ?? -1) < ring.top) entry.ring = ring;
            if (entry.loading?.done === done) entry.loading = undefined;
            return ring;
          },
          () => {
            if (entry.loading?.done === done) entry.loading = undefined;
            return undefined;
          },
        );
        entry.loading = { upTo, done };
        (fromRing[load.slot] as (typeof fromRing)[number]).ring = done;
      }
    }
    const out = new Map<string, TimelineRow[]>();
    const rings = await Promise.all(fromRing.map((f) => f.ring));
    for (const [i, { q }] of fromRing.entries()) {
      const rows = rings[i] && fromMemory(rings[i], q);
      if (rows) {
        this.served.memory++;
        if (rows.length) out.set(q.roomId, rows);
      } else fromStore.push(q);
    }
    if (fromStore.length) {
      this.served.store += fromStore.length;
      for (const [roomId, rows] of await latestTimelines(this.pool, fromStore)) out.set(roomId, rows);
    }
    return out;
  }

  /** Rooms no cached user holds any more. */
  forget(roomIds: Iterable<string>): void {
    for (const id of roomIds) this.#rooms.delete(id);
  }

  #touch(roomId: string, entry: Entry) {
    this.#rooms.delete(roomId);
    this.#rooms.set(roomId, entry);
    if (this.#rooms.size > (this.opts.maxRooms ?? 1_000)) this.#rooms.delete(this.#rooms.keys().next().value as string);
  }
}

/** The ring after reading `rows` (newest first, at most perRoom + 1) in (before.top or 0, upTo]. */
function grow(before: Ring | undefined, rows: TimelineRow[], upTo: number, perRoom: number): Ring {
  // More than perRoom new rows: the read did not reach back to the old ring, start afresh.
  if (rows.length > perRoom) return { base: (rows[perRoom] as TimelineRow).nid, top: upTo, rows: rows.slice(0, perRoom) };
  const all = [...rows, ...(before?.rows ?? [])];
  const base = before?.base ?? 0;
  if (all.length <= perRoom) return { base, top: upTo, rows: all };
  return { base: (all[perRoom] as TimelineRow).nid, top: upTo, rows: all.slice(0, perRoom) };
}

/** The query's answer from the ring, or undefined when the ring does not hold all of it. */
function fromMemory(ring: Ring, q: TimelineQuery): TimelineRow[] | undefined {
  if (ring.top < q.upTo) return undefined;
  const visible = q.visible ?? [{ after: q.after, upTo: q.upTo }];
  const out: TimelineRow[] = [];
  for (const r of ring.rows) {
    if (r.nid > q.upTo) continue;
    if (r.nid <= q.after) break;
    if (!visible.some((v) => r.nid > v.after && r.nid <= v.upTo)) continue;
    out.push(r);
    if (out.length === q.limit + 1) return out;
  }
  // Fewer than asked: complete only when no visible position the ring does not cover could count.
  const uncovered = visible.some((v) => Math.max(v.after, q.after) < Math.min(v.upTo, q.upTo, ring.base));
  return uncovered ? undefined : out;
}
