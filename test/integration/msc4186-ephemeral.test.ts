// MSC4186 receipts (MSC3960) and typing (MSC3961) extensions through the whole proxy, with two
// users whose pollers share rooms: private receipts stay private, typing only reaches members.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { createRoomState, member, message, stripped, syncResponse } from '../support/builders.js';
import { addUser, queueLater, type SsResult, slidingSync, startStack } from '../support/sliding-sync-client.js';

const ME = '@alice:fake';
const BOB = '@bob:fake';
const CAROL = '@carol:fake';
const receipt = (content: Record<string, unknown>) => ({ type: 'm.receipt', content });
const typing = (...userIds: string[]) => ({ type: 'm.typing', content: { user_ids: userIds } });
const range = (ranges: number[][]) => ({ lists: { main: { ranges, timeline_limit: 1, required_state: [] } } });
const receiptsOf = (res: SsResult, room: string) => res.body.extensions.receipts?.rooms?.[room];

describe('MSC4186 receipts', () => {
  it('sends m.read for rooms in scope, private receipts only to their owner, and keeps thread_id', async (t) => {
    const { fake, proxy } = await startStack(t);
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
    const poll = slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 10_000 });
    await delay(300);
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

describe('MSC4186 typing', () => {
  it('sends the current typers of joined rooms in scope, never of invites, and each change', async (t) => {
    const { fake, proxy } = await startStack(t);
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

    const poll = slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 10_000 });
    await delay(300);
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
});
