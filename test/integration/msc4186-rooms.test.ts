// MSC4186 room results of joined rooms through the whole proxy: initial, name, avatar, heroes, counts,
// is_dm, required_state (wildcards, $ME, $LAZY), timelines, bump_stamp and unread counts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRoomState, event, member, message, stateEvent, stripped, syncResponse } from '../support/builders.js';
import { addUser, bodies, listIds, pushSync, type SsEvent, slidingSync, startStack } from '../support/sliding-sync-client.js';

const ME = '@alice:fake';
const BOB = '@bob:fake';
const CAROL = '@carol:fake';
const DAVE = '@dave:fake';
const list = (extra: Record<string, unknown> = {}) => ({ ranges: [[0, 20]], timeline_limit: 1, required_state: [], ...extra });
const stateIds = (events: SsEvent[] | undefined) => (events ?? []).map((e) => `${e.type}|${e.state_key}`).sort();

describe('MSC4186 room fields', () => {
  it('sends initial:true on the first send only, and the name only from m.room.name', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({
        join: {
          '!named:fake': { state: createRoomState('!named:fake', ME, { name: 'Named room' }), timeline: [message('a')] },
          '!unnamed:fake': {
            state: [
              ...createRoomState('!unnamed:fake', ME),
              member(BOB, 'join', { displayname: 'Bob' }),
              member(CAROL, 'invite', { sender: ME, displayname: 'Carol' }),
            ],
            timeline: [message('b')],
          },
          '!dm:fake': { state: createRoomState('!dm:fake', ME, { name: 'Chat', joined: [BOB] }), timeline: [message('c')] },
        },
        accountData: [{ type: 'm.direct', content: { [BOB]: ['!dm:fake'] } }],
      }),
    );
    const req = { lists: { all: list() } };
    const first = await slidingSync(proxy, alice.token, req);
    assert.equal(first.status, 200);
    const named = first.body.rooms['!named:fake'];
    const unnamed = first.body.rooms['!unnamed:fake'];
    const dm = first.body.rooms['!dm:fake'];
    assert.equal(named?.initial, true);
    assert.equal(named?.name, 'Named room');
    assert.equal(named?.heroes, undefined, 'no heroes for a named room');
    assert.equal(unnamed?.initial, true);
    assert.ok(unnamed && !('name' in unnamed), 'no calculated name');
    const heroes = [...(unnamed?.heroes ?? [])].sort((a, b) => a.user_id.localeCompare(b.user_id));
    assert.deepEqual(heroes, [
      { user_id: BOB, displayname: 'Bob' },
      { user_id: CAROL, displayname: 'Carol' },
    ]);
    assert.equal(unnamed?.joined_count, 2);
    assert.equal(unnamed?.invited_count, 1);
    assert.equal(named?.joined_count, 1);
    assert.equal(dm?.is_dm, true);
    assert.ok(named && !('is_dm' in named), 'is_dm only when true');
    assert.ok(unnamed && !('is_dm' in unnamed));

    await pushSync(fake, alice, syncResponse({ join: { '!named:fake': { timeline: [message('later')] } } }));
    const next = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 0 });
    const again = next.body.rooms['!named:fake'];
    assert.deepEqual(bodies(again?.timeline), ['later']);
    assert.ok(again && !('initial' in again), 'initial is absent on later sends');
    assert.ok(again && !('name' in again), 'an unchanged name is not re-sent');
  });

  it('returns required_state with *, $ME and $LAZY', async (t) => {
    const { fake, proxy } = await startStack(t);
    const state = [...createRoomState('!rs:fake', ME, { joined: [BOB, CAROL, DAVE] }), stateEvent('m.room.topic', '', { topic: 'Topic' })];
    const alice = addUser(fake, ME, 'A', syncResponse({ join: { '!rs:fake': { state, timeline: [message('from bob', BOB)] } } }));
    const fetchState = async (connId: string, requiredState: string[][], timelineLimit = 1) => {
      const res = await slidingSync(proxy, alice.token, {
        conn_id: connId,
        lists: { all: list({ required_state: requiredState, timeline_limit: timelineLimit }) },
      });
      assert.equal(res.status, 200);
      return res;
    };
    const allMembers = [BOB, CAROL, DAVE, ME].map((u) => `m.room.member|${u}`).sort();
    const members = await fetchState('members', [['m.room.member', '*']]);
    assert.deepEqual(stateIds(members.body.rooms['!rs:fake']?.required_state), allMembers);
    const all = await fetchState('all', [['*', '*']]);
    assert.deepEqual(stateIds(all.body.rooms['!rs:fake']?.required_state), stateIds(state as SsEvent[]));
    const me = await fetchState('me', [
      ['m.room.member', '$ME'],
      ['m.room.topic', ''],
    ]);
    assert.deepEqual(stateIds(me.body.rooms['!rs:fake']?.required_state), [`m.room.member|${ME}`, 'm.room.topic|']);

    const lazyReq = { conn_id: 'lazy', lists: { all: list({ required_state: [['m.room.member', '$LAZY']] }) } };
    const lazy = await slidingSync(proxy, alice.token, lazyReq);
    assert.deepEqual(stateIds(lazy.body.rooms['!rs:fake']?.required_state), [`m.room.member|${BOB}`], 'only the timeline sender');
    await pushSync(fake, alice, syncResponse({ join: { '!rs:fake': { timeline: [message('bob again', BOB)] } } }));
    const second = await slidingSync(proxy, alice.token, lazyReq, { pos: lazy.body.pos, timeout: 0 });
    assert.deepEqual(bodies(second.body.rooms['!rs:fake']?.timeline), ['bob again']);
    assert.deepEqual(stateIds(second.body.rooms['!rs:fake']?.required_state), [], "bob's member is not sent twice");
    await pushSync(fake, alice, syncResponse({ join: { '!rs:fake': { timeline: [message('carol here', CAROL)] } } }));
    const third = await slidingSync(proxy, alice.token, lazyReq, { pos: second.body.pos, timeout: 0 });
    assert.deepEqual(stateIds(third.body.rooms['!rs:fake']?.required_state), [`m.room.member|${CAROL}`]);
  });

  it('accepts the object form of required_state ({include, exclude, lazy_members}) with the same answers', async (t) => {
    const { fake, proxy } = await startStack(t);
    const state = [...createRoomState('!obj:fake', ME, { joined: [BOB, CAROL] }), stateEvent('m.room.topic', '', { topic: 'Topic' })];
    const alice = addUser(fake, ME, 'A', syncResponse({ join: { '!obj:fake': { state, timeline: [message('from bob', BOB)] } } }));
    const fetchState = async (connId: string, requiredState: unknown) => {
      const res = await slidingSync(proxy, alice.token, { conn_id: connId, lists: { all: list({ required_state: requiredState }) } });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return stateIds(res.body.rooms['!obj:fake']?.required_state);
    };
    assert.deepEqual(await fetchState('all', { include: [{}] }), await fetchState('all-tuple', [['*', '*']]));
    assert.deepEqual(await fetchState('pairs', { include: [{ type: 'm.room.member', state_key: ME }, { type: 'm.room.topic' }] }), [
      `m.room.member|${ME}`,
      'm.room.topic|',
    ]);
    assert.deepEqual(await fetchState('keyed', { include: [{ state_key: '' }] }), await fetchState('keyed-tuple', [['*', '']]));
    assert.deepEqual(await fetchState('nothing', {}), []);

    // All state but members, with only the timeline's sender lazily: exclude does not apply to lazy members.
    const allButMembers = stateIds(state as SsEvent[]).filter((id) => !id.startsWith('m.room.member|'));
    assert.deepEqual(await fetchState('excl', { include: [{}], exclude: [{ type: 'm.room.member' }] }), allButMembers);
    assert.deepEqual(
      await fetchState('excl-lazy', { include: [{}], exclude: [{ type: 'm.room.member' }], lazy_members: true }),
      [...allButMembers, `m.room.member|${BOB}`].sort(),
    );

    for (const bad of [{ include: 'x' }, { include: [{ type: 1 }] }, { lazy_members: 'yes' }, 'all']) {
      const res = await slidingSync(proxy, alice.token, { conn_id: 'bad', lists: { all: list({ required_state: bad }) } });
      assert.deepEqual([res.status, res.body.errcode], [400, 'M_BAD_JSON'], JSON.stringify(bad));
    }
  });

  it('always returns a requested m.room.encryption that exists, also through a union of configs', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({
        join: {
          '!enc:fake': { state: createRoomState('!enc:fake', ME, { encrypted: true }), timeline: [message('secret')] },
          '!plain:fake': { state: createRoomState('!plain:fake', ME), timeline: [message('open')] },
        },
      }),
    );
    const res = await slidingSync(proxy, alice.token, { lists: { all: list({ required_state: [['m.room.encryption', '']] }) } });
    assert.deepEqual(stateIds(res.body.rooms['!enc:fake']?.required_state), ['m.room.encryption|']);
    assert.equal(res.body.rooms['!plain:fake']?.required_state, undefined, 'nothing to return for an unencrypted room');
    const union = await slidingSync(proxy, alice.token, {
      conn_id: 'union',
      lists: { all: list({ required_state: [['m.room.member', '$LAZY']] }) },
      room_subscriptions: { '!enc:fake': { timeline_limit: 0, required_state: [['m.room.encryption', '']] } },
    });
    assert.ok(stateIds(union.body.rooms['!enc:fake']?.required_state).includes('m.room.encryption|'));
  });

  it('sends the timeline oldest first with limited, prev_batch and num_live', async (t) => {
    const { fake, proxy } = await startStack(t);
    const msgs = ['m1', 'm2', 'm3', 'm4', 'm5'].map((b) => message(b, BOB));
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({
        join: {
          '!t:fake': { state: createRoomState('!t:fake', ME, { joined: [BOB] }), timeline: msgs, limited: true, prevBatch: 'pb-1' },
        },
      }),
    );
    const threeReq = { conn_id: 'three', lists: { all: list({ timeline_limit: 3 }) } };
    const three = await slidingSync(proxy, alice.token, threeReq);
    const room = three.body.rooms['!t:fake'];
    assert.deepEqual(bodies(room?.timeline), ['m3', 'm4', 'm5']);
    assert.equal(room?.limited, true);
    assert.equal(room?.num_live, 0, 'nothing is live on an initial sync');
    const ten = await slidingSync(proxy, alice.token, { conn_id: 'ten', lists: { all: list({ timeline_limit: 10 }) } });
    const whole = ten.body.rooms['!t:fake'];
    assert.deepEqual(bodies(whole?.timeline), ['m1', 'm2', 'm3', 'm4', 'm5']);
    assert.equal(whole?.limited, true, 'the homeserver said older events exist');
    assert.equal(whole?.prev_batch, 'pb-1');

    await pushSync(
      fake,
      alice,
      syncResponse({ join: { '!t:fake': { timeline: [message('m6', BOB), message('m7')], prevBatch: 'pb-6' } } }),
    );
    const delta = await slidingSync(proxy, alice.token, threeReq, { pos: three.body.pos, timeout: 0 });
    const d = delta.body.rooms['!t:fake'];
    assert.deepEqual(bodies(d?.timeline), ['m6', 'm7']);
    assert.equal(d?.limited, false);
    assert.equal(d?.num_live, 2);
    assert.equal(d?.prev_batch, 'pb-6');
    const four = ['m8', 'm9', 'm10', 'm11'].map((b) => message(b, BOB));
    await pushSync(fake, alice, syncResponse({ join: { '!t:fake': { timeline: four, prevBatch: 'pb-8' } } }));
    const more = await slidingSync(proxy, alice.token, threeReq, { pos: delta.body.pos, timeout: 0 });
    const m = more.body.rooms['!t:fake'];
    assert.deepEqual(bodies(m?.timeline), ['m9', 'm10', 'm11']);
    assert.equal(m?.limited, true, 'more new events than the limit');
    assert.equal(m?.num_live, 3);
  });

  it('sends bump_stamp, moved by messages but not by reactions', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({ join: { '!b:fake': { state: createRoomState('!b:fake', ME), timeline: [message('first')] } } }),
    );
    const req = { lists: { all: list() } };
    const first = await slidingSync(proxy, alice.token, req);
    const stamp = first.body.rooms['!b:fake']?.bump_stamp;
    assert.equal(typeof stamp, 'number');
    const target = first.body.rooms['!b:fake']?.timeline?.[0]?.event_id as string;
    const reaction = event('m.reaction', { 'm.relates_to': { rel_type: 'm.annotation', event_id: target, key: '👍' } });
    await pushSync(fake, alice, syncResponse({ join: { '!b:fake': { timeline: [reaction] } } }));
    const afterReaction = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 0 });
    const r = afterReaction.body.rooms['!b:fake'];
    assert.deepEqual(
      r?.timeline?.map((e) => e.type),
      ['m.reaction'],
    );
    assert.ok(r?.bump_stamp === undefined || r.bump_stamp === stamp, `a reaction does not bump (${r?.bump_stamp} vs ${stamp})`);
    await pushSync(fake, alice, syncResponse({ join: { '!b:fake': { timeline: [message('second')] } } }));
    const afterMessage = await slidingSync(proxy, alice.token, req, { pos: afterReaction.body.pos, timeout: 0 });
    assert.ok((afterMessage.body.rooms['!b:fake']?.bump_stamp ?? 0) > (stamp ?? 0), 'a message bumps');
  });

  it('orders the rooms of one v2 response as they happened, invites and knocks by their member event', async (t) => {
    // A busy poller gets many changes in one response (a homeserver lists its rooms in no
    // order). Synapse stamps an invited or knocked room with its member event's stream
    // position; the proxy had given every invite and knock of a response one position after all
    // its events, so these tied with each other and came before a kick or a message newer
    // than them. Built in the order they happen: the builders' timestamps follow.
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', syncResponse({}));
    const first = await slidingSync(proxy, alice.token, { lists: { all: list() } });
    const oldState = createRoomState('!old:fake', ME, { name: 'Old' });
    const newState = createRoomState('!new:fake', BOB, { joined: [ME] });
    const oldMessage = message('before all', BOB);
    // Synapse ends the stripped state with the user's own invite or knock event, whole, with its timestamp.
    const own = (membership: string, sender: string) => ({ ...member(ME, membership, { sender }), state_key: ME });
    const invite = (sender: string) => [stripped(stateEvent('m.room.name', '', { name: 'Invitation' }, sender)), own('invite', sender)];
    const invitedFirst = invite(BOB);
    const knockState = [stripped(stateEvent('m.room.join_rules', '', { join_rule: 'knock' }, BOB)), own('knock', ME)];
    const kickState = createRoomState('!kick:fake', BOB);
    const kick = [member(ME, 'join'), member(ME, 'leave', { sender: BOB, reason: 'out' })];
    const invitedLast = invite(CAROL);
    const newest = message('after all', BOB);
    await pushSync(
      fake,
      alice,
      syncResponse({
        // The last invite first: the response's order says nothing.
        invite: { '!inv2:fake': invitedLast, '!inv1:fake': invitedFirst },
        knock: { '!kn:fake': knockState },
        leave: { '!kick:fake': { state: kickState, timeline: kick } },
        join: {
          '!new:fake': { state: newState, timeline: [newest] },
          '!old:fake': { state: oldState, timeline: [oldMessage] },
        },
      }),
    );
    const res = await slidingSync(proxy, alice.token, { lists: { all: list() } }, { pos: first.body.pos, timeout: 0 });
    const expected = ['!new:fake', '!inv2:fake', '!kick:fake', '!kn:fake', '!inv1:fake', '!old:fake'];
    assert.deepEqual(listIds(res.body, 'all'), expected, 'most recent first');
    const stamps = expected.map((id) => res.body.rooms[id]?.bump_stamp as number);
    assert.deepEqual(
      stamps,
      [...stamps].sort((a, b) => b - a),
      `bump_stamps follow the same order: ${stamps}`,
    );
    assert.equal(new Set(stamps).size, stamps.length, `no two rooms share a bump_stamp: ${stamps}`);
  });

  it('sends the real unread counts from the v2 unread_notifications', async (t) => {
    const { fake, proxy } = await startStack(t);
    const unread = (notification_count: number, highlight_count: number) => ({ notification_count, highlight_count });
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({
        join: {
          '!n:fake': { state: createRoomState('!n:fake', ME, { joined: [BOB] }), timeline: [message('hi', BOB)], unread: unread(3, 1) },
        },
      }),
    );
    const req = { lists: { all: list() } };
    const first = await slidingSync(proxy, alice.token, req);
    assert.deepEqual([first.body.rooms['!n:fake']?.notification_count, first.body.rooms['!n:fake']?.highlight_count], [3, 1]);
    await pushSync(fake, alice, syncResponse({ join: { '!n:fake': { timeline: [message('@alice!', BOB)], unread: unread(4, 2) } } }));
    const next = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 0 });
    assert.deepEqual([next.body.rooms['!n:fake']?.notification_count, next.body.rooms['!n:fake']?.highlight_count], [4, 2]);
  });

  it('sends a room whose unread counts alone changed (read on another device)', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({
        join: {
          '!n:fake': {
            state: createRoomState('!n:fake', ME, { joined: [BOB] }),
            timeline: [message('hi', BOB)],
            unread: { notification_count: 2, highlight_count: 1 },
          },
        },
      }),
    );
    const req = { lists: { all: list() } };
    const first = await slidingSync(proxy, alice.token, req);
    assert.equal(first.body.rooms['!n:fake']?.notification_count, 2);
    // Read elsewhere: the homeserver reports zero counts and no new event.
    await pushSync(fake, alice, syncResponse({ join: { '!n:fake': { unread: { notification_count: 0, highlight_count: 0 } } } }));
    const next = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 1000 });
    assert.deepEqual([next.body.rooms['!n:fake']?.notification_count, next.body.rooms['!n:fake']?.highlight_count], [0, 0]);
    assert.ok(next.ms < 900, 'the change ends the long-poll');
  });

  it('sends avatar from m.room.avatar, heroes with their avatar_url, and an avatar change', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({
        join: {
          '!pic:fake': {
            state: [...createRoomState('!pic:fake', ME, { name: 'Pictured' }), stateEvent('m.room.avatar', '', { url: 'mxc://fake/room' })],
            timeline: [message('a')],
          },
          '!heroes:fake': {
            state: [
              ...createRoomState('!heroes:fake', ME),
              member(BOB, 'join', { displayname: 'Bob', avatarUrl: 'mxc://fake/bob' }),
              member(CAROL, 'join', { displayname: 'Carol' }),
            ],
            timeline: [message('b')],
          },
        },
      }),
    );
    const req = { lists: { all: list() } };
    const first = await slidingSync(proxy, alice.token, req);
    assert.equal(first.status, 200);
    assert.equal(first.body.rooms['!pic:fake']?.avatar, 'mxc://fake/room');
    const unnamed = first.body.rooms['!heroes:fake'];
    assert.ok(unnamed && !('avatar' in unnamed), 'no avatar without m.room.avatar');
    const heroes = [...(unnamed?.heroes ?? [])].sort((a, b) => a.user_id.localeCompare(b.user_id));
    assert.deepEqual(heroes, [
      { user_id: BOB, displayname: 'Bob', avatar_url: 'mxc://fake/bob' },
      { user_id: CAROL, displayname: 'Carol' },
    ]);

    await pushSync(
      fake,
      alice,
      syncResponse({ join: { '!pic:fake': { timeline: [stateEvent('m.room.avatar', '', { url: 'mxc://fake/new' }), message('c')] } } }),
    );
    const next = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 0 });
    assert.equal(next.body.rooms['!pic:fake']?.avatar, 'mxc://fake/new', 'a changed avatar is sent');
    await pushSync(fake, alice, syncResponse({ join: { '!pic:fake': { timeline: [message('d')] } } }));
    const later = await slidingSync(proxy, alice.token, req, { pos: next.body.pos, timeout: 0 });
    const room = later.body.rooms['!pic:fake'];
    assert.ok(room && !('avatar' in room), 'an unchanged avatar is not re-sent');
  });
});
