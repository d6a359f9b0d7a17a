// Current room state and its change log (state_changes): "state as of position P" is the
// latest change per key at or below P, which serves rooms a user has left without leaking
// anything that happened after the leave.
import type { Queryable } from './db.js';
import { columns, numberArray, textArray } from './pg-arrays.js';

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
    [textArray(roomIds)],
  );
  for (const r of rows) state.set(stateKeyOf(r.room_id, r.type, r.state_key), r.event_nid);
  return state;
}

export const stateKeyOf = (roomId: string, type: string, stateKey: string) => `${roomId}\0${type}\0${stateKey}`;

/**
 * Appends the changes to the change log and applies them to current state. Several changes of
 * one key in one batch: the last (highest pos, then latest in the list) wins current state.
 * The rooms' `state_pos` is the caller's (`RoomUpsert.statePos`).
 */
export async function applyStateChanges(db: Queryable, changes: StateChange[]): Promise<void> {
  if (changes.length === 0) return;
  const n = changes.length;
  const roomIds = new Array<string>(n);
  const types = new Array<string>(n);
  const stateKeys = new Array<string>(n);
  const nids = new Array<number>(n);
  const positions = new Array<number>(n);
  const latest = new Map<string, StateChange>();
  for (let i = 0; i < n; i++) {
    const c = changes[i] as StateChange;
    roomIds[i] = c.roomId;
    types[i] = c.type;
    stateKeys[i] = c.stateKey;
    nids[i] = c.eventNid;
    positions[i] = c.pos;
    const key = stateKeyOf(c.roomId, c.type, c.stateKey);
    const prev = latest.get(key);
    if (!prev || c.pos >= prev.pos) latest.set(key, c);
  }
  await db.query(
    `INSERT INTO state_changes (room_id, type, state_key, event_nid, pos)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])`,
    [textArray(roomIds), textArray(types), textArray(stateKeys), numberArray(nids), numberArray(positions)],
  );
  const current = [...latest.values()];
  await db.query(
    `INSERT INTO room_state (room_id, type, state_key, event_nid, membership)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])
     ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_nid = excluded.event_nid, membership = excluded.membership`,
    columns(current, { roomId: 'text', type: 'text', stateKey: 'text', eventNid: 'number', membership: 'text' }),
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
  /** Position of the latest state change this batch makes (0: none). */
  statePos: number;
}

export async function upsertRooms(db: Queryable, rooms: RoomUpsert[]) {
  if (rooms.length === 0) return;
  await db.query(
    `INSERT INTO rooms (room_id, room_version, joined_count, invited_count, latest_nid, bump_nid, bump_ts, state_pos)
     SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[])
     ON CONFLICT (room_id) DO UPDATE SET
       room_version = COALESCE(excluded.room_version, rooms.room_version),
       joined_count = COALESCE(excluded.joined_count, rooms.joined_count),
       invited_count = COALESCE(excluded.invited_count, rooms.invited_count),
       latest_nid = GREATEST(rooms.latest_nid, excluded.latest_nid),
       bump_nid = GREATEST(rooms.bump_nid, excluded.bump_nid),
       bump_ts = CASE WHEN excluded.bump_nid > rooms.bump_nid THEN excluded.bump_ts ELSE rooms.bump_ts END,
       state_pos = GREATEST(rooms.state_pos, excluded.state_pos)`,
    columns(rooms, {
      roomId: 'text',
      roomVersion: 'text',
      joined: 'number',
      invited: 'number',
      latestNid: 'number',
      bumpNid: 'number',
      bumpTs: 'number',
      statePos: 'number',
    }),
  );
}

export interface RoomTip {
  /** Position of the room's latest timeline event (0: none). */
  nid: number;
  /** Its origin_server_ts (0: none). */
  ts: number;
}

/** Each stored room's latest timeline event (rooms not stored yet are absent). */
export async function roomTips(db: Queryable, roomIds: string[]): Promise<Map<string, RoomTip>> {
  const out = new Map<string, RoomTip>();
  if (roomIds.length === 0) return out;
  const { rows } = await db.query<{ room_id: string; nid: number; ts: number | null }>(
    `SELECT r.room_id, r.latest_nid AS nid, e.origin_server_ts AS ts
       FROM rooms r LEFT JOIN events e ON e.nid = r.latest_nid WHERE r.room_id = ANY($1::text[])`,
    [textArray(roomIds)],
  );
  for (const r of rows) out.set(r.room_id, { nid: r.nid, ts: r.ts ?? 0 });
  return out;
}

export async function roomVersions(db: Queryable, roomIds: string[]): Promise<Map<string, string>> {
  const { rows } = await db.query<{ room_id: string; room_version: string | null }>(
    'SELECT room_id, room_version FROM rooms WHERE room_id = ANY($1::text[])',
    [roomIds],
  );
  return new Map(rows.filter((r) => r.room_version).map((r) => [r.room_id, r.room_version as string]));
}
