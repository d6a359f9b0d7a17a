// MSC4186 room data through the whole proxy, as a property: after any sequence of joins,
// leaves, messages, renames, unread counts, typing, receipts, tags, DM changes and range
// changes, a client that keeps what one long-lived connection sent it (applying each response
// on top of the last) shows for every room in its window what a new connection is sent from
// scratch. Responses after the first are computed incrementally (only rooms that changed or
// entered a window are looked at), so this checks that nothing is skipped.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { createRoomState, member, message, stateEvent, syncResponse } from '../support/builders.js';
import { addUser, listIds, pushSync, type SsBody, slidingSync, startStack, type TestUser } from '../support/sliding-sync-client.js';

type Range = [number, number];
type Step =
  | { kind: 'join'; name: string }
  | { kind: 'leave'; pick: number }
  | { kind: 'message'; pick: number }
  | { kind: 'rename'; pick: number; name: string }
  | { kind: 'unread'; pick: number; n: number }
  | { kind: 'typing'; pick: number; typing: boolean }
  | { kind: 'receipt'; pick: number }
  | { kind: 'tag'; pick: number; tag: string }
  | { kind: 'dm'; pick: number }
  | { kind: 'range'; range: Range };

const name = fc.stringMatching(/^[a-z]{1,6}$/);
const range = fc.tuple(fc.integer({ min: 0, max: 4 }), fc.integer({ min: 0, max: 8 })).map(([a, b]): Range => [a, a + b]);
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 2, arbitrary: name.map((n) => ({ kind: 'join' as const, name: n })) },
  { weight: 1, arbitrary: fc.nat().map((pick) => ({ kind: 'leave' as const, pick })) },
  { weight: 4, arbitrary: fc.nat().map((pick) => ({ kind: 'message' as const, pick })) },
  { weight: 1, arbitrary: fc.tuple(fc.nat(), name).map(([pick, n]) => ({ kind: 'rename' as const, pick, name: n })) },
  { weight: 1, arbitrary: fc.tuple(fc.nat(), fc.nat(5)).map(([pick, n]) => ({ kind: 'unread' as const, pick, n })) },
  { weight: 1, arbitrary: fc.tuple(fc.nat(), fc.boolean()).map(([pick, typing]) => ({ kind: 'typing' as const, pick, typing })) },
  { weight: 1, arbitrary: fc.nat().map((pick) => ({ kind: 'receipt' as const, pick })) },
  { weight: 1, arbitrary: fc.tuple(fc.nat(), name).map(([pick, tag]) => ({ kind: 'tag' as const, pick, tag })) },
  { weight: 1, arbitrary: fc.nat().map((pick) => ({ kind: 'dm' as const, pick })) },
  { weight: 2, arbitrary: range.map((r) => ({ kind: 'range' as const, range: r })) },
);

/** What a client shows of a room, accumulated from responses. */
interface Shown {
  name?: string;
  latest?: string;
  notifications?: number;
  typing: string[];
  tags?: string;
}

function apply(shown: Map<string, Shown>, body: SsBody) {
  for (const [id, room] of Object.entries(body.rooms ?? {})) {
    const s: Shown = room.initial ? { typing: [] } : (shown.get(id) ?? { typing: [] });
    if (room.name !== undefined) s.name = room.name;
    const latest = room.timeline?.at(-1)?.event_id;
    if (latest) s.latest = latest;
    if (room.notification_count !== undefined) s.notifications = room.notification_count;
    shown.set(id, s);
  }
  for (const [id, t] of Object.entries(body.extensions?.typing?.rooms ?? {})) {
    const s = shown.get(id) ?? { typing: [] };
    s.typing = [...t.content.user_ids].sort();
    shown.set(id, s);
  }
  for (const [id, events] of Object.entries(body.extensions?.account_data?.rooms ?? {})) {
    const s = shown.get(id) ?? { typing: [] };
    for (const e of events) if (e.type === 'm.tag') s.tags = JSON.stringify(e.content);
    shown.set(id, s);
  }
}

const REQUEST = (r: Range) => ({
  lists: { all: { ranges: [r], timeline_limit: 1, required_state: [['m.room.name', '']] } },
  extensions: { typing: { enabled: true }, receipts: { enabled: true }, account_data: { enabled: true } },
});

describe('MSC4186 room data (property)', () => {
  it('a client keeping what its connection sent shows what a new connection gets', { timeout: 240_000 }, async (t) => {
    const { fake, proxy } = await startStack(t);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(range, fc.array(step, { minLength: 3, maxLength: 10 }), async (initialRange, steps) => {
        run++;
        const me = `@u${run}:fake`;
        const rooms: string[] = [];
        const latest = new Map<string, string>();
        let next = 0;
        const join: Record<string, unknown> = {};
        for (const n of ['seed', 'other', 'third']) {
          const id = `!r${run}x${next++}:fake`;
          const msg = message(`hi ${n}`, me);
          join[id] = { state: createRoomState(id, me, { name: n }), timeline: [msg] };
          rooms.push(id);
          latest.set(id, msg.event_id);
        }
        const user: TestUser = addUser(fake, me, 'D', syncResponse({ join: join as never }));
        const shown = new Map<string, Shown>();
        const left = new Set<string>();
        let current = initialRange;
        let pos: string | undefined;
        const check = async (label: string) => {
          const res = await slidingSync(proxy, user.token, { conn_id: 'main', ...REQUEST(current) }, { pos, timeout: 0 });
          assert.equal(res.status, 200, JSON.stringify(res.body));
          pos = res.body.pos;
          apply(shown, res.body);
          const fresh = await slidingSync(proxy, user.token, { conn_id: 'fresh', ...REQUEST(current) }, { timeout: 0 });
          assert.equal(fresh.status, 200, JSON.stringify(fresh.body));
          const scratch = new Map<string, Shown>();
          apply(scratch, fresh.body);
          // A room the user just left is listed once more (in the response covering the leave):
          // then the windows differ, and rooms are compared where both list them.
          const window = listIds(res.body, 'all').filter((id) => !left.has(id));
          const freshWindow = listIds(fresh.body, 'all');
          if (res.body.lists.all?.count === fresh.body.lists.all?.count) assert.deepEqual(window, freshWindow, `window after ${label}`);
          for (const id of window.filter((x) => freshWindow.includes(x))) {
            const a = shown.get(id);
            const b = scratch.get(id);
            assert.ok(a, `${id} never sent (after ${label})`);
            assert.deepEqual(
              { name: a.name, latest: a.latest, notifications: a.notifications ?? 0, typing: a.typing, tags: a.tags },
              { name: b?.name, latest: b?.latest, notifications: b?.notifications ?? 0, typing: b?.typing ?? [], tags: b?.tags },
              `${id} after ${label} of ${JSON.stringify(steps)}`,
            );
          }
        };
        await check('the first request');
        for (const [i, s] of steps.entries()) {
          if (s.kind === 'range') current = s.range;
          else {
            const body = upstream(s, { rooms, latest, left, me, newRoom: () => `!r${run}x${next++}:fake` });
            if (body) await pushSync(fake, user, body);
          }
          await check(`step ${i} (${s.kind})`);
        }
      }),
      { numRuns: 12 },
    );
  });
});

interface World {
  rooms: string[];
  latest: Map<string, string>;
  left: Set<string>;
  me: string;
  newRoom: () => string;
}

/** The v2 body for a step, and its effect on what the test knows. */
function upstream(s: Exclude<Step, { kind: 'range' }>, w: World) {
  if (s.kind === 'join') {
    const id = w.newRoom();
    const msg = message('new', w.me);
    w.rooms.push(id);
    w.latest.set(id, msg.event_id);
    return syncResponse({ join: { [id]: { state: createRoomState(id, w.me, { name: s.name }), timeline: [msg] } } });
  }
  const joined = w.rooms.filter((id) => !w.left.has(id));
  const id = joined.length ? joined[s.pick % joined.length] : undefined;
  if (!id) return undefined;
  switch (s.kind) {
    case 'leave': {
      w.left.add(id);
      return syncResponse({ leave: { [id]: { timeline: [member(w.me, 'leave')] } } });
    }
    case 'message':
    case 'rename': {
      const ev = s.kind === 'message' ? message('more', w.me) : stateEvent('m.room.name', '', { name: s.name }, w.me);
      w.latest.set(id, ev.event_id);
      return syncResponse({ join: { [id]: { timeline: [ev] } } });
    }
    case 'unread':
      return syncResponse({ join: { [id]: { timeline: [], unread: { notification_count: s.n, highlight_count: 0 } } } });
    case 'typing':
      return syncResponse({
        join: { [id]: { timeline: [], ephemeral: [{ type: 'm.typing', content: { user_ids: s.typing ? ['@bob:fake'] : [] } }] } },
      });
    case 'receipt': {
      const receipt = { [w.latest.get(id) as string]: { 'm.read': { '@bob:fake': { ts: 1 } } } };
      return syncResponse({ join: { [id]: { timeline: [], ephemeral: [{ type: 'm.receipt', content: receipt }] } } });
    }
    case 'tag':
      return syncResponse({
        join: { [id]: { timeline: [], accountData: [{ type: 'm.tag', content: { tags: { [`u.${s.tag}`]: {} } } }] } },
      });
    case 'dm':
      return syncResponse({ accountData: [{ type: 'm.direct', content: { '@bob:fake': [id] } }] });
  }
}
