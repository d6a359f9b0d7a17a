import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { logger as sdkLogger } from 'matrix-js-sdk-37/lib/logger.js';
import { SlidingSync } from 'matrix-js-sdk-37/lib/sliding-sync.js';
import { type ListOp, type ListView, listOps } from '../../../../src/sync/msc3575/list-ops.js';
import { applyOps, createListModel, highestIndex, type ListModel, modelRoomAt } from '../../../support/list-model.js';

type Range = [number, number];
const ALL: Range = [0, Number.MAX_SAFE_INTEGER];

// The js-sdk logs every op at debug level.
(sdkLogger as unknown as { setLevel(level: string): void }).setLevel('warn');

/** The private parts of js-sdk 37's SlidingSync that apply list ops, reached through a cast. */
interface SdkInternals {
  lists: Map<string, { updateListRange(ranges: number[][]): void; roomIndexToRoomId: Record<number, string | undefined> }>;
  processListOps(list: { count: number; ops: ListOp[] }, key: string): void;
}

function sdkEntries(sdk: SdkInternals): [number, string | undefined][] {
  return Object.entries(sdk.lists.get('l')?.roomIndexToRoomId ?? {}).map(([k, v]): [number, string | undefined] => [Number(k), v]);
}

function rooms(n: number, prefix = '!r'): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}${i}`);
}

function moved(list: readonly string[], from: number, to: number): string[] {
  const out = [...list];
  const [id] = out.splice(from, 1);
  if (id !== undefined) out.splice(to, 0, id);
  return out;
}

/**
 * One client following one list: the server's view, our model of the client, and the real js-sdk 37 list
 * logic, all fed the same ops; every response checks the model shows the list and agrees with the js-sdk.
 */
class Harness {
  view: ListView | undefined;
  readonly model: ListModel = createListModel();
  private readonly sdk: SdkInternals;

  constructor() {
    const sdk = new SlidingSync('http://unused', new Map([['l', { ranges: [] }]]), {}, {} as never, 1000);
    this.sdk = sdk as unknown as SdkInternals;
  }

  respond(ranges: Range[], ordered: readonly string[], reset = false): ListOp[] {
    const { ops, view } = listOps(this.view, ranges, ordered, reset);
    this.view = view;
    applyOps(this.model, ranges, ops);
    this.sdk.lists.get('l')?.updateListRange(ranges);
    this.sdk.processListOps({ count: ordered.length, ops: structuredClone(ops) }, 'l');
    this.check(ranges, ordered);
    return ops;
  }

  private check(ranges: Range[], ordered: readonly string[]): void {
    const top = Math.max(ordered.length - 1, highestIndex(this.model));
    for (const [a, b] of ranges) {
      for (let i = a; i <= Math.min(b, top); i++) assert.equal(modelRoomAt(this.model, i), ordered[i], `client index ${i}`);
    }
    assert.deepEqual(
      this.view?.ids,
      ranges.map(([a, b]) => ordered.slice(a, b + 1)),
      'view is what the client holds',
    );
    const modelEntries = [...this.model.entries].sort(([x], [y]) => x - y);
    assert.deepEqual(sdkEntries(this.sdk), modelEntries, 'model matches js-sdk 37');
  }
}

function respondOnce(prevRanges: Range[], before: readonly string[], ranges: Range[], after: readonly string[]): ListOp[] {
  const h = new Harness();
  h.respond(prevRanges, before);
  return h.respond(ranges, after);
}

describe('listOps', () => {
  it('syncs a new client, clamping ranges to the list and skipping ones beyond it', () => {
    const h = new Harness();
    assert.deepEqual(h.respond([[0, 9]], rooms(3)), [{ op: 'SYNC', range: [0, 2], room_ids: rooms(3) }]);
    const h2 = new Harness();
    assert.deepEqual(
      h2.respond(
        [
          [5, 9],
          [0, 1],
        ],
        rooms(3),
      ),
      [{ op: 'SYNC', range: [0, 1], room_ids: ['!r0', '!r1'] }],
    );
    assert.deepEqual(h2.view?.ids, [[], ['!r0', '!r1']]);
  });

  it('invalidates what the client holds and syncs afresh on reset', () => {
    const h = new Harness();
    h.respond([[0, 9]], rooms(5));
    const shuffled = ['!r3', '!r0', '!r4', '!r1', '!r2'];
    assert.deepEqual(h.respond([[0, 9]], shuffled, true), [
      { op: 'INVALIDATE', range: [0, 4] },
      { op: 'SYNC', range: [0, 4], room_ids: shuffled },
    ]);
  });

  it('syncs an added range and leaves the kept one alone', () => {
    const ops = respondOnce(
      [[0, 4]],
      rooms(20),
      [
        [0, 4],
        [10, 14],
      ],
      rooms(20),
    );
    assert.deepEqual(ops, [{ op: 'SYNC', range: [10, 14], room_ids: rooms(20).slice(10, 15) }]);
  });

  it('invalidates a removed range', () => {
    const ops = respondOnce(
      [
        [0, 4],
        [10, 14],
      ],
      rooms(20),
      [[0, 4]],
      rooms(20),
    );
    assert.deepEqual(ops, [{ op: 'INVALIDATE', range: [10, 14] }]);
  });

  it('invalidates and resyncs a changed range', () => {
    assert.deepEqual(respondOnce([[0, 4]], rooms(20), [[0, 9]], rooms(20)), [
      { op: 'INVALIDATE', range: [0, 4] },
      { op: 'SYNC', range: [0, 9], room_ids: rooms(10) },
    ]);
  });

  it('moves a room to the top from inside the window', () => {
    assert.deepEqual(respondOnce([[0, 4]], rooms(10), [[0, 4]], moved(rooms(10), 3, 0)), [
      { op: 'DELETE', index: 3 },
      { op: 'INSERT', index: 0, room_id: '!r3' },
    ]);
  });

  it('moves a room to the top from outside the window, pushing the last one out', () => {
    assert.deepEqual(respondOnce([[0, 4]], rooms(10), [[0, 4]], moved(rooms(10), 7, 0)), [
      { op: 'DELETE', index: 4 },
      { op: 'INSERT', index: 0, room_id: '!r7' },
    ]);
  });

  it('shifts a window that a room jumps over on its way to the top', () => {
    assert.deepEqual(respondOnce([[5, 9]], rooms(20), [[5, 9]], moved(rooms(20), 12, 0)), [
      { op: 'DELETE', index: 9 },
      { op: 'INSERT', index: 5, room_id: '!r4' },
    ]);
  });

  it('moves a room down and out of the window, pulling the next one in', () => {
    assert.deepEqual(respondOnce([[0, 4]], rooms(10), [[0, 4]], moved(rooms(10), 1, 8)), [
      { op: 'DELETE', index: 1 },
      { op: 'INSERT', index: 4, room_id: '!r5' },
    ]);
  });

  it('moves a room across two ranges with one pair per range, the higher range first', () => {
    const ranges: Range[] = [
      [0, 4],
      [10, 14],
    ];
    assert.deepEqual(respondOnce(ranges, rooms(20), ranges, moved(rooms(20), 12, 0)), [
      { op: 'DELETE', index: 12 },
      { op: 'INSERT', index: 10, room_id: '!r9' },
      { op: 'DELETE', index: 4 },
      { op: 'INSERT', index: 0, room_id: '!r12' },
    ]);
  });

  it('inserts a new room into an empty list', () => {
    assert.deepEqual(respondOnce([[0, 9]], [], [[0, 9]], ['!new']), [{ op: 'INSERT', index: 0, room_id: '!new' }]);
  });

  it('deletes the last room leaving', () => {
    assert.deepEqual(respondOnce([[0, 9]], ['!r0'], [[0, 9]], []), [{ op: 'DELETE', index: 0 }]);
  });

  it('inserts and deletes alone inside a partly filled window', () => {
    assert.deepEqual(respondOnce([[0, 9]], rooms(5), [[0, 9]], ['!r0', '!r1', '!new', '!r2', '!r3', '!r4']), [
      { op: 'INSERT', index: 2, room_id: '!new' },
    ]);
    assert.deepEqual(respondOnce([[0, 9]], rooms(5), [[0, 9]], ['!r0', '!r2', '!r3', '!r4']), [{ op: 'DELETE', index: 1 }]);
  });

  it('inserts ascending when the list grows into two adjacent ranges at once', () => {
    const ranges: Range[] = [
      [0, 4],
      [5, 9],
    ];
    const after = ['!a', ...rooms(4), '!b'];
    assert.deepEqual(respondOnce(ranges, rooms(4), ranges, after), [
      { op: 'INSERT', index: 0, room_id: '!a' },
      { op: 'INSERT', index: 5, room_id: '!b' },
    ]);
  });

  it('deletes descending when the list shrinks out of two adjacent ranges at once', () => {
    const ranges: Range[] = [
      [0, 4],
      [5, 9],
    ];
    assert.deepEqual(respondOnce(ranges, rooms(6), ranges, ['!r0', '!r2', '!r3', '!r4']), [
      { op: 'DELETE', index: 5 },
      { op: 'DELETE', index: 1 },
    ]);
  });

  it('replaces a leaving room in a full window with the next one shifting in', () => {
    const after = rooms(10).filter((id) => id !== '!r2');
    assert.deepEqual(respondOnce([[0, 4]], rooms(10), [[0, 4]], after), [
      { op: 'DELETE', index: 2 },
      { op: 'INSERT', index: 4, room_id: '!r5' },
    ]);
  });

  it('sends nothing when nothing the client holds changed', () => {
    const after = [...rooms(10), '!later'];
    assert.deepEqual(respondOnce([[0, 4]], rooms(10), [[0, 4]], after), []);
  });

  it('rewrites a partly filled window with several changes', () => {
    assert.deepEqual(respondOnce([[0, 9]], rooms(5), [[0, 9]], ['!a', '!r0', '!b', '!r1']), [
      { op: 'INVALIDATE', range: [0, 4] },
      { op: 'SYNC', range: [0, 3], room_ids: ['!a', '!r0', '!b', '!r1'] },
    ]);
  });

  it('rewrites a window where pairs would outnumber its rooms', () => {
    const after = rooms(6).reverse();
    assert.deepEqual(respondOnce([[0, 5]], rooms(6), [[0, 5]], after), [
      { op: 'INVALIDATE', range: [0, 5] },
      { op: 'SYNC', range: [0, 5], room_ids: after },
    ]);
  });

  it('follows the whole list as it grows, shrinks and reorders', () => {
    const h = new Harness();
    let list = rooms(5);
    assert.deepEqual(h.respond([ALL], list), [{ op: 'SYNC', range: [0, 4], room_ids: list }]);
    list = ['!r0', '!r1', '!new', '!r2', '!r3', '!r4'];
    assert.deepEqual(h.respond([ALL], list), [{ op: 'INSERT', index: 2, room_id: '!new' }]);
    list = moved(list, 5, 0);
    assert.deepEqual(h.respond([ALL], list), [
      { op: 'DELETE', index: 5 },
      { op: 'INSERT', index: 0, room_id: '!r4' },
    ]);
    list = list.filter((id) => id !== '!r1');
    assert.deepEqual(h.respond([ALL], list), [{ op: 'DELETE', index: 2 }]);
    assert.deepEqual(h.respond([ALL], [], true), [{ op: 'INVALIDATE', range: [0, 4] }]);
    assert.deepEqual(h.respond([ALL], ['!x', '!y']), [{ op: 'SYNC', range: [0, 1], room_ids: ['!x', '!y'] }]);
  });

  it('keeps 10,000-room windows fast', () => {
    const list = rooms(10_000);
    const { view } = listOps(undefined, [ALL], list, false);
    let busy = list;
    for (let i = 0; i < 2_000; i++) busy = moved(busy, (i * 7919) % busy.length, 0);
    const started = performance.now();
    assert.equal(listOps(view, [ALL], moved(list, 9_000, 0), false).ops.length, 2);
    const many = listOps(view, [ALL], busy, false);
    const elapsed = performance.now() - started;
    assert.ok(many.ops.length <= 4_000, `${many.ops.length} ops`);
    assert.ok(elapsed < 500, `took ${elapsed.toFixed(0)} ms`);
  });

  it('keeps a 10,000-room client right through a burst of moves', () => {
    const h = new Harness();
    let list = rooms(10_000);
    h.respond([ALL], list);
    for (let i = 0; i < 200; i++) list = moved(list, (i * 7919) % list.length, (i * 31) % 50);
    assert.ok(h.respond([ALL], list).length <= 400);
  });
});

// ---- property test ----

// Joins and leaves can count from the end so that lists often grow or shrink across range boundaries,
// where lone INSERTs and DELETEs meet the client's whole-list shifts.
type Mutation =
  | { kind: 'join'; at: number; fromEnd: boolean }
  | { kind: 'leave'; at: number; fromEnd: boolean }
  | { kind: 'bump'; at: number }
  | { kind: 'move'; from: number; to: number };

interface Step {
  mutations: Mutation[];
  ranges: Range[] | null;
  resetSeed: number | null;
}

const rangesArb: fc.Arbitrary<Range[]> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .tuple(
        fc.array(fc.record({ gap: fc.oneof(fc.constant(0), fc.nat(8)), len: fc.nat(10) }), { minLength: 1, maxLength: 3 }),
        fc.boolean(),
      )
      .map(([parts, reversed]) => {
        let next = 0;
        const ranges = parts.map(({ gap, len }): Range => {
          const a = next + gap;
          next = a + len + 1;
          return [a, a + len];
        });
        return reversed ? ranges.reverse() : ranges;
      }),
  },
  { weight: 1, arbitrary: fc.constant<Range[]>([ALL]) },
);

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('join' as const), at: fc.nat(60), fromEnd: fc.boolean() }),
  fc.record({ kind: fc.constant('leave' as const), at: fc.nat(60), fromEnd: fc.boolean() }),
  fc.record({ kind: fc.constant('bump' as const), at: fc.nat(60) }),
  fc.record({ kind: fc.constant('move' as const), from: fc.nat(60), to: fc.nat(60) }),
);

const stepArb: fc.Arbitrary<Step> = fc.record({
  mutations: fc.array(mutationArb, { maxLength: 4 }),
  ranges: fc.oneof({ weight: 4, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: rangesArb }),
  resetSeed: fc.oneof({ weight: 7, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 2 ** 30 }) }),
});

// Lone ops only happen where the list ends inside a range, so lists often start near a range's end.
const sizeArb = fc.record({
  size: fc.integer({ min: 0, max: 40 }),
  nearEnd: fc.boolean(),
  nearRange: fc.nat(2),
  offset: fc.integer({ min: -2, max: 1 }),
});
type Sizing = { size: number; nearEnd: boolean; nearRange: number; offset: number };

function initialSize({ size, nearEnd, nearRange, offset }: Sizing, ranges: Range[]): number {
  const ends = ranges.map(([, b]) => b).filter((b) => b !== ALL[1]);
  const end = ends[nearRange % Math.max(1, ends.length)];
  return !nearEnd || end === undefined ? size : Math.max(0, end + 1 + offset);
}

function mutate(list: string[], m: Mutation, fresh: () => string): string[] {
  if (m.kind === 'join') {
    const at = m.fromEnd ? list.length - (m.at % 3) : m.at;
    const i = Math.max(0, at) % (list.length + 1);
    return [...list.slice(0, i), fresh(), ...list.slice(i)];
  }
  if (list.length === 0) return list;
  if (m.kind === 'leave') {
    const i = (m.fromEnd ? Math.max(0, list.length - 1 - (m.at % 3)) : m.at) % list.length;
    return list.filter((_, j) => j !== i);
  }
  if (m.kind === 'bump') return moved(list, m.at % list.length, 0);
  return moved(list, m.from % list.length, m.to % list.length);
}

/** A deterministic shuffle, standing in for a new sort order. */
function shuffle(list: string[], seed: number): string[] {
  const out = [...list];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j] ?? '', out[i] ?? ''];
  }
  return out;
}

const opArb: fc.Arbitrary<ListOp> = fc.oneof(
  fc.record({ op: fc.constant('DELETE' as const), index: fc.nat(25) }),
  fc.record({ op: fc.constant('INSERT' as const), index: fc.nat(25), room_id: fc.integer({ min: 0, max: 30 }).map((i) => `!p${i}`) }),
  fc.tuple(fc.nat(25), fc.nat(6)).map(([a, len]): ListOp => ({ op: 'INVALIDATE', range: [a, a + len] })),
  fc
    .tuple(fc.nat(25), fc.nat(6), fc.array(fc.integer({ min: 0, max: 30 }), { maxLength: 8 }))
    .map(([a, len, ids]): ListOp => ({ op: 'SYNC', range: [a, a + len], room_ids: ids.map((i) => `!p${i}`) })),
);

describe('the client model', () => {
  it('matches js-sdk 37 on arbitrary op sequences, not just the ones listOps sends', () => {
    const batchArb = fc.record({ ranges: rangesArb, ops: fc.array(opArb, { maxLength: 8 }) });
    fc.assert(
      fc.property(fc.array(batchArb, { minLength: 1, maxLength: 6 }), (batches) => {
        const model = createListModel();
        const sdk = new SlidingSync('http://unused', new Map([['l', { ranges: [] }]]), {}, {} as never, 1000) as unknown as SdkInternals;
        for (const { ranges, ops } of batches) {
          applyOps(model, ranges, ops);
          sdk.lists.get('l')?.updateListRange(ranges);
          sdk.processListOps({ count: 0, ops: structuredClone(ops) }, 'l');
          assert.deepEqual(
            sdkEntries(sdk),
            [...model.entries].sort(([x], [y]) => x - y),
          );
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('listOps against a js-sdk 37 client', () => {
  it('keeps the client showing the list through joins, leaves, moves, range changes and resets', () => {
    fc.assert(
      fc.property(sizeArb, rangesArb, fc.array(stepArb, { minLength: 1, maxLength: 12 }), (sizing, first, steps) => {
        let made = 0;
        const fresh = () => `!n${made++}`;
        const h = new Harness();
        let list = rooms(initialSize(sizing, first));
        let ranges = first;
        h.respond(ranges, list);
        for (const step of steps) {
          for (const m of step.mutations) list = mutate(list, m, fresh);
          if (step.resetSeed !== null) list = shuffle(list, step.resetSeed);
          ranges = step.ranges ?? ranges;
          h.respond(ranges, list, step.resetSeed !== null);
        }
      }),
      { numRuns: 400 },
    );
  });

  it('orders lone INSERTs and DELETEs so growing or shrinking across range ends stays right', () => {
    const edgeArb = fc.record({
      ranges: rangesArb,
      sizing: sizeArb,
      grow: fc.boolean(),
      at: fc.array(fc.tuple(fc.nat(60), fc.boolean()), { minLength: 1, maxLength: 3 }),
    });
    fc.assert(
      fc.property(edgeArb, ({ ranges, sizing, grow, at }) => {
        let made = 0;
        const fresh = () => `!n${made++}`;
        const h = new Harness();
        let list = rooms(initialSize({ ...sizing, nearEnd: true }, ranges));
        h.respond(ranges, list);
        for (const [i, fromEnd] of at) list = mutate(list, { kind: grow ? 'join' : 'leave', at: i, fromEnd }, fresh);
        h.respond(ranges, list);
      }),
      { numRuns: 300 },
    );
  });

  it('spends one DELETE/INSERT pair per window a single move changes', () => {
    fc.assert(
      fc.property(rangesArb, fc.nat(60), fc.nat(60), fc.nat(30), (ranges, from, to, spare) => {
        const finite = ranges.filter(([, b]) => b !== ALL[1]);
        const size = Math.max(0, ...finite.map(([, b]) => b)) + 1 + spare;
        const before = rooms(size);
        const after = moved(before, from % size, to % size);
        const ops = respondOnce(ranges, before, ranges, after);
        const changed = ranges.filter(([a, b]) => before.slice(a, b + 1).join() !== after.slice(a, b + 1).join()).length;
        assert.equal(ops.length, 2 * changed);
      }),
      { numRuns: 300 },
    );
  });
});
