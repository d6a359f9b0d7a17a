// MSC4186 timelines and lazy members over time through the whole proxy: gaps the homeserver
// reports, members that change after they were sent, and rooms joined while a connection lives.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRoomState, member, message, syncResponse } from '../support/builders.js';
import { addUser, bodies, listIds, pushSync, type SsRoom, slidingSync, startStack } from '../support/sliding-sync-client.js';

const ME = '@alice:fake';
const BOB = '@bob:fake';
const CAROL = '@carol:fake';
const list = (extra: Record<string, unknown> = {}) => ({ ranges: [[0, 9]], timeline_limit: 10, required_state: [], ...extra });
const memberOf = (room: SsRoom | undefined, userId: string) =>
  room?.required_state?.find((e) => e.type === 'm.room.member' && e.state_key === userId);

describe('MSC4186 timelines over time', () => {
  it('marks an incremental timeline limited when the homeserver reported a gap before it', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({ join: { '!g:fake': { state: createRoomState('!g:fake', ME), timeline: [message('m1')], prevBatch: 'pb-1' } } }),
    );
    const req = { lists: { all: list() } };
    const first = await slidingSync(proxy, alice.token, req);
    assert.deepEqual(bodies(first.body.rooms['!g:fake']?.timeline), ['m1']);
    // The proxy never saw what came between m1 and m10.
    await pushSync(
      fake,
      alice,
      syncResponse({ join: { '!g:fake': { timeline: [message('m10'), message('m11')], limited: true, prevBatch: 'pb-gap' } } }),
    );
    const next = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 0 });
    assert.deepEqual(bodies(next.body.rooms['!g:fake']?.timeline), ['m10', 'm11']);
    assert.equal(next.body.rooms['!g:fake']?.prev_batch, 'pb-gap');
    assert.equal(next.body.rooms['!g:fake']?.limited, true, 'the client must paginate to fill the gap');
  });

  it('starts a timeline at a gap inside it, so its prev_batch reaches the missing events', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({ join: { '!g:fake': { state: createRoomState('!g:fake', ME), timeline: [message('m1')], prevBatch: 'pb-1' } } }),
    );
    const req = { lists: { all: list() } };
    const first = await slidingSync(proxy, alice.token, req);
    await pushSync(fake, alice, syncResponse({ join: { '!g:fake': { timeline: [message('m2')], prevBatch: 'pb-2' } } }));
    await pushSync(fake, alice, syncResponse({ join: { '!g:fake': { timeline: [message('m9')], limited: true, prevBatch: 'pb-9' } } }));
    const next = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 0 });
    // m2 then m9 would hide the events between them: paginating back from m2's token skips them.
    assert.deepEqual(bodies(next.body.rooms['!g:fake']?.timeline), ['m9']);
    assert.equal(next.body.rooms['!g:fake']?.limited, true);
    assert.equal(next.body.rooms['!g:fake']?.prev_batch, 'pb-9');
  });

  it('re-sends a lazily loaded member that changed since it was sent', async (t) => {
    const { fake, proxy } = await startStack(t);
    const state = [...createRoomState('!l:fake', ME), member(BOB, 'join', { displayname: 'Bob' }), member(CAROL, 'join')];
    const alice = addUser(fake, ME, 'A', syncResponse({ join: { '!l:fake': { state, timeline: [message('hi', BOB)] } } }));
    const req = { lists: { all: list({ timeline_limit: 1, required_state: [['m.room.member', '$LAZY']] }) } };
    const first = await slidingSync(proxy, alice.token, req);
    assert.equal(memberOf(first.body.rooms['!l:fake'], BOB)?.content.displayname, 'Bob');
    // Bob renames himself, Carol talks, Bob talks: with timeline_limit 1 only Bob's message is returned.
    const rename = member(BOB, 'join', { displayname: 'Bobby' });
    const timeline = [rename, message('x', CAROL), message('y', BOB)];
    await pushSync(fake, alice, syncResponse({ join: { '!l:fake': { timeline } } }));
    const next = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 0 });
    const room = next.body.rooms['!l:fake'];
    assert.deepEqual(bodies(room?.timeline), ['y']);
    assert.equal(memberOf(room, BOB)?.event_id, rename.event_id, "Bob's current membership, not the stale one");
  });

  it('sends a room joined while the connection lives from scratch, at the top of the list', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({ join: { '!old:fake': { state: createRoomState('!old:fake', ME), timeline: [message('old')] } } }),
    );
    const req = { lists: { all: list({ required_state: [['m.room.name', '']] }) } };
    const first = await slidingSync(proxy, alice.token, req);
    assert.equal(first.body.lists.all?.count, 1);
    const state = createRoomState('!new:fake', BOB, { name: 'New' });
    await pushSync(
      fake,
      alice,
      syncResponse({ join: { '!new:fake': { state, timeline: [member(ME, 'join'), message('welcome', BOB)], limited: true } } }),
    );
    const next = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 0 });
    assert.equal(next.body.lists.all?.count, 2);
    assert.deepEqual(listIds(next.body, 'all'), ['!new:fake', '!old:fake']);
    const room = next.body.rooms['!new:fake'];
    assert.equal(room?.initial, true);
    assert.equal(room?.name, 'New');
    assert.deepEqual(bodies(room?.timeline).at(-1), 'welcome');
    assert.deepEqual(
      room?.required_state?.map((e) => e.content.name),
      ['New'],
    );
    assert.equal(next.body.rooms['!old:fake'], undefined);
  });
  it('sends joined_count and invited_count again when membership changes', async (t) => {
    const { fake, proxy } = await startStack(t);
    const state = [...createRoomState('!c:fake', ME), member(BOB, 'join', { displayname: 'Bob' })];
    const alice = addUser(fake, ME, 'A', syncResponse({ join: { '!c:fake': { state, timeline: [message('hi', BOB)] } } }));
    const req = { lists: { all: list({ timeline_limit: 1 }) } };
    const first = await slidingSync(proxy, alice.token, req);
    const before = first.body.rooms['!c:fake'];
    assert.deepEqual([before?.joined_count, before?.invited_count], [2, 0]);
    const invite = member(CAROL, 'invite', { sender: BOB, displayname: 'Carol' });
    await pushSync(fake, alice, syncResponse({ join: { '!c:fake': { timeline: [invite] } } }));
    const next = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 0 });
    const room = next.body.rooms['!c:fake'];
    assert.equal(room?.invited_count, 1);
    assert.ok(room?.joined_count === undefined || room.joined_count === 2, 'unchanged, so omitted or the same');
    await pushSync(fake, alice, syncResponse({ join: { '!c:fake': { timeline: [member(CAROL, 'join', { displayname: 'Carol' })] } } }));
    const joined = await slidingSync(proxy, alice.token, req, { pos: next.body.pos, timeout: 0 });
    assert.deepEqual([joined.body.rooms['!c:fake']?.joined_count, joined.body.rooms['!c:fake']?.invited_count], [3, 0]);
  });
  it('sends heroes again when an invite changes who they are', async (t) => {
    const { fake, proxy } = await startStack(t);
    const state = [...createRoomState('!h:fake', ME), member(BOB, 'join', { displayname: 'Bob' })];
    const alice = addUser(fake, ME, 'A', syncResponse({ join: { '!h:fake': { state, timeline: [message('hi', BOB)] } } }));
    const req = { lists: { all: list({ timeline_limit: 1 }) } };
    const first = await slidingSync(proxy, alice.token, req);
    assert.deepEqual(first.body.rooms['!h:fake']?.heroes, [{ user_id: BOB, displayname: 'Bob' }]);
    const invite = member(CAROL, 'invite', { sender: BOB, displayname: 'Carol' });
    await pushSync(fake, alice, syncResponse({ join: { '!h:fake': { timeline: [invite] } } }));
    const next = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 0 });
    assert.deepEqual(next.body.rooms['!h:fake']?.heroes?.map((h) => h.user_id).sort(), [BOB, CAROL]);
  });
});
