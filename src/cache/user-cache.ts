// Per-user read model: the user's rooms (membership, invite state, counts, heroes), their
// tags and DM set, and the rooms ordered by recency. The order is kept sorted incrementally: a
// room whose key changes moves by binary search, never a full sort per request or event.
// (MSC3575's own per-user memory, its names and sorts, lives with its rules in sync/msc3575/.)
import type { Bus } from '../bus/bus.js';
import type { Pool } from '../store/db.js';
import { classifyingAccountData, type UserRoomWithData, userRoomsByIds } from '../store/user-reads.js';
import type { Membership } from '../store/user-rooms-table.js';
import type { RoomMetaCache } from './room-meta-cache.js';
import { SortedRooms } from './sorted-rooms.js';

export interface UserRoom {
  roomId: string;
  membership: Membership;
  membershipPos: number;
  kicked: boolean;
  /** JSON array text of stripped state, for invites and knocks. */
  inviteState: string | null;
  heroes: string[] | undefined;
  notificationCount: number;
  highlightCount: number;
  accountDataPos: number;
}

function toUserRoom(r: UserRoomWithData): UserRoom {
  return {
    roomId: r.roomId,
    membership: r.membership,
    membershipPos: r.membershipPos,
    kicked: r.kicked,
    inviteState: r.inviteState,
    heroes: r.heroes ? (JSON.parse(r.heroes) as string[]) : undefined,
    notificationCount: r.notificationCount,
    highlightCount: r.highlightCount,
    accountDataPos: r.accountDataPos,
  };
}

/** Change log entries kept per user (a few KiB at most). */
const CHANGE_LOG_MAX = 1024;

/**
 * Memory tracks active users, not everyone ever seen: a user unused this long (and with no
 * request waiting) is dropped and reloaded by their next request. Checked at most this often,
 * from get() (no timer to stop).
 */
export const USER_IDLE_MS = 15 * 60_000;
const SWEEP_EVERY_MS = 60_000;

export class UserCache {
  readonly rooms = new Map<string, UserRoom>();
  readonly tags = new Map<string, Set<string>>();
  dmRooms = new Set<string>();
  /** Rooms by recency, most recent first (the MSC4186 order). */
  readonly #recency = new SortedRooms((id) => (this.rooms.has(id) ? [-this.sortKey(id)] : undefined));
  staleRooms = new Set<string>();
  staleClassification = false;
  /** Rooms whose state changed since their metadata was last ensured (reloaded on the next get). */
  staleMetas = new Set<string>();
  /** Rooms the user left themself (not kicked): listed only in the response covering the leave. */
  readonly selfLeft = new Set<string>();
  /**
   * The change log: every change to what a response reads about one of the user's rooms (its
   * user room, DM flag, metadata, receipts, typing) appends the room right after the change, so
   * a connection checks only the rooms logged since its last response instead of its whole
   * window. Bounded: a connection behind the oldest kept entry checks every room.
   */
  #log: string[] = [];
  #logBase = 0;
  /** When get() last returned this user (ms since the epoch), for the idle sweep. */
  lastUsedAt = Date.now();

  constructor(
    readonly userId: string,
    private readonly metas: RoomMetaCache,
  ) {}

  /** MSC4186 recency: a joined room's latest event; otherwise the user's membership change. */
  sortKey(roomId: string): number {
    const room = this.rooms.get(roomId);
    if (!room) return 0;
    if (room.membership !== 'join') return room.membershipPos;
    return Math.max(this.metas.get(roomId)?.latestNid ?? 0, room.membershipPos);
  }

  get order(): readonly string[] {
    return this.#recency.order;
  }

  /** Moves one room to its place (or removes it when the user no longer has it). */
  reposition(roomId: string): void {
    this.#recency.update(roomId);
  }

  setRooms(rows: UserRoomWithData[], replaceAll: boolean): string[] {
    const changed = new Set(rows.map((r) => r.roomId));
    if (replaceAll) for (const id of this.rooms.keys()) changed.add(id);
    if (replaceAll) this.rooms.clear();
    if (replaceAll) this.selfLeft.clear();
    for (const r of rows) this.setRoom(toUserRoom(r));
    return [...changed];
  }

  /** Position in the change log: changedSince(changeSeq) lists what is logged from now on. */
  get changeSeq(): number {
    return this.#logBase + this.#log.length;
  }

  /** Logs that something a response reads about the room changed (call right after the change). */
  logChange(roomId: string): void {
    this.#log.push(roomId);
    if (this.#log.length > CHANGE_LOG_MAX) {
      const drop = this.#log.length - CHANGE_LOG_MAX / 2;
      this.#log.splice(0, drop);
      this.#logBase += drop;
    }
  }

  /** Rooms logged after `seq` (with repeats), or undefined when the log no longer goes back that far. */
  changedSince(seq: number): readonly string[] | undefined {
    if (seq < this.#logBase) return undefined;
    return this.#log.slice(seq - this.#logBase);
  }

  setRoom(room: UserRoom): void {
    this.logChange(room.roomId);
    this.rooms.set(room.roomId, room);
    if (room.membership === 'leave' && !room.kicked) this.selfLeft.add(room.roomId);
    else this.selfLeft.delete(room.roomId);
  }

  deleteRoom(roomId: string): void {
    this.rooms.delete(roomId);
    this.selfLeft.delete(roomId);
    this.logChange(roomId);
  }

  setClassification(rows: { roomId: string; type: string; json: string }[]): void {
    const dmBefore = this.dmRooms;
    this.tags.clear();
    this.dmRooms = new Set();
    for (const row of rows) {
      const content = (JSON.parse(row.json) as { content?: Record<string, unknown> }).content ?? {};
      if (row.type === 'm.direct') {
        for (const ids of Object.values(content))
          if (Array.isArray(ids)) for (const id of ids) if (typeof id === 'string') this.dmRooms.add(id);
      } else if (row.type === 'm.tag' && typeof content.tags === 'object' && content.tags) {
        this.tags.set(row.roomId, new Set(Object.keys(content.tags)));
      }
    }
    // Rooms are sent again when their DM flag flips (tags only move rooms between lists, which
    // every response recomputes).
    for (const id of this.dmRooms) if (!dmBefore.has(id)) this.logChange(id);
    for (const id of dmBefore) if (!this.dmRooms.has(id)) this.logChange(id);
  }
}

export class UserCaches {
  #users = new Map<string, UserCache>();
  #loading = new Map<string, Promise<UserCache>>();
  /** Caches being loaded: a change announced meanwhile may be missing from what the load read. */
  #filling = new Map<string, UserCache>();
  /** room id -> users whose cache holds it, to re-sort on recency changes. */
  #roomUsers = new Map<string, Set<string>>();
  /** The refresh in progress per user (see #refreshed). */
  #refreshing = new Map<UserCache, Promise<void>>();
  #lastSweep = Date.now();
  /** Users kept through sweeps whatever their idleness (those with a request waiting). */
  #keep: (userId: string) => boolean = () => false;
  #roomsDropped = new Set<(roomIds: string[]) => void>();

  constructor(
    private readonly pool: Pool,
    bus: Bus,
    private readonly metas: RoomMetaCache,
  ) {
    bus.subscribe('user.rooms_changed', ({ userId, roomIds }) => {
      const user = this.#users.get(userId) ?? this.#filling.get(userId);
      if (!user) return;
      for (const id of roomIds) user.staleRooms.add(id);
      // Room account data (m.tag) arrives with this message too.
      user.staleClassification = true;
    });
    bus.subscribe('user.account_data', ({ userId, types }) => {
      const user = this.#users.get(userId) ?? this.#filling.get(userId);
      if (user && types.includes('m.direct')) user.staleClassification = true;
    });
    metas.onRecencyChange((roomId) => {
      for (const userId of this.#roomUsers.get(roomId) ?? []) this.#users.get(userId)?.reposition(roomId);
    });
    // A state change makes the room's metadata stale: only those rooms are ensured per request,
    // not every room of the user.
    bus.subscribe('room.changed', ({ roomId, statePos }) => {
      if (!statePos) return;
      for (const userId of this.#roomUsers.get(roomId) ?? []) this.#users.get(userId)?.staleMetas.add(roomId);
    });
    metas.onChange((roomId) => this.roomChanged(roomId));
  }

  /** Logs a change of a room (its metadata, receipts, typing) in the change log of each user who has it. */
  roomChanged(roomId: string): void {
    for (const userId of this.#roomUsers.get(roomId) ?? []) this.#users.get(userId)?.logChange(roomId);
  }

  /** Keeps the users for whom `keep` says so through idle sweeps. */
  keepWhile(keep: (userId: string) => boolean): void {
    this.#keep = keep;
  }

  /** Called after a sweep with the rooms no cached user holds any more (room caches drop them). */
  onRoomsDropped(listener: (roomIds: string[]) => void): void {
    this.#roomsDropped.add(listener);
  }

  /**
   * Drops users unused for `idleMs` (unless kept or being refreshed) and unindexes their rooms;
   * returns how many were dropped. A dropped user's connections compute from scratch against
   * the reloaded cache (their memo names the old one).
   */
  sweep(now = Date.now(), idleMs = USER_IDLE_MS): number {
    this.#lastSweep = now;
    const orphans: string[] = [];
    let dropped = 0;
    for (const [userId, user] of this.#users) {
      if (now - user.lastUsedAt < idleMs || this.#keep(userId) || this.#refreshing.has(user)) continue;
      this.#users.delete(userId);
      dropped++;
      for (const roomId of user.rooms.keys()) if (this.#unindex(roomId, userId)) orphans.push(roomId);
    }
    if (orphans.length) for (const l of this.#roomsDropped) l(orphans);
    return dropped;
  }

  /** Users cached in memory (the cache-size gauge). */
  get size(): number {
    return this.#users.size;
  }

  /** The users whose cache holds the room (for a room message to reach their waiting requests). */
  usersOf(roomId: string): Iterable<string> {
    return this.#roomUsers.get(roomId) ?? [];
  }

  peek(userId: string): UserCache | undefined {
    return this.#users.get(userId);
  }

  /** The user's cache, loaded or refreshed, with metadata of all their rooms loaded. */
  async get(userId: string): Promise<UserCache> {
    const now = Date.now();
    if (now - this.#lastSweep >= SWEEP_EVERY_MS) this.sweep(now);
    let user = this.#users.get(userId);
    if (!user) {
      const loading = this.#loading.get(userId) ?? this.#load(userId);
      this.#loading.set(userId, loading);
      user = await loading.finally(() => this.#loading.delete(userId));
    }
    user.lastUsedAt = now;
    await this.#refreshed(user);
    return user;
  }

  /**
   * Single-flight refresh: the refresher takes the stale marks before it reads, so a second
   * caller arriving meanwhile must wait for that read rather than see nothing stale and
   * compute from the old data (each waiting connection of the user recomputes on one change).
   * Marks set while a refresh runs are taken by the next one.
   */
  async #refreshed(user: UserCache): Promise<void> {
    for (;;) {
      const running = this.#refreshing.get(user);
      if (running) {
        await running;
        continue;
      }
      if (!user.staleRooms.size && !user.staleClassification && !user.staleMetas.size) return;
      const refresh = this.#refresh(user).finally(() => this.#refreshing.delete(user));
      this.#refreshing.set(user, refresh);
      await refresh;
    }
  }

  async #load(userId: string): Promise<UserCache> {
    const user = new UserCache(userId, this.metas);
    // Marked stale from here until it is in #users, and refreshed by get() right after.
    this.#filling.set(userId, user);
    try {
      const [rows, classification] = await Promise.all([
        userRoomsByIds(this.pool, userId, undefined),
        classifyingAccountData(this.pool, userId),
      ]);
      user.setRooms(rows, true);
      user.setClassification(classification);
      await this.metas.ensure(user.rooms.keys());
      for (const id of user.rooms.keys()) this.#index(id, userId);
      for (const id of user.rooms.keys()) user.reposition(id);
      this.#users.set(userId, user);
      return user;
    } finally {
      this.#filling.delete(userId);
    }
  }

  async #refresh(user: UserCache): Promise<void> {
    let changed: string[] = [];
    if (user.staleRooms.size) {
      changed = [...user.staleRooms];
      user.staleRooms.clear();
      const rows = await userRoomsByIds(this.pool, user.userId, changed);
      const found = new Set(rows.map((r) => r.roomId));
      user.setRooms(rows, false);
      for (const id of changed) if (!found.has(id)) user.deleteRoom(id);
      // The index holds exactly the user's rooms, so a sweep can unindex them all.
      for (const id of changed) if (found.has(id)) this.#index(id, user.userId);
      const orphans = changed.filter((id) => !found.has(id) && this.#unindex(id, user.userId));
      if (orphans.length) for (const l of this.#roomsDropped) l(orphans);
    }
    if (user.staleClassification) {
      user.staleClassification = false;
      user.setClassification(await classifyingAccountData(this.pool, user.userId));
    }
    // Reloads only rooms whose state changed (or that are new); recency moves already happened
    // on the bus. Every other room was ensured when it came in.
    const stale = [...changed, ...user.staleMetas].filter((id) => user.rooms.has(id));
    user.staleMetas.clear();
    if (stale.length) {
      try {
        await this.metas.ensure(stale);
      } catch (err) {
        for (const id of stale) user.staleMetas.add(id);
        throw err;
      }
    }
    // A membership change moves its room (an invite accepted sorts by its latest event).
    for (const id of changed) user.reposition(id);
  }

  /** Removes the user from the room's index; true when no cached user holds the room any more. */
  #unindex(roomId: string, userId: string): boolean {
    const set = this.#roomUsers.get(roomId);
    if (!set?.delete(userId) || set.size) return false;
    this.#roomUsers.delete(roomId);
    return true;
  }

  #index(roomId: string, userId: string) {
    const set = this.#roomUsers.get(roomId) ?? new Set();
    set.add(userId);
    this.#roomUsers.set(roomId, set);
  }
}
