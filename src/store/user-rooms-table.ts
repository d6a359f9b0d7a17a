// A user's relation to each room (membership, invite state, unread counts, heroes), as that
// user's own pollers reported it.
import type { Queryable } from './db.js';
import { columns, textArray } from './pg-arrays.js';

export type Membership = 'join' | 'invite' | 'knock' | 'leave' | 'ban';

export interface MembershipUpdate {
  userId: string;
  roomId: string;
  membership: Membership;
  pos: number;
  kicked: boolean;
  /** JSON array of stripped state (invites and knocks); null clears it. */
  inviteState: string | null;
}

export interface RoomCountsUpdate {
  userId: string;
  roomId: string;
  notificationCount: number | undefined;
  highlightCount: number | undefined;
  threadCounts: string | undefined;
  heroes: string | undefined;
  pos: number;
}

export interface UserRoomRow {
  roomId: string;
  membership: Membership;
  membershipPos: number;
  kicked: boolean;
  inviteState: string | null;
  heroes: string | null;
  notificationCount: number;
  highlightCount: number;
  threadCounts: string | null;
}

export async function currentMemberships(db: Queryable, userId: string, roomIds: string[]): Promise<Map<string, Membership>> {
  const { rows } = await db.query<{ room_id: string; membership: Membership }>(
    'SELECT room_id, membership FROM user_rooms WHERE user_id = $1 AND room_id = ANY($2::text[])',
    [userId, textArray(roomIds)],
  );
  return new Map(rows.map((r) => [r.room_id, r.membership]));
}

export async function upsertMemberships(db: Queryable, updates: MembershipUpdate[]): Promise<void> {
  if (updates.length === 0) return;
  await db.query(
    `INSERT INTO user_rooms (user_id, room_id, membership, membership_pos, invite_state, kicked)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::boolean[])
     ON CONFLICT (user_id, room_id) DO UPDATE SET membership = excluded.membership,
       membership_pos = excluded.membership_pos, invite_state = excluded.invite_state, kicked = excluded.kicked`,
    columns(updates, { userId: 'text', roomId: 'text', membership: 'text', pos: 'number', inviteState: 'text', kicked: 'bool' }),
  );
}

/** Each (user, room) pair's stored membership, in one query (pairs without a row are absent). */
export async function currentMembershipsOf(
  db: Queryable,
  pairs: { userId: string; roomId: string }[],
): Promise<Map<string, Map<string, Membership>>> {
  const out = new Map<string, Map<string, Membership>>();
  if (pairs.length === 0) return out;
  const { rows } = await db.query<{ user_id: string; room_id: string; membership: Membership }>(
    `SELECT ur.user_id, ur.room_id, ur.membership FROM unnest($1::text[], $2::text[]) AS p(uid, rid)
       JOIN user_rooms ur ON ur.user_id = p.uid AND ur.room_id = p.rid`,
    columns(pairs, { userId: 'text', roomId: 'text' }),
  );
  for (const r of rows) {
    const ofUser = out.get(r.user_id) ?? new Map<string, Membership>();
    out.set(r.user_id, ofUser.set(r.room_id, r.membership));
  }
  return out;
}

/**
 * Unread counts and heroes; absent values keep what is stored. Rows must exist (joined rooms),
 * one update per (user, room). A row whose values are all as stored is not rewritten (nor its
 * position moved): 200 pollers bringing one message mostly repeat counts already stored.
 */
export async function updateRoomCounts(db: Queryable, updates: RoomCountsUpdate[]): Promise<void> {
  if (updates.length === 0) return;
  await db.query(
    `UPDATE user_rooms ur SET
       notification_count = COALESCE(u.n, ur.notification_count),
       highlight_count = COALESCE(u.h, ur.highlight_count),
       thread_counts = COALESCE(u.tc, ur.thread_counts),
       heroes = COALESCE(u.he, ur.heroes),
       counts_pos = u.pos
      FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::text[], $6::text[], $7::bigint[]) AS u(uid, rid, n, h, tc, he, pos)
     WHERE ur.user_id = u.uid AND ur.room_id = u.rid
       AND (ur.notification_count IS DISTINCT FROM COALESCE(u.n, ur.notification_count)
         OR ur.highlight_count IS DISTINCT FROM COALESCE(u.h, ur.highlight_count)
         OR ur.thread_counts IS DISTINCT FROM COALESCE(u.tc, ur.thread_counts)
         OR ur.heroes IS DISTINCT FROM COALESCE(u.he, ur.heroes))`,
    columns(updates, {
      userId: 'text',
      roomId: 'text',
      notificationCount: 'number',
      highlightCount: 'number',
      threadCounts: 'text',
      heroes: 'text',
      pos: 'number',
    }),
  );
}

export async function userRooms(db: Queryable, userId: string): Promise<UserRoomRow[]> {
  const { rows } = await db.query<UserRoomRow>(
    `SELECT room_id AS "roomId", membership, membership_pos AS "membershipPos", kicked, invite_state AS "inviteState", heroes,
            notification_count AS "notificationCount", highlight_count AS "highlightCount", thread_counts AS "threadCounts"
       FROM user_rooms WHERE user_id = $1`,
    [userId],
  );
  return rows;
}

/**
 * The user forgot a room (POST /rooms/{roomId}/forget succeeded upstream): its row goes, so a
 * kicked or banned room stops being listed. Only rooms the user is out of: the homeserver
 * refuses to forget a room the user is in, and a row that says otherwise is newer news.
 * Returns whether a row was deleted.
 */
export async function forgetRoom(db: Queryable, userId: string, roomId: string): Promise<boolean> {
  const res = await db.query(`DELETE FROM user_rooms WHERE user_id = $1 AND room_id = $2 AND membership IN ('leave', 'ban')`, [
    userId,
    roomId,
  ]);
  return (res.rowCount ?? 0) > 0;
}
