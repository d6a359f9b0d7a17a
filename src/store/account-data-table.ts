// Global ('' room) and per-room account data: the latest value of each type.
import type { Queryable } from './db.js';
import { columns } from './pg-arrays.js';

export interface AccountDataRow {
  userId: string;
  roomId: string;
  type: string;
  json: string;
  pos: number;
}

export async function upsertAccountData(db: Queryable, rows: AccountDataRow[]): Promise<void> {
  if (rows.length === 0) return;
  await db.query(
    `INSERT INTO account_data (user_id, room_id, type, json, pos)
     SELECT DISTINCT ON (u, r, t) u, r, t, j, p
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) WITH ORDINALITY AS x(u, r, t, j, p, ord)
      ORDER BY u, r, t, ord DESC
     ON CONFLICT (user_id, room_id, type) DO UPDATE SET json = excluded.json, pos = excluded.pos
       WHERE account_data.json IS DISTINCT FROM excluded.json`,
    columns(rows, { userId: 'text', roomId: 'text', type: 'text', json: 'text', pos: 'number' }),
  );
}

/** Account data of a user changed after `since` (all of it when since is 0). */
export async function accountDataSince(db: Queryable, userId: string, since: number): Promise<AccountDataRow[]> {
  const { rows } = await db.query<AccountDataRow>(
    `SELECT user_id AS "userId", room_id AS "roomId", type, json, pos FROM account_data WHERE user_id = $1 AND pos > $2 ORDER BY pos`,
    [userId, since],
  );
  return rows;
}

/** Room account data of a user in the given rooms. */
export async function roomAccountData(db: Queryable, userId: string, roomIds: string[]): Promise<AccountDataRow[]> {
  if (roomIds.length === 0) return [];
  const { rows } = await db.query<AccountDataRow>(
    `SELECT user_id AS "userId", room_id AS "roomId", type, json, pos FROM account_data WHERE user_id = $1 AND room_id = ANY($2::text[]) ORDER BY pos`,
    [userId, roomIds],
  );
  return rows;
}
