// Per-room metadata that lists filter and sort on: name, avatar, encryption, room type,
// space children, counts and recency. Loaded lazily in batches from the store; recency is
// updated from bus messages without I/O, and a state change marks the room for reload.
import type { Bus } from '../bus/bus.js';
import type { Pool } from '../store/db.js';
import { roomMeta, type StateRow } from '../store/room-reads.js';

export interface RoomMeta {
  roomId: string;
  name: string | undefined;
  /** m.room.canonical_alias content.alias: MSC3575's calculated name falls back to it. */
  canonicalAlias: string | undefined;
  avatar: string | undefined;
  encrypted: boolean;
  /** `m.room.create` content.type; null for an ordinary room, undefined while unknown. */
  roomType: string | null | undefined;
  tombstoned: boolean;
  /** The tombstone's replacement_room, and m.room.create's predecessor (MSC3575 old rooms). */
  successor: string | undefined;
  predecessor: string | undefined;
  spaceChildren: Set<string>;
  /** m.room.history_visibility (default shared, as the spec says for an absent or unknown value). */
  historyVisibility: string;
  joinedCount: number | undefined;
  invitedCount: number | undefined;
  latestNid: number;
  bumpNid: number;
  bumpTs: number;
  statePos: number;
  /** Position of the latest receipt in the room. */
  receiptPos: number;
}

function emptyMeta(roomId: string): RoomMeta {
  return {
    roomId,
    name: undefined,
    canonicalAlias: undefined,
    avatar: undefined,
    encrypted: false,
    roomType: undefined,
    tombstoned: false,
    successor: undefined,
    predecessor: undefined,
    spaceChildren: new Set(),
    historyVisibility: 'shared',
    joinedCount: undefined,
    invitedCount: undefined,
    latestNid: 0,
    bumpNid: 0,
    bumpTs: 0,
    statePos: 0,
    receiptPos: 0,
  };
}

function applyState(meta: RoomMeta, row: StateRow) {
  const content = (JSON.parse(row.json) as { content?: Record<string, unknown> }).content ?? {};
  switch (row.type) {
    case 'm.room.name':
      meta.name = typeof content.name === 'string' && content.name.trim() ? content.name : undefined;
      break;
    case 'm.room.canonical_alias':
      meta.canonicalAlias = typeof content.alias === 'string' && content.alias ? content.alias : undefined;
      break;
    case 'm.room.avatar':
      meta.avatar = typeof content.url === 'string' && content.url ? content.url : undefined;
      break;
    case 'm.room.encryption':
      meta.encrypted = typeof content.algorithm === 'string';
      break;
    case 'm.room.create': {
      meta.roomType = typeof content.type === 'string' ? content.type : null;
      const predecessor = (content.predecessor as { room_id?: unknown } | undefined)?.room_id;
      meta.predecessor = typeof predecessor === 'string' ? predecessor : undefined;
      break;
    }
    case 'm.room.tombstone':
      meta.tombstoned = typeof content.replacement_room === 'string';
      meta.successor = meta.tombstoned ? (content.replacement_room as string) : undefined;
      break;
    case 'm.room.history_visibility':
      meta.historyVisibility = typeof content.history_visibility === 'string' ? content.history_visibility : 'shared';
      break;
    case 'm.space.child':
      // A child without `via` was removed from the space.
      if (Array.isArray(content.via) && content.via.length > 0) meta.spaceChildren.add(row.stateKey);
      break;
  }
}

type Recency = Pick<RoomMeta, 'latestNid' | 'bumpNid' | 'bumpTs' | 'statePos' | 'receiptPos'>;

/** Takes into `meta` whatever of `seen` is more recent (a bus message may have raced the query). */
function mergeRecency(meta: RoomMeta, seen: Recency): void {
  meta.latestNid = Math.max(meta.latestNid, seen.latestNid);
  if (seen.bumpNid > meta.bumpNid) Object.assign(meta, { bumpNid: seen.bumpNid, bumpTs: seen.bumpTs });
  meta.statePos = Math.max(meta.statePos, seen.statePos);
  meta.receiptPos = Math.max(meta.receiptPos, seen.receiptPos);
}

/**
 * Freshness is decided on one counter, the tick, which orders bus messages and loads. Ingest
 * publishes after commit, so a load that starts at tick T reads every change announced at or
 * before T, and perhaps some announced after: its result is fresh for changes up to T only.
 * A room is stale when the bus announced a state change later than the start of the load that
 * produced its cached metadata. Ticks never repeat, so neither a reload that finishes out of
 * order nor a room that goes stale again while a slow load runs can pass an old load for a
 * fresh one (a per-room change counter, reset when the room turned fresh, could).
 */
export class RoomMetaCache {
  #rooms = new Map<string, RoomMeta>();
  #tick = 0;
  /** Tick of the latest state change of a cached or loading room, while it may be unread. */
  #changedAt = new Map<string, number>();
  /** Tick at which the load that produced each cached room's metadata started. */
  #loadedAt = new Map<string, number>();
  /** Loads in flight per room; bus messages for uncached rooms are only kept while one runs. */
  #loading = new Map<string, number>();
  /** The latest load started for each room, which later callers may wait for instead of loading. */
  #latestLoad = new Map<string, { startedAt: number; done: Promise<void> }>();
  /** Recency announced for rooms being loaded for the first time, merged in when the load lands. */
  #pendingRecency = new Map<string, Recency>();
  #listeners = new Set<(roomId: string) => void>();
  #changeListeners = new Set<(roomId: string) => void>();

  constructor(
    private readonly pool: Pool,
    bus: Bus,
  ) {
    bus.subscribe('room.changed', (m) => {
      const meta = this.#rooms.get(m.roomId) ?? this.#pendingRecency.get(m.roomId);
      if (!meta) return; // neither cached nor loading: a later load reads the change
      meta.latestNid = Math.max(meta.latestNid, m.latestNid);
      if (m.bump && m.bump.nid > meta.bumpNid) {
        meta.bumpNid = m.bump.nid;
        meta.bumpTs = m.bump.ts;
      }
      if (m.statePos) {
        meta.statePos = Math.max(meta.statePos, m.statePos);
        this.#changedAt.set(m.roomId, ++this.#tick);
      }
      if (this.#rooms.has(m.roomId)) for (const l of this.#listeners) l(m.roomId);
      this.#changed(m.roomId);
    });
    bus.subscribe('room.receipts', (m) => {
      const meta = this.#rooms.get(m.roomId) ?? this.#pendingRecency.get(m.roomId);
      if (meta) meta.receiptPos = Math.max(meta.receiptPos, m.pos);
      this.#changed(m.roomId);
    });
  }

  /**
   * Called right after anything cached about a room may have changed (a bus message, a load
   * landing), in the same synchronous step: user caches log the room for their connections.
   */
  onChange(listener: (roomId: string) => void): void {
    this.#changeListeners.add(listener);
  }

  #changed(roomId: string): void {
    for (const l of this.#changeListeners) l(roomId);
  }

  /** Called after a room's recency may have changed (user caches re-sort it). */
  onRecencyChange(listener: (roomId: string) => void): void {
    this.#listeners.add(listener);
  }

  get(roomId: string): RoomMeta | undefined {
    return this.#rooms.get(roomId);
  }

  #fresh(roomId: string): boolean {
    const loadedAt = this.#loadedAt.get(roomId);
    return loadedAt !== undefined && (this.#changedAt.get(roomId) ?? 0) <= loadedAt;
  }

  /**
   * Loads (or reloads, when stale) the given rooms in one batch. A room already being loaded by
   * a load that started after its latest change is waited for rather than loaded again.
   */
  async ensure(roomIds: Iterable<string>): Promise<void> {
    const todo: string[] = [];
    const waits = new Set<Promise<void>>();
    for (const id of new Set(roomIds)) {
      if (this.#fresh(id)) continue;
      const running = this.#latestLoad.get(id);
      if (running && running.startedAt >= (this.#changedAt.get(id) ?? 0)) waits.add(running.done);
      else todo.push(id);
    }
    if (todo.length) waits.add(this.#load(todo));
    await Promise.all(waits);
  }

  #load(todo: string[]): Promise<void> {
    const startedAt = this.#tick;
    for (const id of todo) {
      this.#loading.set(id, (this.#loading.get(id) ?? 0) + 1);
      if (!this.#rooms.has(id) && !this.#pendingRecency.has(id)) this.#pendingRecency.set(id, emptyMeta(id));
    }
    const done = roomMeta(this.pool, todo)
      .then(({ rooms, state }) => this.#install(todo, startedAt, rooms, state))
      .finally(() => {
        for (const id of todo) {
          // Never left behind: a later caller must not wait on a load that ended (or failed).
          if (this.#latestLoad.get(id)?.done === done) this.#latestLoad.delete(id);
          const left = (this.#loading.get(id) ?? 1) - 1;
          if (left > 0) {
            this.#loading.set(id, left);
            continue;
          }
          this.#loading.delete(id);
          this.#pendingRecency.delete(id);
          // Failed and nothing cached: forget the room's change ticks along with it.
          if (!this.#rooms.has(id)) this.#changedAt.delete(id);
        }
      });
    for (const id of todo) this.#latestLoad.set(id, { startedAt, done });
    return done;
  }

  #install(todo: string[], startedAt: number, rooms: Awaited<ReturnType<typeof roomMeta>>['rooms'], state: StateRow[]): void {
    const fresh = new Map(todo.map((id) => [id, emptyMeta(id)]));
    for (const r of rooms) {
      const meta = fresh.get(r.roomId) as RoomMeta;
      meta.joinedCount = r.joinedCount ?? undefined;
      meta.invitedCount = r.invitedCount ?? undefined;
      meta.latestNid = r.latestNid;
      meta.bumpNid = r.bumpNid;
      meta.bumpTs = r.bumpTs;
      meta.statePos = r.statePos;
      meta.receiptPos = r.receiptPos;
    }
    for (const row of state) applyState(fresh.get(row.roomId) as RoomMeta, row);
    for (const [id, meta] of fresh) {
      // A load that started later already landed: this one read older state.
      if ((this.#loadedAt.get(id) ?? -1) >= startedAt) continue;
      const old = this.#rooms.get(id);
      const seen = old ?? this.#pendingRecency.get(id);
      if (seen) mergeRecency(meta, seen);
      this.#rooms.set(id, meta);
      this.#loadedAt.set(id, startedAt);
      this.#pendingRecency.delete(id);
      if ((this.#changedAt.get(id) ?? 0) <= startedAt) this.#changedAt.delete(id);
      // The store knew of later events than the bus told us (another process's ingest, say).
      if (old && (meta.latestNid !== old.latestNid || meta.bumpNid !== old.bumpNid)) for (const l of this.#listeners) l(id);
      this.#changed(id);
    }
  }

  /** Drops rooms no cached user holds (bounded memory); one being loaded is kept. A later ensure() reloads them. */
  forget(roomIds: Iterable<string>): void {
    for (const id of roomIds) {
      if (this.#loading.has(id)) continue;
      this.#rooms.delete(id);
      this.#loadedAt.delete(id);
      this.#changedAt.delete(id);
    }
  }

  get size(): number {
    return this.#rooms.size;
  }
}
