// Persistence of sliding sync connections (see migration 0002 for the model).
import type { Queryable } from './db.js';
import { jsonTextsArray, numberArray, textArray } from './pg-arrays.js';

export interface ConnectionRow {
  id: number;
  confirmedPos: number;
  confirmedStream: number;
  pendingPos: number | null;
  pendingStream: number | null;
  pending: string | null;
  extensions: string;
  /** When a response was last computed or confirmed on the connection. */
  lastUsedAt: Date;
}

export interface ConnectionKey {
  userId: string;
  deviceId: string;
  connId: string;
}

const COLUMNS = `id, confirmed_pos AS "confirmedPos", confirmed_stream AS "confirmedStream", pending_pos AS "pendingPos",
  pending_stream AS "pendingStream", pending, extensions, last_used_at AS "lastUsedAt"`;

export async function findConnection(db: Queryable, k: ConnectionKey): Promise<ConnectionRow | undefined> {
  const { rows } = await db.query<ConnectionRow>(
    `SELECT ${COLUMNS} FROM connections WHERE user_id = $1 AND device_id = $2 AND conn_id = $3`,
    [k.userId, k.deviceId, k.connId],
  );
  return rows[0];
}

/** The row's identity and positions, to check a copy held in memory against (several processes). */
export async function connectionPositions(
  db: Queryable,
  k: ConnectionKey,
): Promise<{ id: number; confirmedPos: number; pendingPos: number | null } | undefined> {
  const { rows } = await db.query(
    `SELECT id, confirmed_pos AS "confirmedPos", pending_pos AS "pendingPos" FROM connections
      WHERE user_id = $1 AND device_id = $2 AND conn_id = $3`,
    [k.userId, k.deviceId, k.connId],
  );
  return rows[0];
}

export async function connectionRooms(db: Queryable, id: number): Promise<{ room_id: string; sent: string }[]> {
  const { rows } = await db.query('SELECT room_id, sent FROM connection_rooms WHERE connection_id = $1', [id]);
  return rows;
}

/**
 * Replaces any connection with this key by a fresh one; `replaced` tells whether there was one.
 * One upsert, so two starts racing on one key both succeed (the later one wins) instead of one
 * hitting the unique key. A replaced row takes a new id: a request still working on the old
 * connection then finds its row gone rather than writing into the new one. Its rooms go first,
 * in the same statement (their foreign key is checked at the statement's end).
 */
export async function createConnection(db: Queryable, k: ConnectionKey): Promise<{ row: ConnectionRow; replaced: boolean }> {
  const { rows } = await db.query<ConnectionRow & { replaced: boolean }>(
    `WITH old AS (
       DELETE FROM connection_rooms WHERE connection_id =
         (SELECT id FROM connections WHERE user_id = $1 AND device_id = $2 AND conn_id = $3)
     )
     INSERT INTO connections (user_id, device_id, conn_id, confirmed_pos, confirmed_stream)
     VALUES ($1, $2, $3, nextval('connection_pos'), 0)
     ON CONFLICT (user_id, device_id, conn_id) DO UPDATE SET
       id = nextval(pg_get_serial_sequence('connections', 'id')), confirmed_pos = excluded.confirmed_pos,
       confirmed_stream = 0, pending_pos = NULL, pending_stream = NULL, pending = NULL, extensions = '{}',
       created_at = now(), last_used_at = now()
     RETURNING ${COLUMNS}, xmax::text <> '0' AS replaced`,
    [k.userId, k.deviceId, k.connId],
  );
  const { replaced, ...row } = rows[0] as ConnectionRow & { replaced: boolean };
  return { row, replaced };
}

/**
 * Records the responses just computed on several connections (distinct ids) in one statement: each row's own pos,
 * undefined in the map for a connection that is gone or no longer as its response was computed
 * from (`confirmedPos` and `pendingPos` as loaded: another process's request on the connection
 * wrote first, and its response must not be overwritten). Many long-polls answered at once then
 * cost one round trip, and each is still recorded before its pos goes out.
 */
export async function setPendingMany(
  db: Queryable,
  items: readonly { id: number; confirmedPos: number; pendingPos: number | null; stream: number; pending: string }[],
): Promise<Map<number, number>> {
  // The pending JSON texts as one json array (see pg-arrays.ts): node-postgres would escape
  // every quote of them into a text[] literal, which for a fan-out's thousand answers cost more
  // CPU than computing them.
  const { rows } = await db.query<{ id: string; pos: string }>(
    `UPDATE connections c SET pending_pos = nextval('connection_pos'), pending_stream = u.stream, pending = u.pending::text, last_used_at = now()
       FROM ROWS FROM (unnest($1::bigint[]), unnest($2::bigint[]), json_array_elements($3::json), unnest($4::bigint[]), unnest($5::bigint[]))
         AS u(id, stream, pending, confirmed, was_pending)
      WHERE c.id = u.id AND c.confirmed_pos = u.confirmed AND c.pending_pos IS NOT DISTINCT FROM u.was_pending
      RETURNING c.id, c.pending_pos AS pos`,
    [
      numberArray(items.map((i) => i.id)),
      numberArray(items.map((i) => i.stream)),
      jsonTextsArray(items.map((i) => i.pending)),
      numberArray(items.map((i) => i.confirmedPos)),
      numberArray(items.map((i) => i.pendingPos)),
    ],
  );
  return new Map(rows.map((r) => [Number(r.id), Number(r.pos)]));
}

/** A connection's pending response to confirm: its rows of rooms sent, and its extension positions (JSON texts). */
export interface Confirmation {
  id: number;
  pendingPos: number;
  rooms: { roomId: string; sent: string }[];
  extensions: string;
}

/**
 * The clients used these connections' pending positions: each becomes the confirmed state. Of the
 * ids (distinct) returns those confirmed; one missing is gone (expired or dropped meanwhile) or
 * its pending pos is no longer that one (another request confirmed or replaced it first), and
 * nothing of it is written. One statement, so atomic without a transaction's extra round trips:
 * the row's update locks it against a concurrent delete and tells whether it is there, and the
 * rooms are written only for rows updated. A fan-out's thousand clients coming back at once then
 * confirm in a few statements, not a thousand commits.
 */
export async function confirmPendingMany(db: Queryable, items: readonly Confirmation[]): Promise<Set<number>> {
  const rooms = items.flatMap((i) => i.rooms.map((r) => ({ id: i.id, ...r })));
  const { rows } = await db.query<{ id: string }>(
    `WITH u AS (
       SELECT * FROM ROWS FROM (unnest($1::bigint[]), unnest($2::bigint[]), json_array_elements($3::json)) AS u(id, pending_pos, extensions)
     ), c AS (
       UPDATE connections SET confirmed_pos = connections.pending_pos, confirmed_stream = pending_stream, extensions = u.extensions::text,
         pending_pos = NULL, pending_stream = NULL, pending = NULL, last_used_at = now()
       FROM u WHERE connections.id = u.id AND connections.pending_pos = u.pending_pos RETURNING connections.id
     ), r AS (
       INSERT INTO connection_rooms (connection_id, room_id, sent)
       SELECT c.id, s.room_id, s.sent::text
         FROM ROWS FROM (unnest($4::bigint[]), unnest($5::text[]), json_array_elements($6::json)) AS s(id, room_id, sent)
         JOIN c ON c.id = s.id
       ON CONFLICT (connection_id, room_id) DO UPDATE SET sent = excluded.sent
     )
     SELECT id FROM c`,
    [
      numberArray(items.map((i) => i.id)),
      numberArray(items.map((i) => i.pendingPos)),
      jsonTextsArray(items.map((i) => i.extensions)),
      numberArray(rooms.map((r) => r.id)),
      textArray(rooms.map((r) => r.roomId)),
      jsonTextsArray(rooms.map((r) => r.sent)),
    ],
  );
  return new Set(rows.map((r) => Number(r.id)));
}

/**
 * The client retried the confirmed pos: the pending response it never got is discarded, so
 * that its pos cannot be accepted later (after a restart). False when the connection is gone
 * or its confirmed pos is no longer `confirmedPos` (another request confirmed a newer one).
 */
export async function clearPending(db: Queryable, id: number, confirmedPos: number): Promise<boolean> {
  const res = await db.query(
    `UPDATE connections SET pending_pos = NULL, pending_stream = NULL, pending = NULL, last_used_at = now()
      WHERE id = $1 AND confirmed_pos = $2`,
    [id, confirmedPos],
  );
  return (res.rowCount ?? 0) > 0;
}

/** Deletes one connection (its rooms go with it); false when it was already gone. */
export async function deleteConnection(db: Queryable, id: number): Promise<boolean> {
  const res = await db.query('DELETE FROM connections WHERE id = $1', [id]);
  return (res.rowCount ?? 0) > 0;
}

/** Deletes every connection of a device; returns how many there were. */
export async function deleteConnectionsOfDevice(db: Queryable, userId: string, deviceId: string): Promise<number> {
  const res = await db.query('DELETE FROM connections WHERE user_id = $1 AND device_id = $2', [userId, deviceId]);
  return res.rowCount ?? 0;
}

/** Keeps the `keep` most recently used connections of a device; returns the conn_ids deleted. */
export async function trimConnections(db: Queryable, userId: string, deviceId: string, keep: number): Promise<string[]> {
  const { rows } = await db.query<{ conn_id: string }>(
    `DELETE FROM connections WHERE id IN (
       SELECT id FROM connections WHERE user_id = $1 AND device_id = $2 ORDER BY last_used_at DESC OFFSET $3)
     RETURNING conn_id`,
    [userId, deviceId, keep],
  );
  return rows.map((r) => r.conn_id);
}

/** Deletes connections unused for `idleSeconds`; returns their keys, for memory to forget them too. */
export async function deleteIdleConnections(db: Queryable, idleSeconds: number): Promise<ConnectionKey[]> {
  const { rows } = await db.query<ConnectionKey>(
    `DELETE FROM connections WHERE last_used_at < now() - make_interval(secs => $1)
     RETURNING user_id AS "userId", device_id AS "deviceId", conn_id AS "connId"`,
    [idleSeconds],
  );
  return rows;
}
