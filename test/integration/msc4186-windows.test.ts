// MSC4186 per-connection memory through the whole proxy: a room that leaves the window and comes
// back gets exactly what it missed, config growth (timeline_limit, required_state) is answered
// at once, and room subscriptions per request (rust-sdk sends its whole set every time, as Synapse expects).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRoomState, message, stateEvent, syncResponse } from '../support/builders.js';
import { addUser, bodies, listIds, pushSync, slidingSync, startStack } from '../support/sliding-sync-client.js';

const ME = '@alice:fake';
const window = (ranges: number[][], extra: Record<string, unknown> = {}) => ({
  lists: { main: { ranges, timeline_limit: 10, required_state: [['m.room.name', '']], ...extra } },
});

/** !r1..!r3, !r3 the most recent; each has messages `rN-1` .. `rN-count`. */
function threeRooms(count = 1) {
  const join: Record<string, unknown> = {};
  for (const n of [1, 2, 3]) {
    const msgs = Array.from({ length: count }, (_, i) => message(`r${n}-${i + 1}`));
    join[`!r${n}:fake`] = { state: createRoomState(`!r${n}:fake`, ME, { name: `Room ${n}` }), timeline: msgs };
  }
  return syncResponse({ join: join as never });
}

describe('MSC4186 connection memory', () => {
  it('sends a room that comes back to the window exactly the delta it missed', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', threeRooms());
    const top = await slidingSync(proxy, alice.token, window([[0, 0]]));
    assert.deepEqual(Object.keys(top.body.rooms), ['!r3:fake']);
    const rest = await slidingSync(proxy, alice.token, window([[1, 2]]), { pos: top.body.pos, timeout: 0 });
    assert.deepEqual(Object.keys(rest.body.rooms).sort(), ['!r1:fake', '!r2:fake']);

    // !r3 changes while it is outside the window (it stays at index 0).
    await pushSync(
      fake,
      alice,
      syncResponse({
        join: { '!r3:fake': { timeline: [message('missed 1'), stateEvent('m.room.name', '', { name: 'Renamed' }), message('missed 2')] } },
      }),
    );
    const outside = await slidingSync(proxy, alice.token, window([[1, 2]]), { pos: rest.body.pos, timeout: 0 });
    assert.deepEqual(listIds(outside.body, 'main'), ['!r2:fake', '!r1:fake']);
    assert.deepEqual(Object.keys(outside.body.rooms), [], 'nothing for a room outside the window');

    const back = await slidingSync(proxy, alice.token, window([[0, 2]]), { pos: outside.body.pos, timeout: 0 });
    assert.deepEqual(Object.keys(back.body.rooms), ['!r3:fake'], 'rooms with nothing new are not re-sent');
    const r3 = back.body.rooms['!r3:fake'];
    assert.equal(r3?.initial, undefined, 'a delta, not a resend');
    assert.deepEqual(
      r3?.timeline?.map((e) => e.content.body ?? e.content.name),
      ['missed 1', 'Renamed', 'missed 2'],
    );
    assert.equal(r3?.name, 'Renamed');
    assert.deepEqual(
      r3?.required_state?.map((e) => e.content.name),
      ['Renamed'],
    );
    const after = await slidingSync(proxy, alice.token, window([[0, 2]]), { pos: back.body.pos, timeout: 0 });
    assert.deepEqual(Object.keys(after.body.rooms), [], 'and only once');
  });

  it('answers a timeline_limit increase at once with the latest N events, flagged expanded', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', threeRooms(5));
    const small = await slidingSync(proxy, alice.token, window([[0, 0]], { timeline_limit: 1 }));
    assert.deepEqual(bodies(small.body.rooms['!r3:fake']?.timeline), ['r3-5']);
    const confirm = await slidingSync(proxy, alice.token, window([[0, 0]], { timeline_limit: 1 }), { pos: small.body.pos, timeout: 0 });
    const big = await slidingSync(proxy, alice.token, window([[0, 0]], { timeline_limit: 4 }), { pos: confirm.body.pos, timeout: 10_000 });
    assert.ok(big.ms < 5000, `answered at once (${big.ms} ms)`);
    const room = big.body.rooms['!r3:fake'];
    assert.equal(room?.unstable_expanded_timeline, true);
    assert.equal(room?.initial, undefined);
    assert.deepEqual(bodies(room?.timeline), ['r3-2', 'r3-3', 'r3-4', 'r3-5']);
    assert.equal(room?.limited, true, 'older events exist');
    const same = await slidingSync(proxy, alice.token, window([[0, 0]], { timeline_limit: 4 }), { pos: big.body.pos, timeout: 0 });
    assert.equal(same.body.rooms['!r3:fake'], undefined, 'not expanded twice');
  });

  it('answers a required_state increase at once with the newly covered state', async (t) => {
    const { fake, proxy } = await startStack(t);
    const topic = stateEvent('m.room.topic', '', { topic: 'Weather' });
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({ join: { '!s:fake': { state: [...createRoomState('!s:fake', ME), topic], timeline: [message('hi')] } } }),
    );
    const narrow = window([[0, 0]], { required_state: [] });
    const first = await slidingSync(proxy, alice.token, narrow);
    assert.equal(first.body.rooms['!s:fake']?.required_state, undefined);
    const confirm = await slidingSync(proxy, alice.token, narrow, { pos: first.body.pos, timeout: 0 });
    const wide = window([[0, 0]], { required_state: [['m.room.topic', '']] });
    const grown = await slidingSync(proxy, alice.token, wide, { pos: confirm.body.pos, timeout: 10_000 });
    assert.ok(grown.ms < 5000, `answered at once (${grown.ms} ms)`);
    const room = grown.body.rooms['!s:fake'];
    assert.equal(room?.initial, undefined);
    assert.deepEqual(
      room?.required_state?.map((e) => [e.type, e.event_id]),
      [['m.room.topic', topic.event_id]],
    );
    assert.equal(room?.timeline?.length ?? 0, 0, 'the timeline was already sent');
  });

  it('applies room subscriptions to the request carrying them, as Synapse: one left out is no longer subscribed', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', threeRooms());
    const sub = { timeline_limit: 5, required_state: [['m.room.name', '']] };
    const talk = (roomId: string, text: string) =>
      pushSync(fake, alice, syncResponse({ join: { [roomId]: { timeline: [message(text)] } } }));
    // rust-sdk: the whole set on every request.
    const both = { room_subscriptions: { '!r1:fake': sub, '!r2:fake': sub } };
    const first = await slidingSync(proxy, alice.token, both);
    assert.deepEqual(Object.keys(first.body.rooms).sort(), ['!r1:fake', '!r2:fake']);

    // !r1 dropped: it is not subscribed any more, so what happens in it is not sent.
    const onlyR2 = { room_subscriptions: { '!r2:fake': sub } };
    const dropped = await slidingSync(proxy, alice.token, onlyR2, { pos: first.body.pos, timeout: 0 });
    assert.equal(dropped.status, 200);
    await talk('!r1:fake', 'while unsubscribed 1');
    await talk('!r2:fake', 'still subscribed');
    const after = await slidingSync(proxy, alice.token, onlyR2, { pos: dropped.body.pos, timeout: 0 });
    assert.deepEqual(Object.keys(after.body.rooms), ['!r2:fake']);
    assert.deepEqual(bodies(after.body.rooms['!r2:fake']?.timeline), ['still subscribed']);
    const empty = await slidingSync(proxy, alice.token, {}, { pos: after.body.pos, timeout: 0 });
    assert.deepEqual(Object.keys(empty.body.rooms), [], 'a request without subscriptions has none');
    await talk('!r1:fake', 'while unsubscribed 2');

    // Subscribed again: the connection remembers what it sent, so only what was missed comes.
    const again = await slidingSync(proxy, alice.token, both, { pos: empty.body.pos, timeout: 0 });
    const r1 = again.body.rooms['!r1:fake'];
    assert.equal(r1?.initial, undefined, 'a delta, not the room from scratch');
    assert.deepEqual(bodies(r1?.timeline), ['while unsubscribed 1', 'while unsubscribed 2']);
    assert.equal(r1?.required_state, undefined);

    // A room left out but in a list stays, through the list.
    const listed = { ...window([[0, 2]], { timeline_limit: 1 }), room_subscriptions: { '!r2:fake': sub } };
    const viaList = await slidingSync(proxy, alice.token, listed, { pos: again.body.pos, timeout: 0 });
    await talk('!r1:fake', 'through the list');
    const live = await slidingSync(proxy, alice.token, listed, { pos: viaList.body.pos, timeout: 0 });
    assert.deepEqual(bodies(live.body.rooms['!r1:fake']?.timeline), ['through the list']);

    // unsubscribe_rooms is still accepted, and wins over a subscription in the same request.
    const unsub = await slidingSync(proxy, alice.token, { ...both, unsubscribe_rooms: ['!r1:fake'] }, { pos: live.body.pos, timeout: 0 });
    assert.equal(unsub.status, 200);
    await talk('!r1:fake', 'unheard');
    const quiet = await slidingSync(
      proxy,
      alice.token,
      { ...both, unsubscribe_rooms: ['!r1:fake'] },
      { pos: unsub.body.pos, timeout: 300 },
    );
    assert.deepEqual(Object.keys(quiet.body.rooms), []);
  });

  it('serves room subscriptions sent on every request (rust-sdk) as deltas', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', threeRooms());
    const req = { room_subscriptions: { '!r2:fake': { timeline_limit: 5, required_state: [['m.room.name', '']] } } };
    let res = await slidingSync(proxy, alice.token, req);
    assert.equal(res.body.rooms['!r2:fake']?.initial, true);
    for (const text of ['x', 'y']) {
      await pushSync(fake, alice, syncResponse({ join: { '!r2:fake': { timeline: [message(text)] } } }));
      res = await slidingSync(proxy, alice.token, req, { pos: res.body.pos, timeout: 0 });
      const room = res.body.rooms['!r2:fake'];
      assert.deepEqual(bodies(room?.timeline), [text]);
      assert.equal(room?.initial, undefined, 'resending the same subscription does not reset the room');
      assert.equal(room?.required_state, undefined);
    }
    const quiet = await slidingSync(proxy, alice.token, req, { pos: res.body.pos, timeout: 0 });
    assert.deepEqual(Object.keys(quiet.body.rooms), []);
  });
});
