// What is pruned, and why it is safe:
// - message events (no state key) beyond the newest `keepPerRoom` of their room, and older
//   than every position a live connection could still ask a delta from: timelines serve at
//   most the latest 1000 events, and deltas start at a connection's confirmed position. The
//   oldest remaining timeline event of an affected room is marked as a gap, so a timeline
//   reaching back that far says `limited` and clients paginate from the homeserver.
// - records of skipped upstream responses after 30 days.
// Never pruned here: state events (current state and the change log answer "state as of a
// leave"), to-device messages (deleted only when the device acknowledges them), device list
// changes (one row per device and user, so bounded) and tokens.
import type { Queryable } from './db.js';

export interface PruneResult {
  events: number;
  problems: number;
}

export async function prune(db: Queryable, opts: { keepPerRoom: number; batch: number }): Promise<PruneResult> {
  const { rows } = await db.query<{ room_id: string; n: number }>(
    `WITH horizon AS (
       SELECT COALESCE(LEAST(min(confirmed_stream), min(pending_stream)), (SELECT last_value FROM stream_pos)) AS pos FROM connections
     ), doomed AS (
       SELECT nid FROM (
         SELECT nid, row_number() OVER (PARTITION BY room_id ORDER BY nid DESC) AS rank FROM events WHERE state_key IS NULL
       ) ranked, horizon
       WHERE rank > $1 AND nid < horizon.pos
       LIMIT $2
     ), deleted AS (
       DELETE FROM events e USING doomed WHERE e.nid = doomed.nid RETURNING e.room_id, e.event_id
     ), txns AS (
       DELETE FROM transaction_ids t USING deleted WHERE t.event_id = deleted.event_id
     )
     SELECT room_id, count(*)::int AS n FROM deleted GROUP BY room_id`,
    [opts.keepPerRoom, opts.batch],
  );
  if (rows.length) {
    await db.query(
      `UPDATE events SET gap_before = true WHERE nid IN (
         SELECT min(nid) FROM events WHERE room_id = ANY($1::text[]) AND in_timeline GROUP BY room_id)`,
      [rows.map((r) => r.room_id)],
    );
  }
  const problems = await db.query(`DELETE FROM poller_problems WHERE last_seen_at < now() - interval '30 days'`);
  return { events: rows.reduce((n, r) => n + r.n, 0), problems: problems.rowCount ?? 0 };
}
