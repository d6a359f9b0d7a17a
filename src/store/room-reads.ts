// Reads that build sliding sync room results: timelines, state filtered by required_state,
// state deltas, and the per-room metadata the caches keep. Batched over rooms, because a
// response covers a window of rooms and round trips dominate.
import type { Queryable } from './db.js';

export interface TimelineRow {
  roomId: string;
  nid: number;
  type: string;
  sender: string;
  stateKey: string | null;
  prevBatch: string | null;
  gapBefore: boolean;
  eventId: string;
  json: string;
}

/**
 * Below every position: history fetched before a room's stored timeline takes negative
 * positions (migrations/0004), so "from the beginning" starts here, not at 0.
 */
export const HISTORY_START = -(2 ** 52);

export interface TimelineQuery {
  roomId: string;
  /** Exclusive lower bound (HISTORY_START = from the beginning). */
  after: number;
  /** Inclusive upper bound. */
  upTo: number;
  /** Rows to return; one more is read to tell whether older events exist. */
  limit: number;
  /** Only events in these ranges ((after, upTo] each), when given: what the user may see. */
  visible?: { after: number; upTo: number }[];
}

/**
 * The latest `limit` (+1) timeline events of each room in (after, upTo], newest first, taken
 * only from each query's visible ranges. Each range is one index probe, so a user who may see
 * little of a long room costs no scan of the rest.
 */
export async function latestTimelines(db: Queryable, queries: TimelineQuery[]): Promise<Map<string, TimelineRow[]>> {
  const out = new Map<string, TimelineRow[]>();
  if (queries.length === 0) return out;
  // Each query's ranges sit at [first, last] (1-based) of the range arrays: a slice per query,
  // not a scan of every query's ranges (and an estimate small enough not to trigger JIT).
  const afters: number[] = [];
  const upTos: number[] = [];
  const first: number[] = [];
  const last: number[] = [];
  for (const q of queries) {
    first.push(afters.length + 1);
    for (const r of q.visible ?? [q]) {
      const after = Math.max(r.after, q.after);
      const upTo = Math.min(r.upTo, q.upTo);
      if (upTo <= after) continue;
      afters.push(after);
      upTos.push(upTo);
    }
    last.push(afters.length);
  }
  const { rows } = await db.query<TimelineRow>(
    `SELECT q.room_id AS "roomId", e.nid, e.type, e.sender, e.state_key AS "stateKey", e.prev_batch AS "prevBatch",
            e.gap_before AS "gapBefore", e.event_id AS "eventId", e.json
       FROM unnest($1::text[], $2::int[], $3::int[], $4::int[]) AS q(room_id, lim, first, last)
       CROSS JOIN LATERAL (
         SELECT ev.* FROM unnest(($5::bigint[])[q.first:q.last], ($6::bigint[])[q.first:q.last]) AS r(after, up_to)
         CROSS JOIN LATERAL (
           SELECT * FROM events x
            WHERE x.room_id = q.room_id AND x.in_timeline AND x.nid > r.after AND x.nid <= r.up_to
            ORDER BY x.nid DESC LIMIT q.lim + 1
         ) ev
          ORDER BY ev.nid DESC LIMIT q.lim + 1
       ) e
      ORDER BY e.nid DESC`,
    [queries.map((q) => q.roomId), queries.map((q) => q.limit), first, last, afters, upTos],
  );
  for (const r of rows) {
    const list = out.get(r.roomId) ?? [];
    out.set(r.roomId, list);
    list.push(r);
  }
  return out;
}

/**
 * A /messages token to paginate back from the event at `nid`: the nearest chunk start's
 * prev_batch at or after it, else the sync token that ended the chunk containing it. Both point
 * at or after the event, so clients may see some events twice but never miss one.
 */
export function prevBatchFrom(db: Queryable, roomId: string, nid: number): Promise<string | undefined> {
  // Callers asking at the same time for the same event share one query: a message in a room
  // shared by 200 users is the oldest timeline event of 200 answers computed at once. Nothing is
  // kept once it answers, so no caller gets an older answer than its own query would have given.
  let flights = prevBatchFlights.get(db);
  if (!flights) {
    flights = new Map();
    prevBatchFlights.set(db, flights);
  }
  const key = `${roomId}\0${nid}`;
  const running = flights.get(key);
  if (running) return running;
  const query = readPrevBatch(db, roomId, nid).finally(() => flights.delete(key));
  flights.set(key, query);
  return query;
}

const prevBatchFlights = new WeakMap<Queryable, Map<string, Promise<string | undefined>>>();

async function readPrevBatch(db: Queryable, roomId: string, nid: number): Promise<string | undefined> {
  const { rows } = await db.query<{ token: string | null }>(
    `SELECT COALESCE(
       (SELECT prev_batch FROM events WHERE room_id = $1 AND in_timeline AND nid >= $2 AND prev_batch IS NOT NULL ORDER BY nid LIMIT 1),
       (SELECT chunk_end_token FROM events WHERE room_id = $1 AND in_timeline AND nid <= $2 AND chunk_end_token IS NOT NULL
         ORDER BY nid DESC LIMIT 1)
     ) AS token`,
    [roomId, nid],
  );
  return rows[0]?.token ?? undefined;
}

/** What required_state asks for, in SQL-friendly form (see sync/required-state.ts). */
export interface StateSelector {
  all: boolean;
  /** Types wanted with every state key. */
  types: string[];
  /** State keys wanted with every type. */
  keys: string[];
  /** Exact (type, state_key) pairs. */
  pairTypes: string[];
  pairKeys: string[];
}

export interface StateRow {
  roomId: string;
  type: string;
  stateKey: string;
  nid: number;
  json: string;
}

/**
 * The event's JSON as a correlated primary-key lookup rather than a join: the planner cannot
 * estimate the selector's ORs and would otherwise hash-join against a scan of all events.
 */
const EVENT_JSON = '(SELECT e.json FROM events e WHERE e.nid = s.event_nid) AS json';

const SELECTED = `($2::boolean OR s.type = ANY($3::text[]) OR s.state_key = ANY($4::text[])
  OR (s.type, s.state_key) IN (SELECT * FROM unnest($5::text[], $6::text[])))`;

const selectorParams = (sel: StateSelector) => [sel.all, sel.types, sel.keys, sel.pairTypes, sel.pairKeys];

/** Current state of rooms matching the selector. */
export async function currentState(db: Queryable, roomIds: string[], sel: StateSelector): Promise<StateRow[]> {
  if (roomIds.length === 0) return [];
  const { rows } = await db.query<StateRow>(
    `SELECT s.room_id AS "roomId", s.type, s.state_key AS "stateKey", s.event_nid AS nid, ${EVENT_JSON}
       FROM room_state s
      WHERE s.room_id = ANY($1::text[]) AND ${SELECTED}`,
    [roomIds, ...selectorParams(sel)],
  );
  return rows;
}

/** State of one room as of stream position `pos` (rooms the user left: nothing after the leave). */
export async function stateAsOf(db: Queryable, roomId: string, pos: number, sel: StateSelector): Promise<StateRow[]> {
  const { rows } = await db.query<StateRow>(
    `SELECT s.room_id AS "roomId", s.type, s.state_key AS "stateKey", s.event_nid AS nid, ${EVENT_JSON}
       FROM (SELECT DISTINCT ON (type, state_key) room_id, type, state_key, event_nid FROM state_changes
              WHERE room_id = $1 AND pos <= $7 ORDER BY type, state_key, pos DESC) s
      WHERE ${SELECTED}`,
    [roomId, ...selectorParams(sel), pos],
  );
  return rows;
}

/** State keys that changed in (after, upTo], with their value as of upTo, matching the selector. */
export async function stateChangedBetween(
  db: Queryable,
  roomId: string,
  after: number,
  upTo: number,
  sel: StateSelector,
): Promise<StateRow[]> {
  const { rows } = await db.query<StateRow>(
    `SELECT s.room_id AS "roomId", s.type, s.state_key AS "stateKey", s.event_nid AS nid, ${EVENT_JSON}
       FROM (SELECT DISTINCT ON (type, state_key) room_id, type, state_key, event_nid FROM state_changes
              WHERE room_id = $1 AND pos > $7 AND pos <= $8 ORDER BY type, state_key, pos DESC) s
      WHERE ${SELECTED}`,
    [roomId, ...selectorParams(sel), after, upTo],
  );
  return rows;
}

/** Current member events of (room, user) pairs across rooms, in one query. */
export async function currentMembers(db: Queryable, pairs: { roomId: string; userId: string }[]): Promise<StateRow[]> {
  if (pairs.length === 0) return [];
  const { rows } = await db.query<StateRow>(
    `SELECT s.room_id AS "roomId", s.type, s.state_key AS "stateKey", s.event_nid AS nid, ${EVENT_JSON}
       FROM unnest($1::text[], $2::text[]) AS p(room_id, user_id)
       JOIN room_state s ON s.room_id = p.room_id AND s.type = 'm.room.member' AND s.state_key = p.user_id`,
    [pairs.map((p) => p.roomId), pairs.map((p) => p.userId)],
  );
  return rows;
}

/** Member events of the given users in a room (current, or as of `pos` when given). */
export async function memberEvents(db: Queryable, roomId: string, userIds: string[], pos?: number): Promise<StateRow[]> {
  if (userIds.length === 0) return [];
  const sel: StateSelector = { all: false, types: [], keys: [], pairTypes: userIds.map(() => 'm.room.member'), pairKeys: userIds };
  return pos === undefined ? currentState(db, [roomId], sel) : stateAsOf(db, roomId, pos, sel);
}

export interface RoomMetaRow {
  roomId: string;
  joinedCount: number | null;
  invitedCount: number | null;
  latestNid: number;
  bumpNid: number;
  bumpTs: number;
  statePos: number;
  receiptPos: number;
}

/** The state types room metadata is computed from (name, alias, avatar, encryption, type, space children, tombstone). */
const META_STATE_TYPES = [
  'm.room.create',
  'm.room.name',
  'm.room.canonical_alias',
  'm.room.avatar',
  'm.room.encryption',
  'm.room.tombstone',
  'm.space.child',
  'm.room.history_visibility',
];

export async function roomMeta(db: Queryable, roomIds: string[]): Promise<{ rooms: RoomMetaRow[]; state: StateRow[] }> {
  if (roomIds.length === 0) return { rooms: [], state: [] };
  const [rooms, state] = await Promise.all([
    // The homeserver's summary counts when it sent them (only with lazy-loaded members);
    // otherwise counted from the stored member state.
    db.query<RoomMetaRow>(
      `SELECT r.room_id AS "roomId",
              COALESCE(r.joined_count, m.joined) AS "joinedCount", COALESCE(r.invited_count, m.invited) AS "invitedCount",
              r.latest_nid AS "latestNid", r.bump_nid AS "bumpNid", r.bump_ts AS "bumpTs", r.state_pos AS "statePos",
              COALESCE((SELECT max(pos) FROM receipts rc WHERE rc.room_id = r.room_id), 0) AS "receiptPos"
         FROM rooms r
         LEFT JOIN LATERAL (
           SELECT count(*) FILTER (WHERE s.membership = 'join')::int AS joined, count(*) FILTER (WHERE s.membership = 'invite')::int AS invited
             FROM room_state s WHERE s.room_id = r.room_id AND s.type = 'm.room.member'
         ) m ON r.joined_count IS NULL OR r.invited_count IS NULL
        WHERE r.room_id = ANY($1::text[])`,
      [roomIds],
    ),
    currentState(db, roomIds, { all: false, types: META_STATE_TYPES, keys: [], pairTypes: [], pairKeys: [] }),
  ]);
  return { rooms: rooms.rows, state };
}

/**
 * Heroes when the homeserver sent none, for each room at once: joined and invited members
 * other than `except`, earliest first; left and banned ones when nobody else is there
 * (Synapse's rule).
 */
export async function fallbackHeroes(db: Queryable, roomIds: string[], except: string, limit: number): Promise<StateRow[]> {
  if (roomIds.length === 0) return [];
  const { rows } = await db.query<StateRow>(
    `SELECT s.room_id AS "roomId", s.type, s.state_key AS "stateKey", s.event_nid AS nid, ${EVENT_JSON}
       FROM unnest($1::text[]) WITH ORDINALITY AS q(room_id, ord)
       CROSS JOIN LATERAL (
         SELECT * FROM room_state rs
          WHERE rs.room_id = q.room_id AND rs.type = 'm.room.member' AND rs.state_key <> $2
          ORDER BY (rs.membership IN ('join', 'invite')) DESC, rs.event_nid LIMIT $3
       ) s
      ORDER BY q.ord, (s.membership IN ('join', 'invite')) DESC, s.event_nid`,
    [roomIds, except, limit],
  );
  return rows;
}

/** Transaction ids this device owns among the given events. */
export async function transactionIdsFor(db: Queryable, userId: string, deviceId: string, eventIds: string[]): Promise<Map<string, string>> {
  if (eventIds.length === 0) return new Map();
  const { rows } = await db.query<{ event_id: string; txn_id: string }>(
    'SELECT event_id, txn_id FROM transaction_ids WHERE user_id = $1 AND device_id = $2 AND event_id = ANY($3::text[])',
    [userId, deviceId, eventIds],
  );
  return new Map(rows.map((r) => [r.event_id, r.txn_id]));
}

/**
 * What history visibility is decided from, per room: its history_visibility changes and
 * `userId`'s own membership changes, each (position, value) oldest first.
 *
 * A value known only from the state block of the room's first contact (its event placed in no
 * timeline) held before that contact too, as far back as the proxy knows nothing else: it is
 * also given at HISTORY_START, which decides fetched history (negative positions) older than
 * any change the fetched history itself shows, and nothing at stream positions.
 */
export async function visibilityHistory(
  db: Queryable,
  userId: string,
  roomIds: string[],
): Promise<Map<string, { visibility: Change[]; membership: Change[] }>> {
  const out = new Map<string, { visibility: Change[]; membership: Change[] }>();
  for (const [roomId, h] of await visibilityChanges(db, roomIds, userId))
    out.set(roomId, { visibility: h.visibility, membership: h.members.get(userId) ?? [] });
  return out;
}

/**
 * visibilityHistory for every member at once: each room's history_visibility changes and all
 * its members' own membership changes, oldest first (one read serves every user of the room).
 */
export function roomVisibilityHistories(db: Queryable, roomIds: string[]): Promise<Map<string, RoomVisibilityChanges>> {
  return visibilityChanges(db, roomIds, undefined);
}

type Change = { pos: number; value: string };
interface RoomVisibilityChanges {
  visibility: Change[];
  members: Map<string, Change[]>;
}

/** The changes of visibilityHistory, of one member (`userId`) or of all (undefined). */
async function visibilityChanges(
  db: Queryable,
  roomIds: string[],
  userId: string | undefined,
): Promise<Map<string, RoomVisibilityChanges>> {
  const out = new Map<string, RoomVisibilityChanges>();
  if (roomIds.length === 0) return out;
  for (const id of roomIds) out.set(id, { visibility: [], members: new Map() });
  const { rows } = await db.query<{ room_id: string; member: string | null; pos: number; value: string | null; before_contact: boolean }>(
    `SELECT sc.room_id, CASE WHEN sc.type = 'm.room.member' THEN sc.state_key END AS member, sc.pos, e.value,
            (sc.pos > 0 AND NOT e.in_timeline AND NOT EXISTS (
               SELECT 1 FROM events x WHERE x.room_id = sc.room_id AND x.in_timeline AND x.nid > 0 AND x.nid < sc.pos)) AS before_contact
       FROM state_changes sc
       CROSS JOIN LATERAL (
         SELECT ev.in_timeline,
                ev.json::jsonb -> 'content' ->> CASE WHEN sc.type = 'm.room.member' THEN 'membership' ELSE 'history_visibility' END AS value
           FROM events ev WHERE ev.nid = sc.event_nid) e
      WHERE sc.room_id = ANY($1::text[])
        AND ((sc.type = 'm.room.history_visibility' AND sc.state_key = '')
             OR (sc.type = 'm.room.member' AND ($2::text IS NULL OR sc.state_key = $2)))
      ORDER BY sc.room_id, sc.pos`,
    [roomIds, userId ?? null],
  );
  // The latest value each list had from the first contact's state block alone (see above).
  const held = new Map<Change[], string>();
  for (const r of rows) {
    const entry = out.get(r.room_id);
    if (!entry) continue;
    let list = entry.visibility;
    if (r.member !== null) {
      list = entry.members.get(r.member) ?? [];
      entry.members.set(r.member, list);
    }
    const value = r.value ?? (r.member === null ? 'shared' : 'leave');
    list.push({ pos: r.pos, value });
    if (!r.before_contact) continue;
    if (r.value === null) held.delete(list);
    else held.set(list, r.value);
  }
  for (const [list, value] of held) list.unshift({ pos: HISTORY_START, value });
  return out;
}

/**
 * A room's member summary as of stream position `pos` (a room the user left, as of the leave):
 * joined and invited counts, and up to `limit` members other than `except` to make heroes of
 * (joined and invited first, earliest first, as fallbackHeroes picks them now).
 */
export async function memberSummaryAsOf(
  db: Queryable,
  roomId: string,
  pos: number,
  except: string,
  limit: number,
): Promise<{ joined: number; invited: number; heroes: StateRow[] }> {
  const { rows } = await db.query<{ joined: number; invited: number; heroes: Omit<StateRow, 'roomId' | 'type'>[] }>(
    `WITH m AS (
       SELECT c.state_key, c.event_nid,
              (SELECT e.json::jsonb -> 'content' ->> 'membership' FROM events e WHERE e.nid = c.event_nid) AS membership
         FROM (SELECT DISTINCT ON (state_key) state_key, event_nid FROM state_changes
                WHERE room_id = $1 AND type = 'm.room.member' AND pos <= $2 ORDER BY state_key, pos DESC) c
     )
     SELECT (SELECT count(*) FROM m WHERE membership = 'join')::int AS joined,
            (SELECT count(*) FROM m WHERE membership = 'invite')::int AS invited,
            COALESCE((SELECT json_agg(h) FROM (
              SELECT m.state_key AS "stateKey", m.event_nid AS nid, (SELECT e.json FROM events e WHERE e.nid = m.event_nid) AS json
                FROM m WHERE m.state_key <> $3 ORDER BY (m.membership IN ('join', 'invite')) DESC, m.event_nid LIMIT $4) h), '[]') AS heroes`,
    [roomId, pos, except, limit],
  );
  const row = rows[0];
  const heroes = (row?.heroes ?? []).map((h) => ({ ...h, nid: Number(h.nid), roomId, type: 'm.room.member' }));
  return { joined: row?.joined ?? 0, invited: row?.invited ?? 0, heroes };
}

export async function currentStreamPos(db: Queryable): Promise<number> {
  const { rows } = await db.query<{ pos: number }>(`SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS pos FROM stream_pos`);
  return rows[0]?.pos ?? 0;
}

/**
 * Each room's latest timeline event of one of `types` (any type when empty), at most at `upTo`:
 * MSC3575 `bump_event_types` recency and the `timestamp` field. One index probe per room.
 */
export async function latestEventsOfTypes(
  db: Queryable,
  roomIds: string[],
  types: string[],
  upTo: number,
): Promise<{ roomId: string; nid: number; ts: number }[]> {
  if (roomIds.length === 0) return [];
  const { rows } = await db.query<{ roomId: string; nid: number; ts: number }>(
    `SELECT r.id AS "roomId", e.nid, e.origin_server_ts AS ts
       FROM unnest($1::text[]) AS r(id)
       CROSS JOIN LATERAL (
         SELECT nid, origin_server_ts FROM events
          WHERE room_id = r.id AND in_timeline AND nid <= $3 AND (cardinality($2::text[]) = 0 OR type = ANY($2::text[]))
          ORDER BY nid DESC LIMIT 1
       ) e`,
    [roomIds, types, upTo],
  );
  return rows;
}
