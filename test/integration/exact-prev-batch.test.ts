// prev_batch for a timeline that starts inside a v2 chunk: the proxy asks the homeserver's
// /context (with the device's token) for the token from just before its oldest event, stores
// it, and serves it from then on; when /context fails, the nearest stored token is served.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRoomState, message, syncResponse } from '../support/builders.js';
import { addUser, pushSync, slidingSync, startStack } from '../support/sliding-sync-client.js';

const ME = '@alice:fake';
const ROOM = '!chunk:fake';
const sub = (limit: number) => ({ room_subscriptions: { [ROOM]: { timeline_limit: limit, required_state: [] } } });

describe('exact prev_batch', () => {
  it('asks /context once for a timeline starting mid-chunk, and serves the stored token afterwards', async (t) => {
    const { fake, proxy } = await startStack(t);
    const contexts: string[] = [];
    fake.route('GET', `/_matrix/client/v3/rooms/${encodeURIComponent(ROOM)}/context/`, (req) => {
      contexts.push(decodeURIComponent(req.path.split('/context/')[1] ?? ''));
      return { status: 200, body: { start: 'exact-before', end: 'x', events_before: [], events_after: [], state: [] } };
    });
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({ join: { [ROOM]: { state: createRoomState(ROOM, ME), timeline: [message('one')], prevBatch: 'pb-one' } } }),
    );
    const first = await slidingSync(proxy, alice.token, sub(1));
    assert.equal(first.body.rooms[ROOM]?.prev_batch, 'pb-one', "a chunk's first event has its own token: no /context");
    // Two events in one chunk: a one-event timeline starts at the second.
    const second = message('three');
    await pushSync(fake, alice, syncResponse({ join: { [ROOM]: { timeline: [message('two'), second], prevBatch: 'pb-two' } } }));
    const fresh = await slidingSync(proxy, alice.token, { ...sub(1), conn_id: 'other' });
    assert.equal(fresh.body.rooms[ROOM]?.prev_batch, 'exact-before');
    assert.deepEqual(contexts, [second.event_id]);
    const again = await slidingSync(proxy, alice.token, { ...sub(1), conn_id: 'third' });
    assert.equal(again.body.rooms[ROOM]?.prev_batch, 'exact-before', 'stored with the event');
    assert.equal(contexts.length, 1, 'asked once');
  });

  it('asks /context for timelines sent from scratch or limited, never for a live delta', async (t) => {
    const { fake, proxy } = await startStack(t);
    const contexts: string[] = [];
    fake.route('GET', `/_matrix/client/v3/rooms/${encodeURIComponent(ROOM)}/context/`, (req) => {
      contexts.push(decodeURIComponent(req.path.split('/context/')[1] ?? ''));
      return { status: 200, body: { start: 'exact-before', end: 'x', events_before: [], events_after: [], state: [] } };
    });
    const two = message('two');
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({ join: { [ROOM]: { state: createRoomState(ROOM, ME), timeline: [message('one'), two], prevBatch: 'pb' } } }),
    );
    const first = await slidingSync(proxy, alice.token, sub(5));
    // A chunk that repeats a stored event: the new one after it starts no chunk of its own.
    const three = message('three');
    await pushSync(fake, alice, syncResponse({ join: { [ROOM]: { timeline: [two, three], prevBatch: 'pb-two' } } }));
    const delta = await slidingSync(proxy, alice.token, sub(5), { pos: first.body.pos, timeout: 0 });
    assert.deepEqual(
      delta.body.rooms[ROOM]?.timeline?.map((e: { event_id: string }) => e.event_id),
      [three.event_id],
    );
    assert.equal(delta.body.rooms[ROOM]?.limited, false);
    assert.deepEqual(contexts, [], 'a live delta costs no homeserver round trip');
    await slidingSync(proxy, alice.token, { ...sub(1), conn_id: 'fresh' });
    assert.deepEqual(contexts, [three.event_id], 'from scratch it does');
  });

  it('serves the nearest stored token when /context fails', async (t) => {
    const { fake, proxy } = await startStack(t);
    fake.route('GET', '/_matrix/client/v3/rooms/', () => ({ status: 500, body: { errcode: 'M_UNKNOWN', error: 'boom' } }));
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({ join: { [ROOM]: { state: createRoomState(ROOM, ME), timeline: [message('one'), message('two')], prevBatch: 'pb' } } }),
    );
    const res = await slidingSync(proxy, alice.token, sub(1));
    assert.equal(res.status, 200);
    assert.ok(res.body.rooms[ROOM]?.prev_batch, 'still a token to paginate from');
    assert.notEqual(res.body.rooms[ROOM]?.prev_batch, 'exact-before');
  });
});
