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
    `INSERT INTO state_changes (room_id, type, state_key, event_nid, pos)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])`,
    cols,
  );
  // Several changes of one key in one batch: the last (highest pos) wins.
  await db.query(
    `INSERT INTO room_state (room_id, type, state_key, event_nid)
     SELECT DISTINCT ON (r, t, k) r, t, k, n
       FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[]) AS u(r, t, k, n, p)
      ORDER BY r, t, k, p DESC
     ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_nid = excluded.event_nid`,
    cols,
  );
}

export async function upsertRooms(db: Queryable, rooms: { roomId: string; roomVersion?: string; joined?: number; invited?: number }[]) {
  if (rooms.length === 0) return;
  await db.query(
    `INSERT INTO rooms (room_id, room_version, joined_count, invited_count)
     SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int[])
     ON CONFLICT (room_id) DO UPDATE SET
       room_version = COALESCE(excluded.room_version, rooms.room_version),
       joined_count = COALESCE(excluded.joined_count, rooms.joined_count),
       invited_count = COALESCE(excluded.invited_count, rooms.invited_count)`,
    [
      rooms.map((r) => r.roomId),
      rooms.map((r) => r.roomVersion ?? null),
      rooms.map((r) => r.joined ?? null),
      rooms.map((r) => r.invited ?? null),
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
