// MSC3575 lists through the whole proxy, as a property: after any sequence of joins, leaves,
// new messages, renames, range changes and sort changes, a client that applies the ops it is
// sent (as matrix-js-sdk 37 does) shows exactly the server's list in its windows. The server's
// list is modelled here independently: recency is the order the test made things happen in,
// names are the names it gave.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { ListOp } from '../../src/sync/types.js';
import { createRoomState, member, message, stateEvent, syncResponse } from '../support/builders.js';
import { applyOps, createListModel, highestIndex, modelRoomAt } from '../support/list-model.js';
import { addUser, pushSync, slidingSync, startStack, type TestUser } from '../support/sliding-sync-client.js';

const PATH = '/_matrix/client/unstable/org.matrix.msc3575/sync';
type Range = [number, number];
type Sort = 'by_recency' | 'by_name';

type Step =
  | { kind: 'join'; name: string }
  | { kind: 'leave'; pick: number }
  | { kind: 'message'; pick: number }
  | { kind: 'rename'; pick: number; name: string }
  | { kind: 'ranges'; ranges: Range[] }
  | { kind: 'sort'; sort: Sort };

const name = fc.stringMatching(/^[a-z]{1,6}$/);
const ranges = fc.uniqueArray(fc.integer({ min: 0, max: 12 }), { minLength: 2, maxLength: 4 }).map((xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const out: Range[] = [];
  for (let i = 0; i + 1 < s.length; i += 2) out.push([s[i] as number, s[i + 1] as number]);
  return out;
});
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 3, arbitrary: name.map((n) => ({ kind: 'join' as const, name: n })) },
  { weight: 1, arbitrary: fc.nat().map((pick) => ({ kind: 'leave' as const, pick })) },
  { weight: 4, arbitrary: fc.nat().map((pick) => ({ kind: 'message' as const, pick })) },
  { weight: 1, arbitrary: fc.tuple(fc.nat(), name).map(([pick, n]) => ({ kind: 'rename' as const, pick, name: n })) },
  { weight: 1, arbitrary: ranges.map((r) => ({ kind: 'ranges' as const, ranges: r })) },
  { weight: 1, arbitrary: fc.constantFrom<Sort>('by_recency', 'by_name').map((sort) => ({ kind: 'sort' as const, sort })) },
);

/** The server's list as the test knows it. */
class Expected {
  rooms = new Map<string, { name: string; seq: number }>();
  #seq = 0;
  touch(roomId: string, roomName?: string) {
    const room = this.rooms.get(roomId);
    this.rooms.set(roomId, { name: roomName ?? room?.name ?? '', seq: ++this.#seq });
  }
  pick(n: number): string | undefined {
    const ids = [...this.rooms.keys()];
    return ids.length ? ids[n % ids.length] : undefined;
  }
  order(sort: Sort): string[] {
    const entries = [...this.rooms];
    if (sort === 'by_recency') return entries.sort(([, a], [, b]) => b.seq - a.seq).map(([id]) => id);
    return entries.sort(([ia, a], [ib, b]) => (a.name < b.name ? -1 : a.name > b.name ? 1 : ia < ib ? -1 : 1)).map(([id]) => id);
  }
}

describe('MSC3575 lists (property)', () => {
  it('a client applying the ops always shows the server list in its windows', { timeout: 240_000 }, async (t) => {
    const { fake, proxy } = await startStack(t);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(ranges, fc.array(step, { minLength: 3, maxLength: 8 }), async (initialRanges, steps) => {
        run++;
        const me = `@u${run}:fake`;
        const expected = new Expected();
        let next = 0;
        const newRoom = () => `!r${run}x${next++}:fake`;
        const join: Record<string, unknown> = {};
        for (const n of ['seed', 'other']) {
          const id = newRoom();
          join[id] = { state: createRoomState(id, me, { name: n }), timeline: [message(`hi ${n}`, me)] };
          expected.touch(id, n);
        }
        const user: TestUser = addUser(fake, me, 'D', syncResponse({ join: join as never }));
        let current = { ranges: initialRanges, sort: 'by_recency' as Sort };
        const model = createListModel();
        let pos: string | undefined;
        const sync = async (list: Record<string, unknown>) => {
          const res = await slidingSync(proxy, user.token, { lists: { l: list } }, { pos, timeout: 0, path: PATH });
          assert.equal(res.status, 200, JSON.stringify(res.body));
          pos = res.body.pos;
          applyOps(model, current.ranges, ((res.body.lists.l as { ops?: ListOp[] } | undefined)?.ops ?? []) as ListOp[]);
          const order = expected.order(current.sort);
          for (const [a, b] of current.ranges) {
            for (let i = a; i <= Math.max(b, highestIndex(model)); i++) {
              const inRange = current.ranges.some(([x, y]) => x <= i && i <= y);
              if (inRange) assert.equal(modelRoomAt(model, i), order[i], `index ${i} after ${JSON.stringify(steps)}`);
            }
          }
          assert.equal(res.body.lists.l?.count, order.length);
        };
        await sync({ ranges: current.ranges, sort: [current.sort], timeline_limit: 1 });
        for (const s of steps) {
          const list: Record<string, unknown> = { ranges: current.ranges };
          if (s.kind === 'ranges') {
            current = { ...current, ranges: s.ranges };
            list.ranges = s.ranges;
          } else if (s.kind === 'sort') {
            current = { ...current, sort: s.sort };
            list.sort = [s.sort];
          } else {
            const body = upstream(s, expected, newRoom, me);
            if (body) await pushSync(fake, user, body);
          }
          await sync(list);
        }
      }),
      { numRuns: 12 },
    );
  });
});

/** The v2 body for a room event step (and its effect on the expected list). */
function upstream(s: Step, expected: Expected, newRoom: () => string, me: string) {
  if (s.kind === 'join') {
    const id = newRoom();
    expected.touch(id, s.name);
    return syncResponse({ join: { [id]: { state: createRoomState(id, me, { name: s.name }), timeline: [message('new', me)] } } });
  }
  const id = 'pick' in s ? expected.pick(s.pick) : undefined;
  if (!id) return undefined;
  if (s.kind === 'leave') {
    expected.rooms.delete(id);
    return syncResponse({ leave: { [id]: { timeline: [member(me, 'leave')] } } });
  }
  if (s.kind === 'rename') {
    expected.touch(id, s.name);
    return syncResponse({ join: { [id]: { timeline: [stateEvent('m.room.name', '', { name: s.name }, me)] } } });
  }
  expected.touch(id);
  return syncResponse({ join: { [id]: { timeline: [message('more', me)] } } });
}
