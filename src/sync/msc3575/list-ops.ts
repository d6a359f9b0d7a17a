// MSC3575 list operations. The client (matrix-js-sdk's SlidingSync) keeps a sparse index→room map and only
// shifts indices inside the ranges it tracks, so the ops here are chosen so that every shift the client makes
// stays inside one range, and the few that cannot (lone INSERT/DELETE at the end of the list) are ordered so
// the client's "shift up to the highest index I know" never crosses data it still needs.

import type { ListOp } from '../types.js';

export type { ListOp };

/** What the client holds of one list: the ranges it tracks and, per range, the room ids it was told, in order (ids[i] starts at ranges[i][0]; may be shorter than the range at the end of the list). */
export interface ListView {
  ranges: [number, number][];
  ids: string[][];
}

type Range = [number, number];

/** A range's ops, kept together because the client must see a range's DELETE/INSERT pairs back to back. */
interface Segment {
  start: number;
  ops: ListOp[];
}

/** `ordered` = the list's whole filtered, sorted room ids now. `reset` = sort or filters changed (client's view must be invalidated). `ranges` = the requested ranges now (inclusive, non-overlapping, validated by the caller). */
export function listOps(
  prev: ListView | undefined,
  ranges: [number, number][],
  ordered: readonly string[],
  reset: boolean,
): { ops: ListOp[]; view: ListView } {
  const view: ListView = { ranges: ranges.map(([a, b]): Range => [a, b]), ids: ranges.map(([a, b]) => ordered.slice(a, b + 1)) };
  if (!prev || reset) return { ops: [...(prev ? invalidateAll(prev) : []), ...syncAll(view)], view };
  return { ops: diffViews(prev, view), view };
}

function invalidateAll(prev: ListView): ListOp[] {
  return byStart(prev).flatMap((i) => invalidate(prev.ranges[i]?.[0] ?? 0, prev.ids[i] ?? []));
}

function syncAll(view: ListView): ListOp[] {
  return byStart(view).flatMap((i) => sync(view.ranges[i]?.[0] ?? 0, view.ids[i] ?? []));
}

/** Range indices of a view by ascending start, so output does not depend on the order the client listed them in. */
function byStart(view: ListView): number[] {
  return view.ranges.map((_, i) => i).sort((x, y) => (view.ranges[x]?.[0] ?? 0) - (view.ranges[y]?.[0] ?? 0));
}

// The client's INVALIDATE loops over every index of its range, so it is sent only over what the client
// actually holds; a whole-list range ends at Number.MAX_SAFE_INTEGER and would never finish.
function invalidate(start: number, held: readonly string[]): ListOp[] {
  return held.length > 0 ? [{ op: 'INVALIDATE', range: [start, start + held.length - 1] }] : [];
}

// room_ids shares the view's array: views are never mutated once returned.
function sync(start: number, ids: string[]): ListOp[] {
  return ids.length > 0 ? [{ op: 'SYNC', range: [start, start + ids.length - 1], room_ids: ids }] : [];
}

function rangeKey([a, b]: Range): string {
  return `${a}:${b}`;
}

function diffViews(prev: ListView, next: ListView): ListOp[] {
  const held = new Map(prev.ranges.map((r, i) => [rangeKey(r), prev.ids[i] ?? []]));
  const wanted = new Set(next.ranges.map(rangeKey));
  // Dropped ranges go first: their entries would otherwise count towards the client's highest known index.
  const ops = byStart(prev)
    .filter((i) => !wanted.has(rangeKey(prev.ranges[i] ?? [0, 0])))
    .flatMap((i) => invalidate(prev.ranges[i]?.[0] ?? 0, prev.ids[i] ?? []));
  let growth = 0;
  const segments = next.ranges.map((range, i): Segment => {
    const now = next.ids[i] ?? [];
    const before = held.get(rangeKey(range));
    if (!before) return { start: range[0], ops: sync(range[0], now) };
    growth += now.length - before.length;
    return { start: range[0], ops: diffWindow(range[0], before, now) };
  });
  return ops.concat(orderSegments(segments, growth > 0).flatMap((s) => s.ops));
}

// Lone INSERTs and DELETEs make the client shift everything from the op's index up to the highest index it
// knows, across ranges. Window lengths all grow or all shrink with the list's count, and only ranges holding
// the list's end get lone ops. Growing: a lone INSERT must shift before any range above it is filled, or
// that range's rooms are shifted too (ascending). Shrinking: a lone DELETE's gap is closed at the next
// DELETE or the end of the response, up to the highest index; going down, every range above is already
// emptied by then. (Ascending would also work, but only because js-sdk deletes an entry before closing the
// previous gap.) With no growth there are no lone ops and the order is free.
function orderSegments(segments: Segment[], grew: boolean): Segment[] {
  return segments.sort((x, y) => (grew ? x.start - y.start : y.start - x.start));
}

function diffWindow(start: number, before: readonly string[], now: string[]): ListOp[] {
  if (sameIds(before, now)) return [];
  if (before.length === now.length) return movePairs(start, before, now) ?? rewrite(start, before, now);
  if (now.length === before.length + 1) {
    const i = soleExtra(now, before);
    const id = now[i];
    if (id !== undefined) return [{ op: 'INSERT', index: start + i, room_id: id }];
  }
  if (before.length === now.length + 1) {
    const i = soleExtra(before, now);
    if (i >= 0) return [{ op: 'DELETE', index: start + i }];
  }
  return rewrite(start, before, now);
}

function rewrite(start: number, before: readonly string[], now: string[]): ListOp[] {
  return [...invalidate(start, before), ...sync(start, now)];
}

function sameIds(x: readonly string[], y: readonly string[]): boolean {
  return x.length === y.length && x.every((id, i) => id === y[i]);
}

/** The index whose removal from `longer` leaves `shorter`, or -1 when there is none. */
function soleExtra(longer: readonly string[], shorter: readonly string[]): number {
  let i = 0;
  while (i < shorter.length && longer[i] === shorter[i]) i++;
  for (let j = i; j < shorter.length; j++) if (longer[j + 1] !== shorter[j]) return -1;
  return i;
}

/**
 * DELETE/INSERT pairs turning `before` into `now` (same length), each pair moving or replacing one room
 * inside the window so the client only shifts between the pair's two indices. Rooms on a longest common
 * subsequence never move, so a single move costs one pair. Returns undefined when pairs would outnumber
 * the ids a rewrite sends: the client also pays for every pair with a shift over the window.
 */
function movePairs(start: number, before: readonly string[], now: readonly string[]): ListOp[] | undefined {
  const oldAt = new Map(before.map((id, i) => [id, i]));
  const kept = commonSubsequence(now, oldAt);
  if (2 * (now.length - kept.size) > now.length) return undefined;
  const slots = planSlots(before.length, now, oldAt, kept);
  const present = new Fenwick(slots.rank.length);
  for (let s = 0; s < before.length; s++) present.add(slots.rank[s] ?? 0, 1);
  const dropped = before.flatMap((id, i) => (slots.inNow.has(id) ? [] : [i]));
  const ops: ListOp[] = [];
  for (const [q, slot] of slots.moverSlots) {
    const id = now[q] ?? '';
    const own = oldAt.get(id);
    const victim = own ?? dropped.pop() ?? 0;
    const from = present.prefix(slots.rank[victim] ?? 0) - 1;
    present.add(slots.rank[victim] ?? 0, -1);
    present.add(slots.rank[slot] ?? 0, 1);
    const to = present.prefix(slots.rank[slot] ?? 0) - 1;
    if (own !== undefined && from === to) continue; // already in place: the pair would be a no-op
    ops.push({ op: 'DELETE', index: start + from }, { op: 'INSERT', index: start + to, room_id: id });
  }
  return ops;
}

/**
 * Ids of a longest common subsequence of the old and new window. Ids are unique, so this is a longest
 * increasing subsequence of old positions taken in new order: O(n log n) where the textbook LCS is O(n²).
 */
function commonSubsequence(now: readonly string[], oldAt: ReadonlyMap<string, number>): Set<string> {
  const seq = now.flatMap((id) => {
    const at = oldAt.get(id);
    return at === undefined ? [] : [{ id, at }];
  });
  const tails: number[] = [];
  const back = new Int32Array(seq.length);
  seq.forEach(({ at }, k) => {
    let lo = 0;
    let hi = tails.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((seq[tails[mid] ?? 0]?.at ?? 0) < at) lo = mid + 1;
      else hi = mid;
    }
    back[k] = lo > 0 ? (tails[lo - 1] ?? -1) : -1;
    tails[lo] = k;
  });
  const kept = new Set<string>();
  for (let k = tails.at(-1) ?? -1; k >= 0; k = back[k] ?? -1) kept.add(seq[k]?.id ?? '');
  return kept;
}

interface SlotPlan {
  /** Position of each slot in the one order that the simulated window always follows. */
  rank: Int32Array;
  /** New position in `now` → the slot its room moves into, ascending. */
  moverSlots: [number, number][];
  inNow: Set<string>;
}

// Each moving room is inserted right after its predecessor in `now`, which by then is in its final place
// (it either never moves or moved earlier in this ascending walk). Nothing else is ever inserted between a
// room and its predecessor, and removals do not break adjacency, so once every pair is applied the window
// is exactly `now`. Slots: 0..n-1 are the old positions, n.. the movers' new homes; threading the new
// homes into a linked list of the old ones gives a fixed order in which the window's contents always lie,
// so a Fenwick tree over that order turns "where is this room now" into a prefix count.
function planSlots(oldLength: number, now: readonly string[], oldAt: ReadonlyMap<string, number>, kept: Set<string>): SlotPlan {
  const head = oldLength + now.length - kept.size;
  const next = new Int32Array(head + 1).fill(-1);
  for (let s = 0; s < oldLength; s++) next[s] = s + 1 < oldLength ? s + 1 : -1;
  next[head] = oldLength > 0 ? 0 : -1;
  const slotOfNew = new Int32Array(now.length);
  const moverSlots: [number, number][] = [];
  now.forEach((id, q) => {
    if (kept.has(id)) {
      slotOfNew[q] = oldAt.get(id) ?? 0;
      return;
    }
    const slot = oldLength + moverSlots.length;
    const after = q === 0 ? head : (slotOfNew[q - 1] ?? head);
    next[slot] = next[after] ?? -1;
    next[after] = slot;
    slotOfNew[q] = slot;
    moverSlots.push([q, slot]);
  });
  const rank = new Int32Array(head);
  let r = 0;
  for (let s = next[head] ?? -1; s >= 0; s = next[s] ?? -1) rank[s] = ++r;
  return { rank, moverSlots, inNow: new Set(now) };
}

/** Counts of present slots by rank (1-based), for O(log n) "how many present before this one". */
class Fenwick {
  private readonly tree: Int32Array;

  constructor(size: number) {
    this.tree = new Int32Array(size + 1);
  }

  add(rank: number, delta: number): void {
    for (let i = rank; i < this.tree.length; i += i & -i) this.tree[i] = (this.tree[i] ?? 0) + delta;
  }

  prefix(rank: number): number {
    let sum = 0;
    for (let i = rank; i > 0; i -= i & -i) sum += this.tree[i] ?? 0;
    return sum;
  }
}
