// Timelines as deep as asked: a device's first poll holds one event per room, so a room with
// history from before the proxy's first contact is fetched from the homeserver's /messages when
// a timeline asks for more, once for everyone, and served in the room's order, on both protocols;
// bounded (one request per room and gap, a budget per response), never live news, and only
// what history visibility lets each user see.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type ClientEvent, createRoomState, member, message, stateEvent, syncResponse } from '../support/builders.js';
import type { HistoryOptions, RoomHistory } from '../support/fake-homeserver.js';
import { addUser, pushSync, type SsRoom, slidingSync, startStack, type TestUser } from '../support/sliding-sync-client.js';

const ME = '@alice:fake';
const BOB = '@bob:fake';
const CAROL = '@carol:fake';
const ROOM = '!old:fake';
const PATHS = {
  msc4186: '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync',
  msc3575: '/_matrix/client/unstable/org.matrix.msc3575/sync',
} as const;

const ids = (room: SsRoom | undefined) => (room?.timeline ?? []).map((e) => e.event_id);
const lastIds = (events: ClientEvent[], n: number) => events.slice(-n).map((e) => e.event_id);

interface OldRoom {
  history: RoomHistory;
  /** The room's whole history, oldest first. */
  events: ClientEvent[];
  alice: TestUser;
  /** Alice's first v2 response, for other devices to start from too. */
  initial: ReturnType<typeof syncResponse>;
}

/**
 * A room whose state and `messages` messages happened before Alice's first poll, which shows
 * the last event only (limited, with the token from just before it).
 */
function oldRoom(
  fake: Parameters<typeof addUser>[0],
  messages: number,
  opts: { state?: ClientEvent[]; extra?: ClientEvent[]; history?: HistoryOptions } = {},
): OldRoom {
  const state = opts.state ?? createRoomState(ROOM, ME);
  const said = Array.from({ length: messages }, (_, i) => message(`m${i + 1}`, [ME, BOB, CAROL][i % 3]));
  const events = [...state, ...(opts.extra ?? []), ...said];
  const history = fake.serveHistory(ROOM, events, opts.history);
  const last = events.length - 1;
  const stateBlock = events.slice(0, last).filter((e) => e.state_key !== undefined);
  const initial = syncResponse({
    join: { [ROOM]: { state: stateBlock, timeline: [events[last] as ClientEvent], limited: true, prevBatch: history.before(last) } },
  });
  return { history, events, alice: addUser(fake, ME, 'A', initial), initial };
}

const sub = (limit: number, extra: Record<string, unknown> = {}) => ({
  room_subscriptions: { [ROOM]: { timeline_limit: limit, required_state: [], ...extra } },
});

async function open(proxy: { url: string }, user: TestUser, connId: string, limit: number, protocol: keyof typeof PATHS = 'msc4186') {
  const res = await slidingSync(proxy, user.token, { conn_id: connId, ...sub(limit) }, { path: PATHS[protocol] });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.rooms[ROOM];
}

describe('timelines as deep as asked', () => {
  for (const protocol of ['msc4186', 'msc3575'] as const) {
    it(`${protocol}: serves the last N events of history from before the first contact, for N = 1, 3, 5, 20`, async (t) => {
      const { fake, proxy } = await startStack(t);
      const { history, events, alice } = oldRoom(fake, 30);
      const one = await open(proxy, alice, 'n1', 1, protocol);
      assert.deepEqual(ids(one), lastIds(events, 1));
      assert.equal(history.requests.length, 0, 'one event asked, one stored: no fetch');
      for (const n of [3, 5, 20]) {
        const room = await open(proxy, alice, `n${n}`, n, protocol);
        assert.deepEqual(ids(room), lastIds(events, n), `timeline_limit ${n}`);
        assert.equal(room?.limited, true, 'older history remains');
        assert.equal(room?.prev_batch, history.before(events.length - n), 'the token from just before the oldest served event');
      }
      assert.equal(history.requests.length, 3, 'each deeper timeline fetched only what was missing');
      assert.deepEqual(
        history.requests.map((r) => Number(r.query.limit)),
        [2, 2, 15],
      );
      assert.ok(
        history.requests.every((r) => r.token === alice.token),
        "with the device's own token",
      );
      // Stored for good: asked again, nothing is fetched.
      assert.deepEqual(ids(await open(proxy, alice, 'again', 20, protocol)), lastIds(events, 20));
      assert.equal(history.requests.length, 3);
    });
  }

  it("reaches the room's start: state events in their place, not limited, no gap left", async (t) => {
    const { fake, proxy } = await startStack(t);
    const { history, events, alice } = oldRoom(fake, 3, { extra: [stateEvent('m.room.name', '', { name: 'Old times' })] });
    assert.ok(events.length < 20);
    const room = await open(proxy, alice, 'all', 20);
    assert.deepEqual(ids(room), lastIds(events, events.length), 'create, members, power levels, name and messages in order');
    assert.equal(room?.limited, false);
    assert.equal(history.requests.length, 1);
    await open(proxy, alice, 'all-again', 50);
    assert.equal(history.requests.length, 1, 'the start of the room needs no more fetching');
  });

  it('$LAZY members follow the deeper timeline', async (t) => {
    const { fake, proxy } = await startStack(t);
    const state = [...createRoomState(ROOM, ME), member(BOB, 'join'), member(CAROL, 'join')];
    const { events, alice } = oldRoom(fake, 6, { state });
    const res = await slidingSync(proxy, alice.token, sub(5, { required_state: [['m.room.member', '$LAZY']] }));
    const room = res.body.rooms[ROOM];
    assert.deepEqual(ids(room), lastIds(events, 5));
    const members = (room?.required_state ?? []).filter((e) => e.type === 'm.room.member').map((e) => e.state_key);
    assert.deepEqual(members.sort(), [ME, BOB, CAROL].sort(), 'the senders of the fetched events too');
  });

  it('makes one upstream request however many connections ask for the same room at once', async (t) => {
    let opened!: () => void;
    const gate = new Promise<void>((resolve) => {
      opened = resolve;
    });
    let asks = 0;
    let allAsked!: () => void;
    const twentyAsked = new Promise<void>((resolve) => {
      allAsked = resolve;
    });
    const { fake, proxy } = await startStack(t, {
      history: {
        budgetMs: 30_000,
        onAsk: () => {
          if (++asks === 20) allAsked();
        },
      },
    });
    const { history, events, alice, initial } = oldRoom(fake, 30, { history: { gate: () => gate } });
    // Two devices of ten connections each (a device keeps ten at most), after their first polls.
    const other = addUser(fake, ME, 'B', initial);
    await open(proxy, alice, 'first', 1);
    await open(proxy, other, 'first', 1);
    const pending = Array.from({ length: 20 }, (_, i) => open(proxy, i % 2 ? alice : other, `c${i}`, 20));
    await twentyAsked;
    opened();
    for (const room of await Promise.all(pending)) assert.deepEqual(ids(room), lastIds(events, 20));
    assert.equal(history.requests.length, 1);
  });

  for (const failure of ['error', 'timeout'] as const) {
    it(`on upstream ${failure}, serves what is stored, limited, with the exact prev_batch`, async (t) => {
      let opened!: () => void;
      const gate = new Promise<void>((resolve) => {
        opened = resolve;
      });
      const { fake, proxy } = await startStack(t, { history: { budgetMs: 200 } });
      const fail = failure === 'error' ? { status: 500, body: { errcode: 'M_UNKNOWN', error: 'boom' } } : undefined;
      const { history, events, alice } = oldRoom(fake, 10, { history: failure === 'error' ? { fail } : { gate: () => gate } });
      const room = await open(proxy, alice, 'x', 5);
      assert.deepEqual(ids(room), lastIds(events, 1));
      assert.equal(room?.limited, true);
      assert.equal(room?.prev_batch, history.before(events.length - 1));
      assert.equal(history.requests.length, 1);
      if (failure === 'timeout') {
        // The fetch outlives the response's budget and serves the next one.
        opened();
        const later = await waitForDepth(proxy, alice, 5);
        assert.deepEqual(ids(later), lastIds(events, 5));
        assert.equal(history.requests.length, 1);
      } else {
        await open(proxy, alice, 'y', 5);
        assert.equal(history.requests.length, 1, 'a failed gap is not asked again at once');
      }
    });
  }

  it('never delivers fetched history as news to an open connection', async (t) => {
    const { fake, proxy } = await startStack(t);
    const { events, alice } = oldRoom(fake, 10);
    const listReq = { conn_id: 'list', lists: { all: { ranges: [[0, 9]], timeline_limit: 1, required_state: [] } } };
    const first = await slidingSync(proxy, alice.token, listReq);
    assert.deepEqual(ids(first.body.rooms[ROOM]), lastIds(events, 1));
    assert.deepEqual(ids(await open(proxy, alice, 'deep', 8)), lastIds(events, 8));
    const quiet = await slidingSync(proxy, alice.token, listReq, { pos: first.body.pos, timeout: 0 });
    assert.equal(quiet.body.rooms?.[ROOM], undefined, 'nothing new happened in the room');
    const live = message('live');
    await pushSync(fake, alice, syncResponse({ join: { [ROOM]: { timeline: [live] } } }));
    const next = await slidingSync(proxy, alice.token, listReq, { pos: quiet.body.pos, timeout: 0 });
    assert.deepEqual(ids(next.body.rooms[ROOM]), [live.event_id]);
    assert.equal(next.body.rooms[ROOM]?.limited, false);
  });

  it("does not show a late joiner history that `joined` visibility hides, though another user's fetch stored it", async (t) => {
    const { fake, proxy } = await startStack(t);
    const state = [...createRoomState(ROOM, ME, { historyVisibility: 'joined' })];
    const bobJoin = member(BOB, 'join');
    const before = Array.from({ length: 6 }, (_, i) => message(`before ${i}`));
    const after = [message('after 1', BOB), message('after 2')];
    const events = [...state, ...before, bobJoin, ...after];
    const history = fake.serveHistory(ROOM, events);
    const last = events.length - 1;
    const stateBlock = [...state, bobJoin];
    const initial = syncResponse({
      join: { [ROOM]: { state: stateBlock, timeline: [events[last] as ClientEvent], limited: true, prevBatch: history.before(last) } },
    });
    const alice = addUser(fake, ME, 'A', initial);
    assert.deepEqual(ids(await open(proxy, alice, 'a', 20)), lastIds(events, events.length), 'Alice was there all along');
    const bob = addUser(fake, BOB, 'B', initial);
    const room = await open(proxy, bob, 'b', 20);
    // The room's first events, up to and including the change to `joined`, were `shared` (the
    // default) as Synapse judges them too; the messages before his join were not.
    const seen = ids(room);
    assert.deepEqual(
      seen.slice(-3),
      [bobJoin, ...after].map((e) => e.event_id),
      'from his join on',
    );
    assert.deepEqual(
      seen.slice(0, -3),
      state.map((e) => e.event_id),
    );
    assert.ok(before.every((e) => !seen.includes(e.event_id)));
    assert.equal(history.requests.length, 1, "Bob's timeline needs nothing fetched");
  });

  it('does not show history fetched by others to a user who joined after the first contact, under `joined` visibility', async (t) => {
    const { fake, proxy } = await startStack(t);
    const { events, alice } = oldRoom(fake, 12, { state: createRoomState(ROOM, ME, { historyVisibility: 'joined' }) });
    assert.deepEqual(ids(await open(proxy, alice, 'a', 10)), lastIds(events, 10));
    // Bob joins now, live: his own first poll sees his join and what follows.
    const bobJoin = member(BOB, 'join');
    const hello = message('hello', BOB);
    await pushSync(fake, alice, syncResponse({ join: { [ROOM]: { timeline: [bobJoin, hello] } } }));
    const bob = addUser(
      fake,
      BOB,
      'B',
      syncResponse({
        join: {
          [ROOM]: {
            state: events.filter((e) => e.state_key !== undefined),
            timeline: [bobJoin, hello],
            limited: true,
            prevBatch: 'before-bob',
          },
        },
      }),
    );
    const room = await open(proxy, bob, 'b', 20);
    assert.deepEqual(ids(room), [bobJoin.event_id, hello.event_id], 'nothing from before his join');
  });

  it('leaves a gap in the middle of the stored timeline to the client: limited, with its token, nothing fetched', async (t) => {
    const { fake, proxy } = await startStack(t);
    const { history, events, alice } = oldRoom(fake, 3);
    await open(proxy, alice, 'first', 1);
    const later = [message('after the gap 1'), message('after the gap 2')];
    await pushSync(fake, alice, syncResponse({ join: { [ROOM]: { timeline: later, limited: true, prevBatch: 'mid-gap' } } }));
    const room = await open(proxy, alice, 'deep', 10);
    assert.deepEqual(
      ids(room),
      later.map((e) => e.event_id),
    );
    assert.equal(room?.limited, true);
    assert.equal(room?.prev_batch, 'mid-gap');
    assert.equal(history.requests.length, 0);
    assert.ok(events.length > 0);
  });

  it('tells a user whose visible history is all stored that the timeline is not limited, without telling others so', async (t) => {
    const { fake, proxy } = await startStack(t);
    // A history without the room's create event: the homeserver stops (no `end`) before it, as
    // it does for a user who may see nothing older.
    const said = Array.from({ length: 4 }, (_, i) => message(`visible ${i}`));
    const state = createRoomState(ROOM, ME, { joined: [BOB] });
    const history = fake.serveHistory(ROOM, said);
    const initial = syncResponse({
      join: { [ROOM]: { state, timeline: [said.at(-1) as ClientEvent], limited: true, prevBatch: history.before(3) } },
    });
    const alice = addUser(fake, ME, 'A', initial);
    const room = await open(proxy, alice, 'a', 10);
    assert.deepEqual(
      ids(room),
      said.map((e) => e.event_id),
    );
    assert.equal(room?.limited, false, 'nothing older for her');
    assert.equal((await open(proxy, alice, 'a2', 10))?.limited, false, 'remembered');
    assert.equal(history.requests.length, 1);
    const bob = addUser(fake, BOB, 'B', initial);
    const bobs = await open(proxy, bob, 'b', 10);
    assert.deepEqual(
      ids(bobs),
      said.map((e) => e.event_id),
    );
    assert.equal(bobs?.limited, true, 'Bob may see more: the gap stays for him');
  });
});

/** A fresh connection per try until the room's timeline is `n` deep (a fetch finishing in the background). */
async function waitForDepth(proxy: { url: string }, user: TestUser, n: number): Promise<SsRoom | undefined> {
  for (let i = 0; i < 100; i++) {
    const room = await open(proxy, user, `wait${i}`, n);
    if ((room?.timeline?.length ?? 0) >= n) return room;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timeline never reached ${n} events`);
}
