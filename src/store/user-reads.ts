// What a user's cache is loaded from: their rooms, and the account data that classifies them
// (m.direct for DMs, m.tag per room).
import type { AccountDataRow } from './account-data-table.js';
import type { Queryable } from './db.js';
import type { UserRoomRow } from './user-rooms-table.js';

export interface UserRoomWithData extends UserRoomRow {
  /** Position of the latest room account data change of this user in this room. */
  accountDataPos: number;
}

export async function userRoomsByIds(db: Queryable, userId: string, roomIds: string[] | undefined): Promise<UserRoomWithData[]> {
  const { rows } = await db.query<UserRoomWithData>(
    `SELECT ur.room_id AS "roomId", ur.membership, ur.membership_pos AS "membershipPos", ur.kicked, ur.invite_state AS "inviteState",
            ur.heroes, ur.notification_count AS "notificationCount", ur.highlight_count AS "highlightCount",
            ur.thread_counts AS "threadCounts",
            COALESCE((SELECT max(pos) FROM account_data ad WHERE ad.user_id = ur.user_id AND ad.room_id = ur.room_id), 0) AS "accountDataPos"
       FROM user_rooms ur WHERE ur.user_id = $1 AND ($2::text[] IS NULL OR ur.room_id = ANY($2::text[]))`,
    [userId, roomIds ?? null],
  );
  return rows;
}

/** m.direct (global) and every m.tag (per room) of the user. */
export async function classifyingAccountData(db: Queryable, userId: string): Promise<AccountDataRow[]> {
  const { rows } = await db.query<AccountDataRow>(
    `SELECT user_id AS "userId", room_id AS "roomId", type, json, pos FROM account_data
      WHERE user_id = $1 AND ((room_id = '' AND type = 'm.direct') OR (room_id <> '' AND type = 'm.tag'))`,
    [userId],
  );
  return rows;
}
