// MSC4186 receipts (MSC3960) and typing (MSC3961) extensions through the whole proxy, with two
// users whose pollers share rooms: private receipts stay private, typing only reaches members.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRoomState, member, message, stripped, syncResponse } from '../support/builders.js';
import { addUser, bodies, pushSync, queueLater, type SsResult, slidingSync, startStack } from '../support/sliding-sync-client.js';

const ME = '@alice:fake';
const BOB = '@bob:fake';
const CAROL = '@carol:fake';
const receipt = (content: Record<string, unknown>) => ({ type: 'm.receipt', content });
const typing = (...userIds: string[]) => ({ type: 'm.typing', content: { user_ids: userIds } });
const range = (ranges: number[][]) => ({ lists: { main: { ranges, timeline_limit: 1, required_state: [] } } });
const receiptsOf = (res: SsResult, room: string) => res.body.extensions.receipts?.rooms?.[room];

describe('MSC4186 receipts', () => {
  it('sends m.read for rooms in scope, private receipts only to their owner, and keeps thread_id', async (t) => {
    const { fake, proxy, parked } = await startStack(t);
    const outMsg = message('out', BOB);
    const inMsg = message('in', BOB);
    const state = (id: string) => createRoomState(id, BOB, { joined: [ME, CAROL] });
    const aliceRooms = {
      '!out:fake': {
        state: state('!out:fake'),
        timeline: [outMsg],
        ephemeral: [receipt({ [outMsg.event_id]: { 'm.read': { [BOB]: { ts: 1 } } } })],
      },
      '!in:fake': {
        state: state('!in:fake'),
        timeline: [inMsg],
        ephemeral: [
          receipt({
            [inMsg.event_id]: {
              'm.read': { [BOB]: { ts: 10 }, [CAROL]: { ts: 11, thread_id: '$root' } },
              'm.read.private': { [ME]: { ts: 12 } },
            },
          }),
        ],
      },
    };
    const bobRooms = {
      '!out:fake': { state: state('!out:fake'), timeline: [outMsg] },
      '!in:fake': {
        state: state('!in:fake'),
        timeline: [inMsg],
        ephemeral: [receipt({ [inMsg.event_id]: { 'm.read.private': { [BOB]: { ts: 13 } } } })],
      },
    };
    const bob = addUser(fake, BOB, 'B', syncResponse({ join: bobRooms }));
    const alice = addUser(fake, ME, 'A', syncResponse({ join: aliceRooms }));
    assert.equal((await slidingSync(proxy, bob.token, range([[0, 9]]))).status, 200);
    const req = { ...range([[0, 0]]), extensions: { receipts: { enabled: true } } };
    const first = await slidingSync(proxy, alice.token, req);
    assert.deepEqual(Object.keys(first.body.extensions.receipts?.rooms ?? {}), ['!in:fake'], 'only rooms in scope');
    const ev = receiptsOf(first, '!in:fake');
    assert.equal(ev?.type, 'm.receipt');
    assert.deepEqual(ev?.content, {
      [inMsg.event_id]: {
        'm.read': { [BOB]: { ts: 10 }, [CAROL]: { ts: 11, thread_id: '$root' } },
        'm.read.private': { [ME]: { ts: 12 } },
      },
    });

    // A later receipt ends a long-poll, and only the change is sent.
    const waiting = parked();
    const poll = slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 10_000 });
    await waiting;
    const later = { '!in:fake': { ephemeral: [receipt({ [inMsg.event_id]: { 'm.read': { [CAROL]: { ts: 20 } } } })] } };
    await queueLater(fake, alice, syncResponse({ join: later }));
    const next = await poll;
    assert.ok(next.ms < 5000, `returned early (${next.ms} ms)`);
    assert.deepEqual(next.body.rooms, {});
    assert.deepEqual(receiptsOf(next, '!in:fake')?.content, { [inMsg.event_id]: { 'm.read': { [CAROL]: { ts: 20 } } } });
    const quiet = await slidingSync(proxy, alice.token, req, { pos: next.body.pos, timeout: 0 });
    assert.deepEqual(quiet.body.extensions.receipts?.rooms ?? {}, {}, 'sent once');
  });

  it("never sends another user's private receipt, also not as a change", async (t) => {
    const { fake, proxy } = await startStack(t);
    const msg = message('hello', ME);
    const room = { state: createRoomState('!r:fake', ME, { joined: [BOB] }), timeline: [msg] };
    const alice = addUser(fake, ME, 'A', syncResponse({ join: { '!r:fake': room } }));
    const bob = addUser(fake, BOB, 'B', syncResponse({ join: { '!r:fake': room } }));
    const req = { ...range([[0, 9]]), extensions: { receipts: { enabled: true } } };
    const first = await slidingSync(proxy, alice.token, req);
    await slidingSync(proxy, bob.token, req);
    const content = { [msg.event_id]: { 'm.read.private': { [BOB]: { ts: 5 } }, 'm.read': { [BOB]: { ts: 6 } } } };
    await queueLater(fake, bob, syncResponse({ join: { '!r:fake': { ephemeral: [receipt(content)] } } }));
    const next = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 2000 });
    assert.deepEqual(receiptsOf(next, '!r:fake')?.content, { [msg.event_id]: { 'm.read': { [BOB]: { ts: 6 } } } });
    const fresh = await slidingSync(proxy, alice.token, { ...req, conn_id: 'fresh' });
    assert.deepEqual(receiptsOf(fresh, '!r:fake')?.content, { [msg.event_id]: { 'm.read': { [BOB]: { ts: 6 } } } });
  });
});

describe('MSC4186 receipts: which ones a room gets', () => {
  it("a room sent from scratch gets the receipts on its returned timeline and all of the user's own", async (t) => {
    const { fake, proxy } = await startStack(t);
    const [m1, m2, m3] = [message('one', BOB), message('two', BOB), message('three', BOB)];
    const state = createRoomState('!r:fake', BOB, { joined: [ME, CAROL] });
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({
        join: {
          '!r:fake': {
            state,
            timeline: [m1, m2, m3],
            ephemeral: [
              receipt({
                [m1.event_id]: { 'm.read': { [BOB]: { ts: 1 } }, 'm.read.private': { [ME]: { ts: 2 } } },
                [m2.event_id]: { 'm.read': { [ME]: { ts: 3 } } },
                [m3.event_id]: { 'm.read': { [CAROL]: { ts: 4 } } },
              }),
            ],
          },
        },
      }),
    );
    // Bob's own poller hears his private receipt on the event Alice will see.
    const bob = addUser(
      fake,
      BOB,
      'B',
      syncResponse({
        join: {
          '!r:fake': { state, timeline: [m1, m2, m3], ephemeral: [receipt({ [m3.event_id]: { 'm.read.private': { [BOB]: { ts: 5 } } } })] },
        },
      }),
    );
    assert.equal((await slidingSync(proxy, bob.token, range([[0, 9]]))).status, 200);
    const res = await slidingSync(proxy, alice.token, { ...range([[0, 9]]), extensions: { receipts: { enabled: true } } });
    assert.deepEqual(bodies(res.body.rooms['!r:fake']?.timeline), ['three'], 'timeline_limit 1 returns only the last event');
    assert.deepEqual(receiptsOf(res, '!r:fake')?.content, {
      // Bob's m.read on an event outside the returned timeline is left out; Alice's own are all there.
      [m1.event_id]: { 'm.read.private': { [ME]: { ts: 2 } } },
      [m2.event_id]: { 'm.read': { [ME]: { ts: 3 } } },
      // Carol's on the returned event is there; Bob's private one never is.
      [m3.event_id]: { 'm.read': { [CAROL]: { ts: 4 } } },
    });
  });

  it('a room whose receipts changed while out of scope gets them when it comes back', async (t) => {
    const { fake, proxy } = await startStack(t);
    const m1 = message('r1', BOB);
    const r1 = { state: createRoomState('!r1:fake', BOB, { joined: [ME, CAROL] }), timeline: [m1] };
    // !top is newer, so the window [0,0] holds only it.
    const top = { state: createRoomState('!top:fake', ME), timeline: [message('top', ME)] };
    const alice = addUser(fake, ME, 'A', syncResponse({ join: { '!r1:fake': r1, '!top:fake': top } }));
    const bob = addUser(fake, BOB, 'B', syncResponse({ join: { '!r1:fake': r1 } }));
    assert.equal((await slidingSync(proxy, bob.token, range([[0, 9]]))).status, 200);
    const ext = { extensions: { receipts: { enabled: true } } };
    const wide = await slidingSync(proxy, alice.token, { ...range([[0, 2]]), ...ext });
    assert.deepEqual(wide.body.extensions.receipts?.rooms ?? {}, {}, 'no receipts yet');
    const narrow = await slidingSync(proxy, alice.token, { ...range([[0, 0]]), ...ext }, { pos: wide.body.pos, timeout: 0 });
    assert.deepEqual(Object.keys(narrow.body.rooms), [], '!r1 left the window');

    await pushSync(
      fake,
      alice,
      syncResponse({ join: { '!r1:fake': { ephemeral: [receipt({ [m1.event_id]: { 'm.read': { [CAROL]: { ts: 7 } } } })] } } }),
    );
    const bobs = { [m1.event_id]: { 'm.read': { [BOB]: { ts: 8 } }, 'm.read.private': { [BOB]: { ts: 9 } } } };
    await pushSync(fake, bob, syncResponse({ join: { '!r1:fake': { ephemeral: [receipt(bobs)] } } }));
    // A response while !r1 is out of scope moves past those receipts without sending them.
    const still = await slidingSync(proxy, alice.token, { ...range([[0, 0]]), ...ext }, { pos: narrow.body.pos, timeout: 0 });
    assert.deepEqual(still.body.extensions.receipts?.rooms ?? {}, {}, 'nothing for a room out of scope');

    const back = await slidingSync(proxy, alice.token, { ...range([[0, 2]]), ...ext }, { pos: still.body.pos, timeout: 0 });
    assert.deepEqual(receiptsOf(back, '!r1:fake')?.content, { [m1.event_id]: { 'm.read': { [CAROL]: { ts: 7 }, [BOB]: { ts: 8 } } } });
    const quiet = await slidingSync(proxy, alice.token, { ...range([[0, 2]]), ...ext }, { pos: back.body.pos, timeout: 0 });
    assert.deepEqual(quiet.body.extensions.receipts?.rooms ?? {}, {}, 'sent once');
  });
});

describe('MSC4186 typing', () => {
  it('sends the current typers of joined rooms in scope, never of invites, and each change', async (t) => {
    const { fake, proxy, parked } = await startStack(t);
    const joinedRoom = (id: string) => ({ state: createRoomState(id, BOB, { joined: [ME] }), timeline: [message(id, BOB)] });
    const inviteState = [...createRoomState('!inv:fake', BOB).map(stripped), stripped(member(ME, 'invite', { sender: BOB }))];
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({
        join: {
          '!in:fake': { ...joinedRoom('!in:fake'), ephemeral: [typing(BOB)] },
          '!out:fake': { ...joinedRoom('!out:fake'), ephemeral: [typing(BOB)] },
        },
        invite: { '!inv:fake': inviteState },
      }),
    );
    // Bob is in the room Alice is invited to, and his poller hears typing there.
    const bob = addUser(
      fake,
      BOB,
      'B',
      syncResponse({
        join: { '!inv:fake': { state: createRoomState('!inv:fake', BOB), timeline: [message('psst', BOB)], ephemeral: [typing(BOB)] } },
      }),
    );
    assert.equal((await slidingSync(proxy, bob.token, range([[0, 9]]))).status, 200);
    const subs = { '!in:fake': { timeline_limit: 1, required_state: [] }, '!inv:fake': { timeline_limit: 1, required_state: [] } };
    const req = { room_subscriptions: subs, extensions: { typing: { enabled: true } } };
    const first = await slidingSync(proxy, alice.token, req);
    assert.ok(first.body.rooms['!inv:fake'], 'the invite is subscribed');
    assert.deepEqual(first.body.extensions.typing?.rooms, { '!in:fake': { type: 'm.typing', content: { user_ids: [BOB] } } });

    const waiting = parked();
    const poll = slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 10_000 });
    await waiting;
    await queueLater(fake, alice, syncResponse({ join: { '!in:fake': { ephemeral: [typing(BOB, CAROL)] } } }));
    const next = await poll;
    assert.ok(next.ms < 5000, `a typing change ends a long-poll (${next.ms} ms)`);
    assert.deepEqual(next.body.extensions.typing?.rooms, { '!in:fake': { type: 'm.typing', content: { user_ids: [BOB, CAROL] } } });

    await queueLater(fake, alice, syncResponse({ join: { '!in:fake': { ephemeral: [typing()] } } }));
    const stopped = await slidingSync(proxy, alice.token, req, { pos: next.body.pos, timeout: 2000 });
    assert.deepEqual(stopped.body.extensions.typing?.rooms, { '!in:fake': { type: 'm.typing', content: { user_ids: [] } } });
    const quiet = await slidingSync(proxy, alice.token, req, { pos: stopped.body.pos, timeout: 0 });
    assert.deepEqual(quiet.body.extensions.typing?.rooms ?? {}, {}, 'an unchanged list is not resent');
  });
});

describe('MSC4186 typing scope', () => {
  it('resends the typers of a room that left the window and came back while someone still types', async (t) => {
    const { fake, proxy } = await startStack(t);
    const room = (id: string) => ({ state: createRoomState(id, BOB, { joined: [ME] }), timeline: [message(id, BOB)] });
    // !r1 is older than !top, so by recency the window [0,0] holds only !top.
    const r1 = { ...room('!r1:fake'), ephemeral: [typing(BOB)] };
    const alice = addUser(fake, ME, 'A', syncResponse({ join: { '!r1:fake': r1, '!top:fake': room('!top:fake') } }));
    const ext = { extensions: { typing: { enabled: true } } };
    const wide = await slidingSync(proxy, alice.token, { ...range([[0, 2]]), ...ext });
    assert.deepEqual(wide.body.extensions.typing?.rooms, { '!r1:fake': { type: 'm.typing', content: { user_ids: [BOB] } } });
    const narrow = await slidingSync(proxy, alice.token, { ...range([[0, 0]]), ...ext }, { pos: wide.body.pos, timeout: 0 });
    assert.deepEqual(narrow.body.extensions.typing?.rooms ?? {}, {}, '!r1 is out of scope');
    const back = await slidingSync(proxy, alice.token, { ...range([[0, 2]]), ...ext }, { pos: narrow.body.pos, timeout: 0 });
    assert.deepEqual(
      back.body.extensions.typing?.rooms,
      { '!r1:fake': { type: 'm.typing', content: { user_ids: [BOB] } } },
      'a returning room is in scope for the first time again',
    );
    const quiet = await slidingSync(proxy, alice.token, { ...range([[0, 2]]), ...ext }, { pos: back.body.pos, timeout: 0 });
    assert.deepEqual(quiet.body.extensions.typing?.rooms ?? {}, {}, 'and sent once');
  });

  it('covers every range of a list with several, and nothing between them', async (t) => {
    const { fake, proxy } = await startStack(t);
    const room = (id: string) => ({
      state: createRoomState(id, BOB, { joined: [ME] }),
      timeline: [message(id, BOB)],
      ephemeral: [typing(BOB)],
    });
    // Created oldest first, so by recency the list is !c, !b, !a.
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({ join: { '!a:fake': room('!a:fake'), '!b:fake': room('!b:fake'), '!c:fake': room('!c:fake') } }),
    );
    const res = await slidingSync(proxy, alice.token, {
      ...range([
        [0, 0],
        [2, 2],
      ]),
      extensions: { typing: { enabled: true } },
    });
    assert.deepEqual(Object.keys(res.body.rooms).sort(), ['!a:fake', '!c:fake']);
    assert.deepEqual(Object.keys(res.body.extensions.typing?.rooms ?? {}).sort(), ['!a:fake', '!c:fake']);
  });
});
