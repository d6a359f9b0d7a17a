// The SQL of the bus across processes (SYNCV3_CLUSTER): NOTIFY inside the ingest transaction,
// so the other processes hear of a change exactly when it commits (never before, never for a
// rollback); LISTEN on a connection of this process's own, reopened when it drops; and what
// changed after a position, read back from the tables, to catch up on what was announced
// while the listener was away.
import type pg from 'pg';
import type { Logger } from '../telemetry/logger.js';
import type { Pool, Queryable } from './db.js';
import { lockIngest } from './device-inbox-table.js';
import { dedicatedClient } from './instance-lock.js';

export const BUS_CHANNEL = 'syncv3_bus';

/** Sends each payload on the bus channel as part of `tx` (in order; delivered on commit). */
export async function notifyInTransaction(tx: Queryable, payloads: readonly string[]): Promise<void> {
  for (const payload of payloads) await tx.query('SELECT pg_notify($1, $2)', [BUS_CHANNEL, payload]);
}

/** Sends payloads on their own (messages that no transaction carries, such as a dead token). */
export async function notify(pool: Pool, payloads: readonly string[]): Promise<void> {
  for (const payload of payloads) await pool.query('SELECT pg_notify($1, $2)', [BUS_CHANNEL, payload]);
}

export interface BusListener {
  close(): Promise<void>;
}

/**
 * Listens on the bus channel until closed. When the connection drops it is reopened (backing
 * off up to 5 s), and `onReconnect` runs once listening again, for the caller to catch up.
 */
export function listen(
  pool: Pool,
  logger: Logger,
  onPayload: (payload: string) => void,
  onReconnect: () => Promise<void>,
): Promise<BusListener> {
  let client: pg.Client | undefined;
  let closed = false;
  let retry: NodeJS.Timeout | undefined;
  const open = async (again: boolean): Promise<void> => {
    const c = dedicatedClient(pool, 'bus');
    c.on('error', (err) => logger.warn({ err: err.message }, 'bus listener connection lost'));
    c.on('notification', (n) => {
      if (n.channel === BUS_CHANNEL && n.payload !== undefined) onPayload(n.payload);
    });
    c.on('end', () => {
      if (closed || client !== c) return;
      client = undefined;
      schedule(250);
    });
    try {
      await c.connect();
      await c.query(`LISTEN ${BUS_CHANNEL}`);
    } catch (err) {
      await c.end().catch(() => undefined);
      throw err;
    }
    client = c;
    if (closed) await c.end().catch(() => undefined);
    else if (again) {
      logger.info('bus listener reconnected; catching up');
      catchUp(1000);
    }
  };
  const catchUp = (delayMs: number) => {
    onReconnect().catch((err) => {
      logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'bus catch-up failed; retrying');
      if (!closed) setTimeout(() => catchUp(Math.min(delayMs * 2, 10_000)), delayMs).unref();
    });
  };
  const schedule = (delayMs: number) => {
    retry = setTimeout(() => {
      open(true).catch((err) => {
        logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'bus listener cannot reconnect yet');
        if (!closed) schedule(Math.min(delayMs * 2, 5000));
      });
    }, delayMs).unref();
  };
  return open(false).then(() => ({
    async close() {
      closed = true;
      clearTimeout(retry);
      await client?.end().catch(() => undefined);
    },
  }));
}

export interface ChangesSince {
  /** The highest committed position. */
  pos: number;
  rooms: { roomId: string; latestNid: number; statePos: number; bumpNid: number; bumpTs: number }[];
  receiptRooms: string[];
  /** Users whose memberships, counts or room account data changed, with the rooms concerned. */
  userRooms: { userId: string; roomIds: string[] }[];
  /** Users whose global account data changed, with its types. */
  accountData: { userId: string; types: string[] }[];
  devices: { userId: string; deviceId: string; toDevice: number; deviceLists: boolean; keys: boolean }[];
}

/**
 * Everything stored after `after`, as the bus would have announced it. Read under the ingest
 * lock (so no ingest is half-way: the sequence's value is committed), in one short transaction.
 */
export async function changesSince(pool: Pool, after: number): Promise<ChangesSince> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await lockIngest(client);
    const pos = (await client.query<{ pos: number }>('SELECT last_value AS pos FROM stream_pos')).rows[0]?.pos ?? 0;
    const rooms = await client.query(
      `SELECT room_id AS "roomId", latest_nid AS "latestNid", state_pos AS "statePos", bump_nid AS "bumpNid", bump_ts AS "bumpTs"
         FROM rooms WHERE latest_nid > $1 OR state_pos > $1`,
      [after],
    );
    const receiptRooms = await client.query<{ room_id: string }>('SELECT DISTINCT room_id FROM receipts WHERE pos > $1', [after]);
    const userRooms = await client.query(
      `SELECT user_id AS "userId", array_agg(DISTINCT room_id) AS "roomIds" FROM (
         SELECT user_id, room_id FROM user_rooms WHERE membership_pos > $1 OR counts_pos > $1
         UNION ALL SELECT user_id, room_id FROM account_data WHERE pos > $1 AND room_id <> ''
       ) c GROUP BY user_id`,
      [after],
    );
    const accountData = await client.query(
      `SELECT user_id AS "userId", array_agg(type) AS types FROM account_data WHERE pos > $1 AND room_id = '' GROUP BY user_id`,
      [after],
    );
    const devices = await client.query(
      `SELECT user_id AS "userId", device_id AS "deviceId", sum(to_device)::int AS "toDevice",
              bool_or(lists) AS "deviceLists", bool_or(keys) AS keys FROM (
         SELECT user_id, device_id, count(*) AS to_device, false AS lists, false AS keys FROM to_device_messages WHERE pos > $1 GROUP BY 1, 2
         UNION ALL SELECT DISTINCT user_id, device_id, 0, true, false FROM device_list_changes WHERE pos > $1
         UNION ALL SELECT user_id, device_id, 0, false, true FROM devices WHERE keys_pos > $1
       ) c GROUP BY 1, 2`,
      [after],
    );
    await client.query('COMMIT');
    return {
      pos,
      rooms: rooms.rows,
      receiptRooms: receiptRooms.rows.map((r) => r.room_id),
      userRooms: userRooms.rows,
      accountData: accountData.rows,
      devices: devices.rows,
    };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/**
 * Runs `fn` while no ingest transaction is in flight in any process (holding the ingest lock
 * meanwhile): what `fn` reads of the stream position is then committed.
 */
export async function whileNoIngest<T>(pool: Pool, fn: () => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await lockIngest(client);
    return await fn();
  } finally {
    await client.query('ROLLBACK').catch(() => undefined);
    client.release();
  }
}
