// Connections and their `pos` chain. The client's pos is either the confirmed position (a
// retry: the response it never got is forgotten) or the pending one (it got the last response:
// that response's changes become confirmed). Anything else, including a pos of another user,
// device or conn_id, is M_UNKNOWN_POS. State lives in Postgres so a restart keeps clients'
// positions valid, and in memory for speed.
import { unknownPos, unknownToken } from '../matrix-error.js';
import {
  type ConnectionKey,
  type ConnectionRow,
  confirmPending,
  connectionRooms,
  createConnection,
  deleteConnectionsOfDevice,
  findConnection,
  setPending,
  trimConnections,
} from '../store/connections-table.js';
import { type Pool, withTransaction } from '../store/db.js';
import { latestToken } from '../store/devices-table.js';
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

/** Connection-wide extension positions and sticky room subscriptions. */
export interface ExtensionPositions {
  /** Global account data delivered up to. */
  accountData?: number;
  /** Device list changes delivered up to. */
  deviceLists?: number;
  /** Key counts delivered as of. */
  keys?: number;
  subs?: [string, RoomConfig][];
  /** required_state configs by key (see RoomSent.rs), stored once per connection. */
  configs?: Record<string, string[][]>;
}

export interface Connection {
  id: number;
  key: ConnectionKey;
  pos: number;
  /** Stream position of the confirmed response (0: nothing sent yet). */
  stream: number;
  rooms: Map<string, RoomSent>;
  ext: ExtensionPositions;
  pending: { pos: number; stream: number; rooms: Map<string, RoomSent>; ext: ExtensionPositions } | undefined;
  /** The request working on this connection, aborted when a newer one arrives. */
  inFlight: { abort: AbortController; done: Promise<unknown> } | undefined;
}

export interface ConnectionOptions {
  /** Live connections per device beyond which the least recently used is dropped. */
  maxPerDevice: number;
  maxInMemory: number;
}

const keyString = (k: ConnectionKey) => `${k.userId}\0${k.deviceId}\0${k.connId}`;

function parsePending(row: ConnectionRow): Connection['pending'] {
  if (row.pendingPos === null || row.pending === null) return undefined;
  const p = JSON.parse(row.pending) as { rooms: [string, RoomSent][]; ext: ExtensionPositions };
  return { pos: row.pendingPos, stream: row.pendingStream ?? 0, rooms: new Map(p.rooms), ext: p.ext };
}

export class ConnectionManager {
  #memory = new Map<string, Connection>();

  constructor(
    private readonly pool: Pool,
    private readonly opts: ConnectionOptions,
  ) {}

  /** Connections held in memory (the active-connections gauge). */
  get size(): number {
    return this.#memory.size;
  }

  /** The connection a request continues (or starts, without pos). Throws M_UNKNOWN_POS. */
  async resolve(key: ConnectionKey, pos: string | undefined): Promise<Connection> {
    if (pos === undefined) return this.#create(key);
    const n = /^\d{1,15}$/.test(pos) ? Number(pos) : Number.NaN;
    const conn = this.#memory.get(keyString(key)) ?? (await this.#load(key));
    if (!conn) throw await this.#gone(key);
    if (Number.isNaN(n)) throw unknownPos();
    if (n === conn.pos) {
      conn.pending = undefined;
    } else if (conn.pending && n === conn.pending.pos) {
      await this.#confirm(conn);
    } else {
      throw unknownPos();
    }
    this.#touch(conn);
    return conn;
  }

  /** Records a response's changes as pending; returns the pos to give the client. */
  async commit(conn: Connection, stream: number, rooms: Map<string, RoomSent>, ext: ExtensionPositions): Promise<string> {
    const pending = JSON.stringify({ rooms: [...rooms], ext });
    const pos = await setPending(this.pool, conn.id, stream, pending);
    if (pos === undefined) throw await this.#gone(conn.key);
    conn.pending = { pos, stream, rooms, ext };
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

  /** The token died or the device went away: its connections end (next pos is unknown). */
  async dropDevice(userId: string, deviceId: string): Promise<void> {
    for (const [k, c] of this.#memory) if (c.key.userId === userId && c.key.deviceId === deviceId) this.#memory.delete(k);
    await deleteConnectionsOfDevice(this.pool, userId, deviceId);
  }

  async #create(key: ConnectionKey): Promise<Connection> {
    const previous = this.#memory.get(keyString(key));
    previous?.inFlight?.abort.abort();
    const row = await createConnection(this.pool, key);
    const conn: Connection = {
      id: row.id,
      key,
      pos: row.confirmedPos,
      stream: 0,
      rooms: new Map(),
      ext: {},
      pending: undefined,
      inFlight: undefined,
    };
    this.#touch(conn);
    const dropped = await trimConnections(this.pool, key.userId, key.deviceId, this.opts.maxPerDevice);
    for (const connId of dropped) this.#memory.delete(keyString({ ...key, connId }));
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
    };
  }

  async #confirm(conn: Connection) {
    const p = conn.pending;
    if (!p) return;
    const ext = { ...conn.ext, ...p.ext };
    await withTransaction(this.pool, (tx) =>
      confirmPending(
        tx,
        conn.id,
        [...p.rooms].map(([roomId, sent]) => ({ roomId, sent: JSON.stringify(sent) })),
        JSON.stringify(ext),
      ),
    );
    for (const [roomId, sent] of p.rooms) conn.rooms.set(roomId, sent);
    conn.pos = p.pos;
    conn.stream = p.stream;
    conn.ext = ext;
    conn.pending = undefined;
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
