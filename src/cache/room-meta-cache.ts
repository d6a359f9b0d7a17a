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

export class RoomMetaCache {
  #rooms = new Map<string, RoomMeta>();
  /** Rooms whose state changed since loaded, with a counter so a change during a reload is not lost. */
  #stale = new Map<string, number>();
  #listeners = new Set<(roomId: string) => void>();
  #loading = new Set<string>();

  constructor(
    private readonly pool: Pool,
    bus: Bus,
  ) {
    bus.subscribe('room.changed', (m) => {
      const meta = this.#rooms.get(m.roomId);
      if (!meta) {
        // Being loaded for the first time: the load may have read the state before this
        // change, so it must not be taken as fresh.
        if (this.#loading.has(m.roomId)) this.#stale.set(m.roomId, (this.#stale.get(m.roomId) ?? 0) + 1);
        return;
      }
      meta.latestNid = Math.max(meta.latestNid, m.latestNid);
      if (m.bump && m.bump.nid > meta.bumpNid) {
        meta.bumpNid = m.bump.nid;
        meta.bumpTs = m.bump.ts;
      }
      if (m.statePos) {
        meta.statePos = Math.max(meta.statePos, m.statePos);
        this.#stale.set(m.roomId, (this.#stale.get(m.roomId) ?? 0) + 1);
      }
      for (const l of this.#listeners) l(m.roomId);
    });
    bus.subscribe('room.receipts', (m) => {
      const meta = this.#rooms.get(m.roomId);
      if (meta) meta.receiptPos = Math.max(meta.receiptPos, m.pos);
    });
  }

  /** Called after a room's recency may have changed (user caches re-sort it). */
  onRecencyChange(listener: (roomId: string) => void): void {
    this.#listeners.add(listener);
  }

  get(roomId: string): RoomMeta | undefined {
    return this.#rooms.get(roomId);
  }

  /** Loads (or reloads, when stale) the given rooms in one batch. */
  async ensure(roomIds: Iterable<string>): Promise<void> {
    const todo = [...roomIds].filter((id) => !this.#rooms.has(id) || this.#stale.has(id));
    if (todo.length === 0) return;
    const generations = new Map(todo.map((id) => [id, this.#stale.get(id)]));
    for (const id of todo) this.#loading.add(id);
    const { rooms, state } = await roomMeta(this.pool, todo).finally(() => {
      for (const id of todo) this.#loading.delete(id);
    });
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
      const old = this.#rooms.get(id);
      // A bus message may have raced the query: never go back in recency.
      if (old) {
        meta.latestNid = Math.max(meta.latestNid, old.latestNid);
        if (old.bumpNid > meta.bumpNid) Object.assign(meta, { bumpNid: old.bumpNid, bumpTs: old.bumpTs });
        meta.statePos = Math.max(meta.statePos, old.statePos);
        meta.receiptPos = Math.max(meta.receiptPos, old.receiptPos);
      }
      this.#rooms.set(id, meta);
      if (this.#stale.get(id) === generations.get(id)) this.#stale.delete(id);
    }
  }

  get size(): number {
    return this.#rooms.size;
  }
}
