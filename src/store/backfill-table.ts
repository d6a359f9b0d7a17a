// Storing history fetched from the homeserver before a room's stored timeline (see
// migrations/0004): positions below every stored one, and the rows that place it.
import type { Queryable } from './db.js';
import { jsonTextsArray, numberArray, textArray } from './pg-arrays.js';

export interface TimelineStart {
  nid: number;
  eventId: string;
  gapBefore: boolean;
  prevBatch: string | null;
}

/** The room's oldest stored timeline event. */
export async function timelineStart(db: Queryable, roomId: string): Promise<TimelineStart | undefined> {
  const { rows } = await db.query<TimelineStart>(
    `SELECT nid, event_id AS "eventId", gap_before AS "gapBefore", prev_batch AS "prevBatch"
       FROM events WHERE room_id = $1 AND in_timeline ORDER BY nid LIMIT 1`,
    [roomId],
  );
  return rows[0];
}

/**
 * Takes `n` consecutive backfill positions and returns the highest; the block is that one and
 * the n - 1 below it. Only under the ingest lock, where nothing else takes them.
 */
export async function reserveBackfillPositions(db: Queryable, n: number): Promise<number> {
  const { rows } = await db.query<{ last: number }>(`SELECT setval('backfill_pos', nextval('backfill_pos') - $1::bigint + 1) AS last`, [n]);
  return (rows[0]?.last as number) + n - 1;
}

/**
 * Moves events known only from state blocks to the timeline positions a backfill found them
 * at, with every row that points at them.
 */
export async function placeStateEvents(db: Queryable, moves: { from: number; to: number; json: string }[]): Promise<void> {
  if (moves.length === 0) return;
  const params = [numberArray(moves.map((m) => m.from)), numberArray(moves.map((m) => m.to))];
  // A redacted one keeps its redacted form.
  await db.query(
    `UPDATE events SET nid = m.t, in_timeline = true, json = CASE WHEN redacted THEN events.json ELSE m.j::text END
       FROM ROWS FROM (unnest($1::bigint[]), unnest($2::bigint[]), json_array_elements($3::json)) AS m(f, t, j) WHERE events.nid = m.f`,
    [...params, jsonTextsArray(moves.map((m) => m.json))],
  );
  await db.query(`UPDATE room_state SET event_nid = m.t FROM unnest($1::bigint[], $2::bigint[]) AS m(f, t) WHERE event_nid = m.f`, params);
  await db.query(
    `UPDATE state_changes SET event_nid = m.t FROM unnest($1::bigint[], $2::bigint[]) AS m(f, t) WHERE event_nid = m.f`,
    params,
  );
}

/**
 * State changes at backfilled positions (pos = the event's own): what membership and
 * history_visibility were there. They are below every stream position, so "state as of" any
 * stream position still picks the current rows.
 */
export async function recordHistoricState(db: Queryable, rows: { roomId: string; type: string; stateKey: string; nid: number }[]) {
  if (rows.length === 0) return;
  await db.query(
    `INSERT INTO state_changes (room_id, type, state_key, event_nid, pos)
     SELECT r, t, k, n, n FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u(r, t, k, n) ON CONFLICT DO NOTHING`,
    [
      textArray(rows.map((r) => r.roomId)),
      textArray(rows.map((r) => r.type)),
      textArray(rows.map((r) => r.stateKey)),
      numberArray(rows.map((r) => r.nid)),
    ],
  );
}

/**
 * Moves a room's start gap from `filled` (which now follows the fetched events directly) to
 * `oldest`, the new first event: none at the start of the room (`prevBatch` undefined), else a
 * gap with the token to paginate on from (null when the homeserver gave none: the user may see
 * nothing older, others may).
 */
export async function moveStartGap(db: Queryable, filled: number, oldest: number, prevBatch: string | null | undefined): Promise<void> {
  await db.query(
    `UPDATE events SET gap_before = CASE WHEN nid = $1 THEN false ELSE $4 END,
                       prev_batch = CASE WHEN nid = $1 THEN prev_batch ELSE COALESCE($3::text, prev_batch) END
      WHERE nid IN ($1, $2)`,
    [filled, oldest, prevBatch ?? null, prevBatch !== undefined],
  );
}
