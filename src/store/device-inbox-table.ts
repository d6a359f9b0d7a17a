// Per-device data the homeserver hands over exactly once: to-device messages, device list
// changes, one-time-key counts. Losing any of it breaks encryption for that device, so it is
// written in the same transaction as the `since` that acknowledged it upstream.
import type { Queryable } from './db.js';
import { boolArray, columns } from './pg-arrays.js';

export interface DeviceRef {
  userId: string;
  deviceId: string;
}

export async function insertToDevice(db: Queryable, device: DeviceRef, messages: string[]): Promise<number | undefined> {
  if (messages.length === 0) return undefined;
  const { rows } = await db.query<{ pos: number }>(
    `INSERT INTO to_device_messages (user_id, device_id, json)
     SELECT $1, $2, j FROM unnest($3::text[]) WITH ORDINALITY AS u(j, ord) ORDER BY ord
     RETURNING pos`,
    [device.userId, device.deviceId, messages],
  );
  return Math.max(...rows.map((r) => r.pos));
}

/** Up to `limit` messages after `after` (exclusive), oldest first. */
export async function toDeviceAfter(
  db: Queryable,
  device: DeviceRef,
  after: number,
  limit: number,
): Promise<{ pos: number; json: string }[]> {
  const { rows } = await db.query(
    `SELECT pos, json FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND pos > $3 ORDER BY pos LIMIT $4`,
    [device.userId, device.deviceId, after, limit],
  );
  return rows;
}

/** Messages stored and not yet acknowledged, all devices together (the backlog gauge, on scrape). */
export async function countToDevice(db: Queryable): Promise<number> {
  const { rows } = await db.query<{ n: number }>('SELECT count(*)::bigint AS n FROM to_device_messages');
  return rows[0]?.n ?? 0;
}

/** Deletes what the device acknowledged: every message up to and including `upTo`. */
export async function ackToDevice(db: Queryable, device: DeviceRef, upTo: number): Promise<number> {
  const res = await db.query('DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND pos <= $3', [
    device.userId,
    device.deviceId,
    upTo,
  ]);
  return res.rowCount ?? 0;
}

export async function upsertDeviceListChanges(
  db: Queryable,
  device: DeviceRef,
  changed: string[],
  left: string[],
  pos: number,
): Promise<void> {
  const targets = [...changed.map((u) => [u, 'changed']), ...left.map((u) => [u, 'left'])];
  if (targets.length === 0) return;
  await db.query(
    `INSERT INTO device_list_changes (user_id, device_id, target_user_id, kind, pos)
     SELECT DISTINCT ON (t) $1, $2, t, k, $5 FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS u(t, k, ord) ORDER BY t, ord DESC
     ON CONFLICT (user_id, device_id, target_user_id) DO UPDATE SET kind = excluded.kind, pos = excluded.pos`,
    [device.userId, device.deviceId, targets.map((t) => t[0]), targets.map((t) => t[1]), pos],
  );
}

export async function deviceListChangesSince(
  db: Queryable,
  device: DeviceRef,
  since: number,
): Promise<{ changed: string[]; left: string[] }> {
  const { rows } = await db.query<{ target_user_id: string; kind: string }>(
    'SELECT target_user_id, kind FROM device_list_changes WHERE user_id = $1 AND device_id = $2 AND pos > $3',
    [device.userId, device.deviceId, since],
  );
  return {
    changed: rows.filter((r) => r.kind === 'changed').map((r) => r.target_user_id),
    left: rows.filter((r) => r.kind === 'left').map((r) => r.target_user_id),
  };
}

/** Stores key counts when they differ from what is stored; returns whether they did. */
export async function updateKeyCounts(
  db: Queryable,
  device: DeviceRef,
  otkCounts: string | undefined,
  fallbackKeyTypes: string | undefined,
  pos: number,
): Promise<boolean> {
  if (otkCounts === undefined && fallbackKeyTypes === undefined) return false;
  const res = await db.query(
    `UPDATE devices SET otk_counts = COALESCE($3, otk_counts), fallback_key_types = COALESCE($4, fallback_key_types), keys_pos = $5
      WHERE user_id = $1 AND device_id = $2
        AND (otk_counts IS DISTINCT FROM COALESCE($3, otk_counts) OR fallback_key_types IS DISTINCT FROM COALESCE($4, fallback_key_types))`,
    [device.userId, device.deviceId, otkCounts ?? null, fallbackKeyTypes ?? null, pos],
  );
  return (res.rowCount ?? 0) > 0;
}

export interface KeyCountsUpdate extends DeviceRef {
  otkCounts: string | undefined;
  fallbackKeyTypes: string | undefined;
  pos: number;
}

/**
 * `updateKeyCounts` for several devices (one update each) in one statement; returns the
 * devices whose counts differed from what was stored, as `userId\0deviceId`.
 */
export async function updateKeyCountsOf(db: Queryable, updates: KeyCountsUpdate[]): Promise<Set<string>> {
  const rows = updates.filter((u) => u.otkCounts !== undefined || u.fallbackKeyTypes !== undefined);
  if (rows.length === 0) return new Set();
  const res = await db.query<{ user_id: string; device_id: string }>(
    `UPDATE devices d SET otk_counts = COALESCE(u.otk, d.otk_counts), fallback_key_types = COALESCE(u.fb, d.fallback_key_types), keys_pos = u.pos
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) AS u(uid, did, otk, fb, pos)
      WHERE d.user_id = u.uid AND d.device_id = u.did
        AND (d.otk_counts IS DISTINCT FROM COALESCE(u.otk, d.otk_counts) OR d.fallback_key_types IS DISTINCT FROM COALESCE(u.fb, d.fallback_key_types))
      RETURNING d.user_id, d.device_id`,
    columns(rows, { userId: 'text', deviceId: 'text', otkCounts: 'text', fallbackKeyTypes: 'text', pos: 'number' }),
  );
  return new Set(res.rows.map((r) => deviceKey({ userId: r.user_id, deviceId: r.device_id })));
}

export const deviceKey = (device: DeviceRef) => `${device.userId}\u0000${device.deviceId}`;

export async function keyCounts(
  db: Queryable,
  device: DeviceRef,
): Promise<{ otkCounts: string | null; fallbackKeyTypes: string | null; pos: number } | undefined> {
  const { rows } = await db.query(
    'SELECT otk_counts AS "otkCounts", fallback_key_types AS "fallbackKeyTypes", keys_pos AS pos FROM devices WHERE user_id = $1 AND device_id = $2',
    [device.userId, device.deviceId],
  );
  return rows[0];
}

/** Stores the device's new position upstream; marks its initial sync done. */
export async function advanceSince(db: Queryable, device: DeviceRef, since: string, from?: string | null): Promise<void> {
  if (from === undefined) {
    await db.query(
      'UPDATE devices SET since = $3, initial_sync_at = COALESCE(initial_sync_at, now()) WHERE user_id = $1 AND device_id = $2',
      [device.userId, device.deviceId, since],
    );
    return;
  }
  // Only from the position the poll started at: when another process (or a poller started
  // from a stale row) got there first, this response is not stored twice.
  const { rowCount } = await db.query(
    `UPDATE devices SET since = $3, initial_sync_at = COALESCE(initial_sync_at, now())
      WHERE user_id = $1 AND device_id = $2 AND since IS NOT DISTINCT FROM $4`,
    [device.userId, device.deviceId, since, from],
  );
  if (rowCount) return;
  const { rows } = await db.query<{ since: string | null }>('SELECT since FROM devices WHERE user_id = $1 AND device_id = $2', [
    device.userId,
    device.deviceId,
  ]);
  throw new SinceMoved(from, rows[0]?.since ?? null);
}

export interface SinceAdvance extends DeviceRef {
  since: string;
  /** As `advanceSince`'s `from`: undefined advances whatever is stored. */
  from?: string | null;
}

/**
 * `advanceSince` for several devices (one advance each) in one statement. Returns, per device
 * (`deviceKey`) whose stored `since` was not its `from`, the SinceMoved it gets; the others advanced.
 */
export async function advanceSinceOf(db: Queryable, advances: SinceAdvance[]): Promise<Map<string, SinceMoved>> {
  const moved = new Map<string, SinceMoved>();
  if (advances.length === 0) return moved;
  const { rows } = await db.query<{ user_id: string; device_id: string }>(
    `UPDATE devices d SET since = u.since, initial_sync_at = COALESCE(d.initial_sync_at, now())
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::boolean[]) AS u(uid, did, since, from_since, checked)
      WHERE d.user_id = u.uid AND d.device_id = u.did AND (NOT u.checked OR d.since IS NOT DISTINCT FROM u.from_since)
      RETURNING d.user_id, d.device_id`,
    [
      ...columns(advances, { userId: 'text', deviceId: 'text', since: 'text', from: 'text' }),
      boolArray(advances.map((a) => a.from !== undefined)),
    ],
  );
  const advanced = new Set(rows.map((r) => deviceKey({ userId: r.user_id, deviceId: r.device_id })));
  const stale = advances.filter((a) => a.from !== undefined && !advanced.has(deviceKey(a)));
  if (stale.length === 0) return moved;
  const current = await db.query<{ user_id: string; device_id: string; since: string | null }>(
    `SELECT d.user_id, d.device_id, d.since FROM unnest($1::text[], $2::text[]) AS u(uid, did)
       JOIN devices d ON d.user_id = u.uid AND d.device_id = u.did`,
    columns(stale, { userId: 'text', deviceId: 'text' }),
  );
  const now = new Map(current.rows.map((r) => [deviceKey({ userId: r.user_id, deviceId: r.device_id }), r.since]));
  for (const a of stale) moved.set(deviceKey(a), new SinceMoved(a.from ?? null, now.get(deviceKey(a)) ?? null));
  return moved;
}

/** The device's stored `since` is no longer the one a poll started from: its response is not stored. */
export class SinceMoved extends Error {
  override name = 'SinceMoved';

  constructor(
    readonly from: string | null,
    readonly current: string | null,
  ) {
    super(`the device's since moved from ${from ?? '(none)'} to ${current ?? '(none)'} while its poll was out`);
  }
}

/** Takes the next stream position (for facts that are not events). */
export async function nextPosition(db: Queryable): Promise<number> {
  const { rows } = await db.query<{ pos: number }>(`SELECT nextval('stream_pos') AS pos`);
  return rows[0]?.pos as number;
}

/**
 * Takes `n` consecutive stream positions and returns the first. Only under the ingest lock,
 * where nothing else takes positions, so the block is contiguous.
 */
export async function reservePositions(db: Queryable, n: number): Promise<number> {
  const { rows } = await db.query<{ last: number }>(`SELECT setval('stream_pos', nextval('stream_pos') + $1::bigint - 1) AS last`, [n]);
  return (rows[0]?.last as number) - n + 1;
}

/**
 * Serialises ingest transactions (across processes too), so positions commit in order. Also
 * gives the transaction (only: one ingest runs at a time) the memory to sort and unnest an
 * initial sync's hundred thousand rows without spilling to disk.
 *
 * `keyedOnly`, for an ingest's own transaction, whose reads all look up at most one part's keys
 * (about 1,000 event ids, or its rooms) through an index: it keeps the planner off sequential
 * scans for the transaction. By its default costs, 1,000 probes of `events`' event_id index
 * cost as much as reading 60,000 rows, so below about 100,000 stored events it read the whole
 * table for each part's dedup lookup: 40-285 ms a part (each holding every other user's live
 * events) where the probes take 3 ms; `room_state` likewise. (Readers that do want whole
 * tables, like `changesSince`, leave it unset.)
 */
export async function lockIngest(db: Queryable, opts: { keyedOnly?: boolean } = {}): Promise<void> {
  const keyed = opts.keyedOnly ? `, set_config('enable_seqscan', 'off', true)` : '';
  await db.query(`SELECT pg_advisory_xact_lock(7587000001), set_config('work_mem', '64MB', true)${keyed}`);
}
