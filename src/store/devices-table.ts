// Devices and their access tokens. A device keeps its poller position (`since`) across token
// refreshes: a new token for a known device continues where the old one stopped.
import type { Queryable } from './db.js';
import { textArray } from './pg-arrays.js';

export interface DeviceRow {
  userId: string;
  deviceId: string;
  since: string | null;
  initialSyncDone: boolean;
}

export interface DeviceWithToken extends DeviceRow {
  tokenEncrypted: Buffer;
}

const DEVICE_COLUMNS = `d.user_id AS "userId", d.device_id AS "deviceId", d.since, d.initial_sync_at IS NOT NULL AS "initialSyncDone"`;

/**
 * The devices of several tokens in one statement, by the tokens' hashes in hex (one row per
 * token stored; a hash asked twice is answered once).
 */
export async function findByTokenHashes(db: Queryable, tokenHashes: readonly string[]): Promise<Map<string, DeviceRow>> {
  const { rows } = await db.query<DeviceRow & { hash: string }>(
    `SELECT encode(t.token_hash, 'hex') AS hash, ${DEVICE_COLUMNS} FROM tokens t JOIN devices d USING (user_id, device_id)
      WHERE t.token_hash = ANY (SELECT decode(h, 'hex') FROM unnest($1::text[]) AS h)`,
    [textArray(tokenHashes)],
  );
  return new Map(rows.map(({ hash, ...device }) => [hash, device]));
}

/** Records a token seen for the first time; creates its device if new. */
export async function insertToken(
  db: Queryable,
  t: { tokenHash: Buffer; tokenEncrypted: Buffer; userId: string; deviceId: string },
): Promise<DeviceRow> {
  await db.query(`INSERT INTO devices (user_id, device_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, [t.userId, t.deviceId]);
  await db.query(
    `INSERT INTO tokens (token_hash, token_encrypted, user_id, device_id) VALUES ($1, $2, $3, $4)
     ON CONFLICT (token_hash) DO UPDATE SET last_seen_at = now()`,
    [t.tokenHash, t.tokenEncrypted, t.userId, t.deviceId],
  );
  // By device, not by token: a concurrent refresh of the same device may already have pruned it.
  const found = await getDevice(db, t.userId, t.deviceId);
  if (!found) throw new Error('device vanished right after insert');
  return found;
}

/** Marks a token and its device as used now; cheap enough to skip when done recently. */
export async function touchToken(db: Queryable, tokenHash: Buffer): Promise<void> {
  await db.query(
    `WITH t AS (UPDATE tokens SET last_seen_at = now() WHERE token_hash = $1 RETURNING user_id, device_id)
     UPDATE devices d SET last_seen_at = now() FROM t WHERE d.user_id = t.user_id AND d.device_id = t.device_id`,
    [tokenHash],
  );
}

export async function deleteToken(db: Queryable, tokenHash: Buffer): Promise<void> {
  await db.query('DELETE FROM tokens WHERE token_hash = $1', [tokenHash]);
}

/**
 * Deletes every token of the user's listed devices (all its devices when `deviceIds` is
 * undefined): they were logged out. Returns what went, so memory can forget it too.
 */
export async function deleteTokensOfDevices(
  db: Queryable,
  userId: string,
  deviceIds?: readonly string[],
): Promise<{ tokenHash: Buffer; deviceId: string }[]> {
  const { rows } = await db.query<{ tokenHash: Buffer; deviceId: string }>(
    `DELETE FROM tokens WHERE user_id = $1 AND ($2::text[] IS NULL OR device_id = ANY($2))
     RETURNING token_hash AS "tokenHash", device_id AS "deviceId"`,
    [userId, deviceIds ?? null],
  );
  return rows;
}

/**
 * Keeps only the device's `keep` newest tokens. A refreshed token supersedes the old one
 * (MAS rotates them every few minutes), so without this a device's tokens would pile up
 * forever. A pruned token still valid upstream is simply checked with whoami again.
 */
export async function pruneTokensOfDevice(db: Queryable, userId: string, deviceId: string, keep: number): Promise<Buffer[]> {
  const { rows } = await db.query<{ token_hash: Buffer }>(
    // Rows another prune (a concurrent refresh) or a touch holds are skipped, not waited for:
    // two prunes of one device locking its rows in different orders would deadlock. What is
    // skipped goes with that other prune, or the next one.
    `WITH doomed AS (
       SELECT token_hash FROM tokens WHERE user_id = $1 AND device_id = $2 AND token_hash NOT IN (
         SELECT token_hash FROM tokens WHERE user_id = $1 AND device_id = $2
          ORDER BY created_at DESC, last_seen_at DESC LIMIT $3)
       FOR UPDATE SKIP LOCKED
     )
     DELETE FROM tokens t USING doomed WHERE t.token_hash = doomed.token_hash
     RETURNING t.token_hash`,
    [userId, deviceId, keep],
  );
  return rows.map((r) => r.token_hash);
}

/** The newest token of every device seen within `maxIdleDays`: what the pollers resume with at startup. */
export async function devicesToPoll(db: Queryable, maxIdleDays: number): Promise<DeviceWithToken[]> {
  const { rows } = await db.query<DeviceWithToken>(
    `SELECT DISTINCT ON (d.user_id, d.device_id) ${DEVICE_COLUMNS}, t.token_encrypted AS "tokenEncrypted"
       FROM devices d JOIN tokens t USING (user_id, device_id)
      WHERE d.last_seen_at > now() - make_interval(days => $1)
      ORDER BY d.user_id, d.device_id, t.last_seen_at DESC`,
    [maxIdleDays],
  );
  return rows;
}

/**
 * How many devices `devicesToPoll` would return, without reading them: what a clustered
 * process's fair share is computed from every rebalance.
 */
export async function countDevicesToPoll(db: Queryable, maxIdleDays: number): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM devices d
      WHERE d.last_seen_at > now() - make_interval(days => $1)
        AND EXISTS (SELECT 1 FROM tokens t WHERE t.user_id = d.user_id AND t.device_id = d.device_id)`,
    [maxIdleDays],
  );
  return rows[0]?.n ?? 0;
}

/** One device as `devicesToPoll` returns it, with its newest token: read for a device being claimed. */
export async function deviceToPoll(db: Queryable, userId: string, deviceId: string): Promise<DeviceWithToken | undefined> {
  const { rows } = await db.query<DeviceWithToken>(
    `SELECT ${DEVICE_COLUMNS}, t.token_encrypted AS "tokenEncrypted"
       FROM devices d JOIN tokens t USING (user_id, device_id)
      WHERE d.user_id = $1 AND d.device_id = $2
      ORDER BY t.last_seen_at DESC LIMIT 1`,
    [userId, deviceId],
  );
  return rows[0];
}

/** The newest token of one device. */
export async function latestToken(db: Queryable, userId: string, deviceId: string): Promise<Buffer | undefined> {
  const { rows } = await db.query<{ token_encrypted: Buffer }>(
    'SELECT token_encrypted FROM tokens WHERE user_id = $1 AND device_id = $2 ORDER BY last_seen_at DESC LIMIT 1',
    [userId, deviceId],
  );
  return rows[0]?.token_encrypted;
}

export async function getDevice(db: Queryable, userId: string, deviceId: string): Promise<DeviceRow | undefined> {
  const { rows } = await db.query<DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices d WHERE d.user_id = $1 AND d.device_id = $2`, [
    userId,
    deviceId,
  ]);
  return rows[0];
}

/** Devices unseen for longer than `days`: their pollers stop. */
export async function idleDevices(db: Queryable, days: number): Promise<{ userId: string; deviceId: string }[]> {
  const { rows } = await db.query(
    `SELECT user_id AS "userId", device_id AS "deviceId" FROM devices WHERE last_seen_at <= now() - make_interval(days => $1)`,
    [days],
  );
  return rows;
}

/** Records an unusable upstream response; returns how often this position has failed. */
export async function recordPollerProblem(
  db: Queryable,
  p: { userId: string; deviceId: string; since: string; problem: string; skipped: boolean },
): Promise<number> {
  const { rows } = await db.query<{ failures: number }>(
    `INSERT INTO poller_problems (user_id, device_id, since, failures, problem, skipped) VALUES ($1, $2, $3, 1, $4, $5)
     ON CONFLICT (user_id, device_id, since)
     DO UPDATE SET failures = poller_problems.failures + 1, problem = $4, skipped = $5, last_seen_at = now()
     RETURNING failures`,
    [p.userId, p.deviceId, p.since, p.problem, p.skipped],
  );
  return rows[0]?.failures ?? 1;
}

/** Advances a device past a response it cannot use, without ingesting it. */
export async function skipTo(db: Queryable, userId: string, deviceId: string, since: string): Promise<void> {
  await db.query('UPDATE devices SET since = $3 WHERE user_id = $1 AND device_id = $2', [userId, deviceId, since]);
}
