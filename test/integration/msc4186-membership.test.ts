// MSC4186 rooms the user is not (or no longer) joined to: invites, kicks, bans and rooms the
// user left themself, through the whole proxy. A second user keeps the room busy after the
// kick, so that the test can tell whether anything after the user's membership leaks.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { createRoomState, member, message, stateEvent, stripped, syncResponse } from '../support/builders.js';
import { addUser, bodies, listIds, pushSync, type SsRoom, slidingSync, startStack } from '../support/sliding-sync-client.js';

const ME = '@alice:fake';
const BOB = '@bob:fake';
const list = (extra: Record<string, unknown> = {}) => ({ ranges: [[0, 20]], timeline_limit: 5, required_state: [], ...extra });
const NAME_STATE = [['m.room.name', '']];
const names = (room: SsRoom | undefined) => (room?.required_state ?? []).filter((e) => e.type === 'm.room.name').map((e) => e.content.name);

/** Alice is kicked from !k and banned from !b; then Bob renames both and talks on. */
async function kickAndBan(t: TestContext) {
  const { fake, proxy } = await startStack(t);
  const rooms = {
    '!k:fake': { state: createRoomState('!k:fake', BOB, { name: 'Before K', joined: [ME] }), timeline: [message('pre k', BOB)] },
    '!b:fake': { state: createRoomState('!b:fake', BOB, { name: 'Before B', joined: [ME] }), timeline: [message('pre b', BOB)] },
  };
  const alice = addUser(fake, ME, 'A', syncResponse({ join: rooms }));
  const bob = addUser(fake, BOB, 'B', syncResponse({ join: rooms }));
  const req = { lists: { all: list({ required_state: NAME_STATE }) } };
  const first = await slidingSync(proxy, alice.token, req);
  assert.equal(first.body.lists.all?.count, 2);
  assert.equal((await slidingSync(proxy, bob.token, req)).status, 200);
  const kick = member(ME, 'leave', { sender: BOB, reason: 'out' });
  const ban = member(ME, 'ban', { sender: BOB });
  const inBoth = { '!k:fake': { timeline: [kick] }, '!b:fake': { timeline: [ban] } };
  await pushSync(fake, alice, syncResponse({ leave: inBoth }));
  await pushSync(fake, bob, syncResponse({ join: inBoth }));
  const after = (tag: string) => ({
    timeline: [stateEvent('m.room.name', '', { name: `After ${tag}` }, BOB), message(`after ${tag}`, BOB)],
  });
  await pushSync(fake, bob, syncResponse({ join: { '!k:fake': after('K'), '!b:fake': after('B') } }));
  return { fake, proxy, alice, bob, first, req, kick, ban };
}

describe('MSC4186 memberships', () => {
  it('sends invites with invite_state and no timeline, and a joined invite from scratch', async (t) => {
    const { fake, proxy } = await startStack(t);
    const inviteState = [
      ...createRoomState('!inv:fake', BOB, { name: 'Come in' }).map(stripped),
      stripped(member(ME, 'invite', { sender: BOB })),
    ];
    const alice = addUser(fake, ME, 'A', syncResponse({ invite: { '!inv:fake': inviteState } }));
    const req = { lists: { all: list({ required_state: [['*', '*']] }) } };
    const first = await slidingSync(proxy, alice.token, req);
    const inv = first.body.rooms['!inv:fake'];
    assert.equal(inv?.initial, true);
    assert.deepEqual(inv?.invite_state, inviteState);
    for (const field of ['timeline', 'required_state', 'joined_count', 'invited_count', 'prev_batch', 'limited', 'num_live'] as const) {
      assert.equal(inv?.[field], undefined, `no ${field} for an invite`);
    }
    assert.equal(first.body.lists.all?.count, 1);

    const state = [...createRoomState('!inv:fake', BOB, { name: 'Come in' }), member(ME, 'invite', { sender: BOB })];
    await pushSync(
      fake,
      alice,
      syncResponse({ join: { '!inv:fake': { state, timeline: [member(ME, 'join'), message('welcome', BOB)] } } }),
    );
    const joined = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 0 });
    const room = joined.body.rooms['!inv:fake'];
    assert.equal(room?.initial, true, 'a joined invite is sent from scratch');
    assert.equal(room?.invite_state, undefined);
    assert.deepEqual(bodies(room?.timeline).at(-1), 'welcome');
    assert.equal(room?.name, 'Come in');
    assert.ok((room?.required_state ?? []).some((e) => e.type === 'm.room.member' && e.content.membership === 'join'));
  });

  it('gives invites and knocks the name and avatar of their stripped state, as Synapse, and no heroes', async (t) => {
    const { fake, proxy } = await startStack(t);
    const invited = (roomId: string, extra: ReturnType<typeof stateEvent>[]) => [
      ...createRoomState(roomId, BOB).map(stripped),
      ...extra.map(stripped),
      stripped(member(ME, 'invite', { sender: BOB })),
    ];
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({
        invite: {
          '!named:fake': invited('!named:fake', [
            stateEvent('m.room.name', '', { name: 'Come in' }, BOB),
            stateEvent('m.room.avatar', '', { url: 'mxc://fake/pic' }, BOB),
          ]),
          '!blank:fake': invited('!blank:fake', [stateEvent('m.room.name', '', { name: '  ' }, BOB)]),
          '!plain:fake': invited('!plain:fake', []),
        },
        knock: { '!kn:fake': [stateEvent('m.room.name', '', { name: 'Knock knock' }, BOB), member(ME, 'knock')].map(stripped) },
      }),
    );
    const res = await slidingSync(proxy, alice.token, { lists: { all: list() } });
    const fields = (roomId: string) => {
      const { name, avatar, heroes } = res.body.rooms[roomId] ?? {};
      return { name, avatar, heroes };
    };
    assert.deepEqual(fields('!named:fake'), { name: 'Come in', avatar: 'mxc://fake/pic', heroes: undefined });
    assert.deepEqual(fields('!blank:fake'), { name: undefined, avatar: undefined, heroes: undefined }, 'a blank name is no name');
    assert.deepEqual(fields('!plain:fake'), { name: undefined, avatar: undefined, heroes: undefined });
    assert.deepEqual(fields('!kn:fake'), { name: 'Knock knock', avatar: undefined, heroes: undefined });
  });

  it('shows kicked and banned rooms as of the kick or ban, and nothing after', async (t) => {
    const { fake, proxy, alice, bob, first, req, kick, ban } = await kickAndBan(t);
    const next = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 0 });
    assert.equal(next.status, 200);
    assert.equal(next.body.lists.all?.count, 2, 'kicked and banned rooms stay listed');
    const fresh = await slidingSync(proxy, alice.token, { ...req, conn_id: 'fresh' });
    for (const [id, ev, tag] of [
      ['!k:fake', kick, 'K'],
      ['!b:fake', ban, 'B'],
    ] as const) {
      const room = next.body.rooms[id];
      assert.equal(room?.timeline?.at(-1)?.event_id, ev.event_id, `${id} timeline ends at the membership`);
      assert.ok(!bodies(room?.timeline).includes(`after ${tag}`), `${id} shows nothing after it`);
      assert.deepEqual(names(room), [], `${id} state after the kick does not leak`);
      const initial = fresh.body.rooms[id];
      assert.equal(initial?.initial, true);
      assert.equal(initial?.timeline?.at(-1)?.event_id, ev.event_id);
      assert.deepEqual(names(initial), [`Before ${tag}`]);
      assert.equal(initial?.joined_count, undefined, 'no member counts once out');
    }
    await pushSync(fake, bob, syncResponse({ join: { '!k:fake': { timeline: [message('still going', BOB)] } } }));
    const quiet = await slidingSync(proxy, alice.token, req, { pos: next.body.pos, timeout: 300 });
    assert.equal(quiet.status, 200);
    assert.deepEqual(Object.keys(quiet.body.rooms), [], 'activity after the kick does not reach the kicked user');
  });

  it('gives kicked and banned rooms the name they had at the kick or ban', async (t) => {
    const { proxy, alice, first, req } = await kickAndBan(t);
    const next = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 0 });
    const fresh = await slidingSync(proxy, alice.token, { ...req, conn_id: 'fresh' });
    for (const [id, tag] of [
      ['!k:fake', 'K'],
      ['!b:fake', 'B'],
    ] as const) {
      assert.notEqual(next.body.rooms[id]?.name, `After ${tag}`, `${id}: the rename after the kick is not sent`);
      assert.equal(fresh.body.rooms[id]?.name, `Before ${tag}`, `${id}: the name as of the kick`);
    }
  });

  it('sends a room the user left once, in the response covering the leave, then drops it', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({
        join: {
          '!go:fake': { state: createRoomState('!go:fake', ME, { name: 'Go' }), timeline: [message('bye soon')] },
          '!stay:fake': { state: createRoomState('!stay:fake', ME), timeline: [message('here')] },
        },
      }),
    );
    const req = { lists: { all: list() } };
    const first = await slidingSync(proxy, alice.token, req);
    assert.equal(first.body.lists.all?.count, 2);
    const leave = member(ME, 'leave');
    await pushSync(fake, alice, syncResponse({ leave: { '!go:fake': { timeline: [leave] } } }));
    const covering = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 0 });
    assert.equal(covering.body.rooms['!go:fake']?.timeline?.at(-1)?.event_id, leave.event_id, 'the leave is sent');
    assert.ok(listIds(covering.body, 'all').includes('!go:fake'));
    const then = await slidingSync(proxy, alice.token, req, { pos: covering.body.pos, timeout: 0 });
    assert.equal(then.body.lists.all?.count, 1);
    assert.deepEqual(listIds(then.body, 'all'), ['!stay:fake']);
    assert.equal(then.body.rooms['!go:fake'], undefined);
    const fresh = await slidingSync(proxy, alice.token, { ...req, conn_id: 'fresh' });
    assert.deepEqual(listIds(fresh.body, 'all'), ['!stay:fake'], 'a new connection never sees it');
  });
});
