// A client for MSC3575 list ops that behaves like matrix-js-sdk 37's SlidingSync (processListOps and its
// shift helpers), written independently so tests can check what a real client ends up showing. Quirks are
// kept on purpose, because the server has to cope with them: shifts copy `undefined` into tracked indices
// (leaving keys that still count towards the highest known index), only tracked indices are ever written,
// and DELETE removes its entry before closing the previous DELETE's gap.
import type { ListOp } from '../../src/sync/types.js';

export interface ListModel {
  /** The ranges of the request the ops answer: the client switches to them when it sends the request. */
  ranges: [number, number][];
  /** index → room id; a key may hold `undefined` after a shift, like the js-sdk's plain object. */
  entries: Map<number, string | undefined>;
}

/** The client would loop over every index of an INVALIDATE or SYNC range; refuse rather than hang a test. */
const MAX_LOOP = 1_000_000;

export function createListModel(): ListModel {
  return { ranges: [], entries: new Map() };
}

export function applyOps(model: ListModel, ranges: [number, number][], ops: readonly ListOp[]): void {
  model.ranges = ranges.map(([a, b]) => [a, b]);
  let gap = -1;
  for (const op of ops) {
    if (op.op === 'DELETE') {
      model.entries.delete(op.index);
      if (gap !== -1) removeEntry(model, gap);
      gap = op.index;
    } else if (op.op === 'INSERT') {
      if (model.entries.get(op.index)) makeRoom(model, op.index, gap);
      gap = -1; // an INSERT forgets the gap whether or not it had to shift
      model.entries.set(op.index, op.room_id);
    } else if (op.op === 'INVALIDATE') {
      guardLoop(op.range);
      for (let i = op.range[0]; i <= op.range[1]; i++) model.entries.delete(i);
    } else {
      guardLoop(op.range);
      for (let i = op.range[0]; i <= op.range[1]; i++) {
        const id = op.room_ids[i - op.range[0]];
        if (!id) break; // the room ids ran out: the end of the list
        model.entries.set(i, id);
      }
    }
  }
  if (gap !== -1) removeEntry(model, gap);
}

/** The room the client shows at `index`, or undefined where it shows nothing. */
export function modelRoomAt(model: ListModel, index: number): string | undefined {
  return model.entries.get(index);
}

/** The highest index the client holds a key for, `undefined` values included (as the js-sdk counts them). */
export function highestIndex(model: ListModel): number {
  let max = -1;
  for (const i of model.entries.keys()) if (i > max) max = i;
  return max;
}

function guardLoop([a, b]: [number, number]): void {
  if (b - a > MAX_LOOP) throw new Error(`client would loop over ${b - a + 1} indices for range [${a}, ${b}]`);
}

function isTracked(model: ListModel, i: number): boolean {
  return model.ranges.some(([a, b]) => a <= i && i <= b);
}

function makeRoom(model: ListModel, index: number, gap: number): void {
  if (gap < 0) addEntry(model, index);
  else if (gap > index) shiftRight(model, gap, index);
  else if (gap < index) shiftLeft(model, index, gap);
}

/** Moves (low, hi] up by one from below: hi is overwritten, low is left duplicated. */
function shiftRight(model: ListModel, hi: number, low: number): void {
  for (let i = hi; i > low; i--) if (isTracked(model, i)) model.entries.set(i, model.entries.get(i - 1));
}

/** Moves [low, hi) down by one from above: low is overwritten, hi is left duplicated. */
function shiftLeft(model: ListModel, hi: number, low: number): void {
  for (let i = low; i < hi; i++) if (isTracked(model, i)) model.entries.set(i, model.entries.get(i + 1));
}

function removeEntry(model: ListModel, index: number): void {
  const max = highestIndex(model);
  if (max < 0 || index > max) return;
  shiftLeft(model, max, index);
  model.entries.delete(max);
}

function addEntry(model: ListModel, index: number): void {
  const max = highestIndex(model);
  if (max < 0 || index > max) return;
  shiftRight(model, max + 1, index);
}
