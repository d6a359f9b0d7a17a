// Connections and their `pos` chain. The client's pos is either the confirmed position (a
// retry: the response it never got is forgotten) or the pending one (it got the last response:
// that response's changes become confirmed). Anything else, including a pos of another user,
// device or conn_id, is M_UNKNOWN_POS. State lives in Postgres so a restart keeps clients'
// positions valid, and in memory for speed.
import { unknownPos, unknownToken } from '../matrix-error.js';
import {
  type Confirmation,
  type ConnectionKey,
  type ConnectionRow,
  clearPending,
  confirmPendingMany,
  connectionPositions,
  connectionRooms,
  createConnection,
  deleteConnection,
  deleteConnectionsOfDevice,
  deleteIdleConnections,
  findConnection,
  setPendingMany,
  trimConnections,
} from '../store/connections-table.js';
import type { Pool } from '../store/db.js';
import { latestToken } from '../store/devices-table.js';
import { GroupCommit } from '../store/group-commit.js';
import type { ResponseMemo } from './incremental.js';
import type { RoomConfig } from './types.js';

/** What a connection has sent of one room. */
export interface RoomSent {
  /** Stream position the room's timeline and state were sent up to. */
  pos: number;
  /** Effective timeline_limit and required_state (a key into the connection's configs) last used. */
  tl: number;
  rs: string;
  /** Members sent because of $LAZY. */
  lazy?: string[];
  /** Membership the room was last sent with. */
  m: string;
  /** Metadata last sent, to send only changes. */
  name?: string;
  avatar?: string;
  jc?: number;
  ic?: number;
  nc?: number;
  hc?: number;
  dm?: boolean;
  /** Extension streams delivered up to, per room: room account data, receipts; typing as last sent. */
  ad?: number;
  rc?: number;
  ty?: string;
}

/** Connection-wide extension positions, and the room subscriptions that last (MSC3575's). */
export interface ExtensionPositions {
  /** Global account data delivered up to. */
  accountData?: number;
  /** Device list changes delivered up to. */
  deviceLists?: number;
  /** Key counts delivered as of. */
  keys?: number;
  subs?: [string, RoomConfig][];
  /**
   * required_state configs by key (see RoomSent.rs), stored once per connection. They are only
   * ever added: a pending response carries just the ones it adds, merged in when confirmed.
   */
  configs?: Record<string, string[][]>;
  /**
   * The protocol's own memory, opaque here (MSC3575: the sticky request parameters, and per
   * list what the client holds of it; see sync/msc3575/).
   */
  sticky?: unknown;
  lists?: unknown;
}

export interface Connection {
  id: number;
  key: ConnectionKey;
  pos: number;
  /** Stream position of the confirmed response (0: nothing sent yet). */
  stream: number;
  rooms: Map<string, RoomSent>;
  ext: ExtensionPositions;
  pending: { pos: number; stream: number; rooms: Map<string, RoomSent>; ext: ExtensionPositions; memo?: ResponseMemo } | undefined;
  /**
   * What the engine kept of the confirmed response to compute the next one incrementally
   * (memory only: a connection loaded from the store starts without).
   */
  memo?: ResponseMemo;
  /** The request working on this connection, aborted when a newer one arrives. */
  inFlight: { abort: AbortController; done: Promise<unknown> } | undefined;
  /** When the connection was last used (ms since the epoch): loaded from the store, updated on each request. */
  lastUsedAt: number;
  /** How long the connection had been unused when the current request resumed it, in ms (0 for a new one). */
  idleMs: number;
}

/** Counters of connections ended (the Go proxy's names); absent: not counted. */
export interface ConnectionCounters {
  /** sliding_sync_api_expiry_conn_timed_out: expired for idleness. */
  expiredIdle: { inc(n?: number): void };
  /** sliding_sync_api_destroyed_conns: destroyed for any reason. */
  destroyed: { inc(n?: number): void };
}

export interface ConnectionOptions {
  /** Live connections per device beyond which the least recently used is dropped. */
  maxPerDevice: number;
  maxInMemory: number;
  /**
   * A connection resumed after more than `farBehindIdleMs` unused, with more than
   * `farBehindRooms` rooms to send, is too far behind (Synapse's rule: the client is better
   * off starting small again). Defaults: 100 rooms, 1 hour.
   */
  farBehindRooms?: number;
  farBehindIdleMs?: number;
  counters?: ConnectionCounters;
  /** Other processes serve these connections too (SYNCV3_CLUSTER): memory is trusted only while the row agrees. */
  shared?: boolean;
}

/** The connection's row moved on (another process's request wrote first) while a response was computed from it. */
export class ConnectionMoved extends Error {
  override name = 'ConnectionMoved';
}

export const FAR_BEHIND_ROOMS = 100;
export const FAR_BEHIND_IDLE_MS = 3_600_000;

const keyString = (k: ConnectionKey) => `${k.userId}\0${k.deviceId}\0${k.connId}`;

function parsePending(row: ConnectionRow): Connection['pending'] {
  if (row.pendingPos === null || row.pending === null) return undefined;
  const p = JSON.parse(row.pending) as { rooms: [string, RoomSent][]; ext: ExtensionPositions };
  return { pos: row.pendingPos, stream: row.pendingStream ?? 0, rooms: new Map(p.rooms), ext: p.ext };
}

/** A confirmed response's positions over the connection's: every field replaced, the configs added to. */
function mergeExtensions(confirmed: ExtensionPositions, pending: ExtensionPositions): ExtensionPositions {
  const ext = { ...confirmed, ...pending };
  if (pending.configs && confirmed.configs) ext.configs = { ...confirmed.configs, ...pending.configs };
  return ext;
}

export class ConnectionManager {
  #memory = new Map<string, Connection>();
  /** The tail of each key's exclusive() queue. */
  #locks = new Map<string, Promise<void>>();
  /** Responses computed at once (a fan-out) record their pending positions in shared statements. */
  readonly #pendingWrites = new GroupCommit<
    { key: number; id: number; confirmedPos: number; pendingPos: number | null; stream: number; pending: string },
    number
  >((items) => setPendingMany(this.pool, items));
  /** Clients coming back from those answers confirm them in shared statements too. */
  readonly #confirms = new GroupCommit<Confirmation & { key: number }, true>(async (items) => {
    const confirmed = await confirmPendingMany(this.pool, items);
    return new Map([...confirmed].map((id) => [id, true]));
  });

  constructor(
    private readonly pool: Pool,
    private readonly opts: ConnectionOptions,
  ) {}

  /** Connections held in memory (the active-connections gauge). */
  get size(): number {
    return this.#memory.size;
  }

  /**
   * Runs `fn` alone among the calls for the same connection key in this process: resolving a
   * pos, aborting the request it replaces and registering the new one happen as one step, so
   * two requests racing on one connection (a retry of the same pos, two starts) are ordered
   * instead of both confirming or both creating. Other processes are kept out by the SQL,
   * which writes only if the row is still as it was read.
   */
  async exclusive<T>(key: ConnectionKey, fn: () => Promise<T>): Promise<T> {
    const k = keyString(key);
    const run = (this.#locks.get(k) ?? Promise.resolve()).then(fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.#locks.set(k, tail);
    try {
      return await run;
    } finally {
      if (this.#locks.get(k) === tail) this.#locks.delete(k);
    }
  }

  /** The connection with this key held in memory, if any. */
  peek(key: ConnectionKey): Connection | undefined {
    return this.#memory.get(keyString(key));
  }

  /** The connection a request continues (or starts, without pos). Throws M_UNKNOWN_POS. */
  async resolve(key: ConnectionKey, pos: string | undefined): Promise<Connection> {
    if (pos === undefined) return this.#create(key);
    const n = /^\d{1,15}$/.test(pos) ? Number(pos) : Number.NaN;
    let conn = this.#memory.get(keyString(key));
    if (conn && this.opts.shared && !(await this.#current(conn))) {
      // Another process advanced or replaced it since: what the store holds decides.
      this.#forget(conn);
      conn = undefined;
    }
    conn ??= await this.#load(key);
    if (!conn) throw await this.#gone(key);
    if (Number.isNaN(n)) throw unknownPos();
    if (!(await this.#accept(conn, n))) {
      // The row changed between our read and our write (another process confirmed, replaced
      // or dropped it): what the store holds now decides, as a retry would see it.
      this.#forget(conn);
      conn = await this.#load(key);
      if (!conn) throw await this.#gone(key);
      if (!(await this.#accept(conn, n))) throw unknownPos();
    }
    const now = Date.now();
    conn.idleMs = Math.max(0, now - conn.lastUsedAt);
    conn.lastUsedAt = now;
    this.#touch(conn);
    return conn;
  }

  async #current(conn: Connection): Promise<boolean> {
    const row = await connectionPositions(this.pool, conn.key);
    return row?.id === conn.id && row.confirmedPos === conn.pos && row.pendingPos === (conn.pending?.pos ?? null);
  }

  /**
   * Applies the client's pos: the confirmed one (a retry: the pending response is discarded, in
   * the store too, or a restart would accept the pos of the response never received) or the
   * pending one (confirmed). False when the row was no longer as read (nothing written).
   */
  async #accept(conn: Connection, n: number): Promise<boolean> {
    if (n === conn.pos) {
      if (conn.pending && !(await clearPending(this.pool, conn.id, conn.pos))) return false;
      conn.pending = undefined;
      return true;
    }
    if (conn.pending && n === conn.pending.pos) return this.#confirm(conn);
    throw unknownPos();
  }

  /**
   * Whether a resumed connection fell too far behind to be worth catching up: more than
   * `farBehindRooms` rooms to send after more than `farBehindIdleMs` unused. The engine then
   * calls expire() and answers M_UNKNOWN_POS. Never true for a new connection (no pos).
   */
  tooFarBehind(conn: Connection, roomsToSend: number): boolean {
    return roomsToSend > (this.opts.farBehindRooms ?? FAR_BEHIND_ROOMS) && conn.idleMs > (this.opts.farBehindIdleMs ?? FAR_BEHIND_IDLE_MS);
  }

  /** Ends a connection: its pos, pending or confirmed, is unknown from now on. */
  async expire(conn: Connection): Promise<void> {
    this.#forget(conn);
    if (await deleteConnection(this.pool, conn.id)) this.opts.counters?.destroyed.inc();
  }

  /** The hourly expiry: deletes connections unused for `idleSeconds`, in the store and in memory. */
  async expireIdle(idleSeconds: number): Promise<number> {
    const expired = await deleteIdleConnections(this.pool, idleSeconds);
    for (const key of expired) this.#memory.delete(keyString(key));
    if (expired.length) {
      this.opts.counters?.expiredIdle.inc(expired.length);
      this.opts.counters?.destroyed.inc(expired.length);
    }
    return expired.length;
  }

  /**
   * Records a response's changes as pending; returns the pos to give the client. Only if the row
   * is still as this copy holds it: when another process's request on the connection wrote its
   * response first, this copy is forgotten and ConnectionMoved thrown (the caller answers as a
   * retry of its pos would be answered now, or not at all), instead of overwriting a response
   * whose pos a client may already hold.
   */
  async commit(
    conn: Connection,
    stream: number,
    rooms: Map<string, RoomSent>,
    ext: ExtensionPositions,
    memo?: ResponseMemo,
  ): Promise<string> {
    const pending = JSON.stringify({ rooms: [...rooms], ext });
    const pos = await this.#pendingWrites.submit({
      key: conn.id,
      id: conn.id,
      confirmedPos: conn.pos,
      pendingPos: conn.pending?.pos ?? null,
      stream,
      pending,
    });
    if (pos === undefined) {
      if ((await connectionPositions(this.pool, conn.key))?.id !== conn.id) throw await this.#lost(conn);
      this.#forget(conn);
      throw new ConnectionMoved();
    }
    conn.pending = { pos, stream, rooms, ext, memo };
    conn.lastUsedAt = Date.now();
    return String(pos);
  }

  /**
   * Why a connection is not there. A request authenticated just before its token died races
   * the deletion of the device's connections: it must hear 401, as the next request will. A
   * device that still has a token (refreshed) simply lost this connection: M_UNKNOWN_POS.
   */
  async #gone(key: ConnectionKey) {
    return (await latestToken(this.pool, key.userId, key.deviceId)) ? unknownPos() : unknownToken(false);
  }

  /** The connection's row vanished under it (expired or dropped by another process): forget it too. */
  async #lost(conn: Connection) {
    this.#forget(conn);
    return this.#gone(conn.key);
  }

  /** Drops a connection from memory unless a newer one with its key replaced it there. */
  #forget(conn: Connection) {
    const k = keyString(conn.key);
    if (this.#memory.get(k) === conn) this.#memory.delete(k);
  }

  /** The token died or the device went away: its connections end (next pos is unknown). */
  async dropDevice(userId: string, deviceId: string): Promise<void> {
    for (const [k, c] of this.#memory) if (c.key.userId === userId && c.key.deviceId === deviceId) this.#memory.delete(k);
    const dropped = await deleteConnectionsOfDevice(this.pool, userId, deviceId);
    if (dropped) this.opts.counters?.destroyed.inc(dropped);
  }

  async #create(key: ConnectionKey): Promise<Connection> {
    const previous = this.#memory.get(keyString(key));
    previous?.inFlight?.abort.abort();
    const { row, replaced } = await createConnection(this.pool, key);
    const conn: Connection = {
      id: row.id,
      key,
      pos: row.confirmedPos,
      stream: 0,
      rooms: new Map(),
      ext: {},
      pending: undefined,
      inFlight: undefined,
      lastUsedAt: Date.now(),
      idleMs: 0,
    };
    this.#touch(conn);
    const dropped = await trimConnections(this.pool, key.userId, key.deviceId, this.opts.maxPerDevice);
    for (const connId of dropped) this.#memory.delete(keyString({ ...key, connId }));
    const destroyed = dropped.length + (replaced ? 1 : 0);
    if (destroyed) this.opts.counters?.destroyed.inc(destroyed);
    return conn;
  }

  async #load(key: ConnectionKey): Promise<Connection | undefined> {
    const row = await findConnection(this.pool, key);
    if (!row) return undefined;
    const rooms = new Map((await connectionRooms(this.pool, row.id)).map((r) => [r.room_id, JSON.parse(r.sent) as RoomSent]));
    return {
      id: row.id,
      key,
      pos: row.confirmedPos,
      stream: row.confirmedStream,
      rooms,
      ext: JSON.parse(row.extensions) as ExtensionPositions,
      pending: parsePending(row),
      inFlight: undefined,
      lastUsedAt: row.lastUsedAt.getTime(),
      idleMs: 0,
    };
  }

  async #confirm(conn: Connection): Promise<boolean> {
    const p = conn.pending;
    if (!p) return true;
    const ext = mergeExtensions(conn.ext, p.ext);
    const confirmed = await this.#confirms.submit({
      key: conn.id,
      id: conn.id,
      pendingPos: p.pos,
      rooms: [...p.rooms].map(([roomId, sent]) => ({ roomId, sent: JSON.stringify(sent) })),
      extensions: JSON.stringify(ext),
    });
    if (!confirmed) return false;
    for (const [roomId, sent] of p.rooms) conn.rooms.set(roomId, sent);
    conn.pos = p.pos;
    conn.stream = p.stream;
    conn.ext = ext;
    conn.memo = p.memo;
    conn.pending = undefined;
    return true;
  }

  /** Most recently used last; the oldest in memory is dropped past the cap (it reloads from the store). */
  #touch(conn: Connection) {
    const k = keyString(conn.key);
    this.#memory.delete(k);
    this.#memory.set(k, conn);
    if (this.#memory.size > this.opts.maxInMemory) {
      const oldest = this.#memory.keys().next().value as string;
      if (!this.#memory.get(oldest)?.inFlight) this.#memory.delete(oldest);
    }
  }
}
