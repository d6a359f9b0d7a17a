// Current room state and its change log (state_changes): "state as of position P" is the
// latest change per key at or below P, which serves rooms a user has left without leaking
// anything that happened after the leave.
import type { Queryable } from './db.js';

export interface StateChange {
  roomId: string;
  type: string;
  stateKey: string;
  eventNid: number;
  pos: number;
  membership: string | undefined;
}

export interface RoomState {
  roomId: string;
  type: string;
  stateKey: string;
  eventNid: number;
}

/** Current state of the given rooms, keyed by `${roomId}\0${type}\0${stateKey}`. */
export async function currentStateOf(db: Queryable, roomIds: string[]): Promise<Map<string, number>> {
  const state = new Map<string, number>();
  if (roomIds.length === 0) return state;
  const { rows } = await db.query<{ room_id: string; type: string; state_key: string; event_nid: number }>(
    'SELECT room_id, type, state_key, event_nid FROM room_state WHERE room_id = ANY($1::text[])',
    [roomIds],
  );
  for (const r of rows) state.set(stateKeyOf(r.room_id, r.type, r.state_key), r.event_nid);
  return state;
}

export const stateKeyOf = (roomId: string, type: string, stateKey: string) => `${roomId}\0${type}\0${stateKey}`;

export async function applyStateChanges(db: Queryable, changes: StateChange[]): Promise<void> {
  if (changes.length === 0) return;
  const cols = [
    changes.map((c) => c.roomId),
    changes.map((c) => c.type),
    changes.map((c) => c.stateKey),
    changes.map((c) => c.eventNid),
    changes.map((c) => c.pos),
  ];
  await db.query(
    `UPDATE rooms SET state_pos = GREATEST(state_pos, u.p) FROM (SELECT r, max(p) AS p FROM unnest($1::text[], $2::bigint[]) AS x(r, p) GROUP BY r) u
      WHERE rooms.room_id = u.r`,
    [changes.map((c) => c.roomId), changes.map((c) => c.pos)],
  );
  await db.query(
    `INSERT INTO state_changes (room_id, type, state_key, event_nid, pos)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])`,
    cols,
  );
  // Several changes of one key in one batch: the last (highest pos) wins.
  await db.query(
    `INSERT INTO room_state (room_id, type, state_key, event_nid, membership)
     SELECT DISTINCT ON (r, t, k) r, t, k, n, m
       FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[]) WITH ORDINALITY AS u(r, t, k, n, p, m, ord)
      ORDER BY r, t, k, p DESC, ord DESC
     ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_nid = excluded.event_nid, membership = excluded.membership`,
    [...cols, changes.map((c) => c.membership ?? null)],
  );
}

export interface RoomUpsert {
  roomId: string;
  roomVersion: string | undefined;
  joined: number | undefined;
  invited: number | undefined;
  latestNid: number;
  bumpNid: number;
  bumpTs: number;
}

export async function upsertRooms(db: Queryable, rooms: RoomUpsert[]) {
  if (rooms.length === 0) return;
  await db.query(
    `INSERT INTO rooms (room_id, room_version, joined_count, invited_count, latest_nid, bump_nid, bump_ts)
     SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::bigint[], $6::bigint[], $7::bigint[])
     ON CONFLICT (room_id) DO UPDATE SET
       room_version = COALESCE(excluded.room_version, rooms.room_version),
       joined_count = COALESCE(excluded.joined_count, rooms.joined_count),
       invited_count = COALESCE(excluded.invited_count, rooms.invited_count),
       latest_nid = GREATEST(rooms.latest_nid, excluded.latest_nid),
       bump_nid = GREATEST(rooms.bump_nid, excluded.bump_nid),
       bump_ts = CASE WHEN excluded.bump_nid > rooms.bump_nid THEN excluded.bump_ts ELSE rooms.bump_ts END`,
    [
      rooms.map((r) => r.roomId),
      rooms.map((r) => r.roomVersion ?? null),
      rooms.map((r) => r.joined ?? null),
      rooms.map((r) => r.invited ?? null),
      rooms.map((r) => r.latestNid),
      rooms.map((r) => r.bumpNid),
      rooms.map((r) => r.bumpTs),
    ],
  );
}

export async function roomVersions(db: Queryable, roomIds: string[]): Promise<Map<string, string>> {
  const { rows } = await db.query<{ room_id: string; room_version: string | null }>(
    'SELECT room_id, room_version FROM rooms WHERE room_id = ANY($1::text[])',
    [roomIds],
  );
  return new Map(rows.filter((r) => r.room_version).map((r) => [r.room_id, r.room_version as string]));
}

/** The state of a room as of `pos` (inclusive): event nids by (type, state_key). */
export async function stateAt(db: Queryable, roomId: string, pos: number): Promise<RoomState[]> {
  const { rows } = await db.query<RoomState>(
    `SELECT DISTINCT ON (type, state_key) room_id AS "roomId", type, state_key AS "stateKey", event_nid AS "eventNid"
       FROM state_changes WHERE room_id = $1 AND pos <= $2
      ORDER BY type, state_key, pos DESC`,
    [roomId, pos],
  );
  return rows;
}
