// Incremental responses (MSC4186): a response checks only the rooms that may differ from what
// the connection holds, instead of every room of its windows. What the connection holds is the
// confirmed response; a room in it is up to date unless, since that response was computed,
//   - something a response reads about it changed (the user's change log, see UserCache),
//   - it entered or left a window (the windows are recomputed every time and compared),
//   - that response itself changed the connection's memory of it (checked once more), or
//   - it is a room the user left themself (listed only in the response covering the leave).
// Anything else that could matter (the lists' and subscriptions' configs, the extensions'
// scopes, another user cache) is part of the shape: when it differs, every room is checked.
import type { UserCache } from '../cache/user-cache.js';
import type { SyncRequest } from './types.js';

/** What a computed response keeps for the next one (in memory, with the pending response). */
export interface ResponseMemo {
  user: UserCache;
  /** The user's change log position read before the response read any cache. */
  seq: number;
  shape: string;
  /** Each list's window, and the same as a set. */
  windows: Map<string, { ids: readonly string[]; set: ReadonlySet<string> }>;
  /** Rooms whose memory the response changed. */
  touched: ReadonlyMap<string, unknown>;
}

/**
 * Everything besides the rooms themselves that decides what a room gets. Ranges are not part
 * of it: they only move rooms in and out of windows, which are compared room by room.
 */
export function responseShape(req: SyncRequest, subs: unknown): string {
  return JSON.stringify([[...req.lists].map(([name, { ranges: _, ...list }]) => [name, list]), subs, req.extensions]);
}

/** Whether `memo` can be the base of an incremental response with this shape (includes_old_rooms never is). */
export function usableMemo(m: ResponseMemo | undefined, user: UserCache, shape: string, req: SyncRequest): ResponseMemo | undefined {
  if (!m || m.user !== user || m.shape !== shape) return undefined;
  for (const list of req.lists.values()) if (list.includeOldRooms) return undefined;
  return m;
}

/**
 * The windows as sets, and the rooms to check: changed since the memo, touched by it, entered
 * or left a window, or left by the user themself. Undefined (check every room) without a memo
 * or when the change log no longer reaches back to it. Sets of windows that hold the same
 * rooms as before are reused, so a live update costs one look-up per room, not a new set.
 */
export function roomsToCheck(
  memo: ResponseMemo | undefined,
  user: UserCache,
  listRooms: Map<string, string[]>,
): { check: Set<string> | undefined; windows: ResponseMemo['windows'] } {
  const windows: ResponseMemo['windows'] = new Map();
  const changed = memo ? user.changedSince(memo.seq) : undefined;
  if (!memo || !changed) {
    for (const [name, ids] of listRooms) windows.set(name, { ids, set: new Set(ids) });
    return { check: undefined, windows };
  }
  const check = new Set<string>(changed);
  for (const id of memo.touched.keys()) check.add(id);
  for (const id of user.selfLeft) check.add(id);
  for (const [name, ids] of listRooms) {
    const before = memo.windows.get(name);
    if (!before) {
      // Not reached: the list names are part of the shape.
      const set = new Set(ids);
      for (const id of ids) check.add(id);
      windows.set(name, { ids, set });
      continue;
    }
    let entered = 0;
    for (const id of ids) {
      if (!before.set.has(id)) {
        check.add(id);
        entered++;
      }
    }
    if (entered === 0 && ids.length === before.ids.length) {
      windows.set(name, { ids, set: before.set });
      continue;
    }
    const set = new Set(ids);
    for (const id of before.ids) if (!set.has(id)) check.add(id);
    windows.set(name, { ids, set });
  }
  return { check, windows };
}
