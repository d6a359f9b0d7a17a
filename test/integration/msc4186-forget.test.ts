// Forgetting rooms through the front door: kicked and banned rooms are listed until forgotten,
// so a successful upstream POST /rooms/{roomId}/forget drops the user's row and the caches
// hear of it. A refused forget, or one of a room the user is still in, changes nothing.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { createRoomState, member, message, syncResponse } from '../support/builders.js';
import type { FakeHomeserver } from '../support/fake-homeserver.js';
import type { TestProxy } from '../support/proxy.js';
import { addUser, listIds, pushSync, slidingSync, startStack } from '../support/sliding-sync-client.js';

const ME = '@alice:fake';
const BOB = '@bob:fake';
const REQ = { lists: { all: { ranges: [[0, 20]], timeline_limit: 1, required_state: [] } } };

/** Alice is in !j, kicked from !k and banned from !b. The stand-in homeserver forgets anything unless told to refuse. */
async function kickedAndBanned(t: TestContext) {
  const { fake, proxy } = await startStack(t);
  const forgets: string[] = [];
  let refuse = false;
  fake.route('POST', '/_matrix/client/', (req) => {
    if (!req.path.endsWith('/forget')) return undefined;
    forgets.push(req.path);
    return refuse ? { status: 400, body: { errcode: 'M_UNKNOWN', error: 'User is in room' } } : { status: 200, body: {} };
  });
  const room = (id: string) => ({ state: createRoomState(id, BOB, { joined: [ME] }), timeline: [message(`in ${id}`, BOB)] });
  const alice = addUser(
    fake,
    ME,
    'A',
    syncResponse({ join: { '!j:fake': room('!j:fake'), '!k:fake': room('!k:fake'), '!b:fake': room('!b:fake') } }),
  );
  const first = await slidingSync(proxy, alice.token, REQ);
  assert.equal(first.body.lists.all?.count, 3);
  await pushSync(
    fake,
    alice,
    syncResponse({
      leave: {
        '!k:fake': { timeline: [member(ME, 'leave', { sender: BOB })] },
        '!b:fake': { timeline: [member(ME, 'ban', { sender: BOB })] },
      },
    }),
  );
  const second = await slidingSync(proxy, alice.token, REQ, { pos: first.body.pos, timeout: 0 });
  assert.equal(second.body.lists.all?.count, 3, 'kicked and banned rooms stay listed');
  return { fake, proxy, alice, pos: second.body.pos, forgets, refuse: (v: boolean) => (refuse = v) };
}

async function forget(proxy: TestProxy, token: string, roomId: string, version = 'v3') {
  const res = await fetch(`${proxy.url}/_matrix/client/${version}/rooms/${encodeURIComponent(roomId)}/forget`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: '{}',
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function rowsOf(proxy: TestProxy) {
  const { rows } = await proxy.pool.query('SELECT room_id FROM user_rooms WHERE user_id = $1 ORDER BY room_id', [ME]);
  return rows.map((r) => r.room_id as string);
}

function sameToken(fake: FakeHomeserver, deviceId: string) {
  const token = `tok-alice-${deviceId}`;
  fake.addToken(token, ME, deviceId);
  return token;
}

describe('MSC4186 forgotten rooms', () => {
  it('stops listing a kicked or banned room once the homeserver has forgotten it', async (t) => {
    const { fake, proxy, alice, pos, forgets } = await kickedAndBanned(t);
    const answer = await forget(proxy, alice.token, '!k:fake');
    assert.equal(answer.status, 200, 'the homeserver answer is passed on');
    assert.deepEqual(forgets, [`/_matrix/client/v3/rooms/${encodeURIComponent('!k:fake')}/forget`]);
    assert.deepEqual(await rowsOf(proxy), ['!b:fake', '!j:fake']);
    const next = await slidingSync(proxy, alice.token, REQ, { pos, timeout: 0 });
    assert.equal(next.status, 200);
    assert.equal(next.body.lists.all?.count, 2);
    assert.deepEqual(listIds(next.body, 'all').sort(), ['!b:fake', '!j:fake']);

    // r0, and a token of a device the proxy does not poll (found by whoami).
    const other = sameToken(fake, 'OTHER');
    assert.equal((await forget(proxy, other, '!b:fake', 'r0')).status, 200);
    assert.deepEqual(await rowsOf(proxy), ['!j:fake']);
    const last = await slidingSync(proxy, alice.token, REQ, { pos: next.body.pos, timeout: 0 });
    assert.deepEqual(listIds(last.body, 'all'), ['!j:fake']);
    const fresh = await slidingSync(proxy, alice.token, REQ);
    assert.deepEqual(listIds(fresh.body, 'all'), ['!j:fake'], 'a new connection does not list them either');
  });

  it('keeps the room when the homeserver refuses, and never drops a room the user is in', async (t) => {
    const { proxy, alice, pos, refuse } = await kickedAndBanned(t);
    refuse(true);
    const refused = await forget(proxy, alice.token, '!k:fake');
    assert.equal(refused.status, 400);
    assert.equal(refused.body.errcode, 'M_UNKNOWN');
    refuse(false);
    assert.equal((await forget(proxy, alice.token, '!j:fake')).status, 200);
    assert.deepEqual(await rowsOf(proxy), ['!b:fake', '!j:fake', '!k:fake']);
    const next = await slidingSync(proxy, alice.token, REQ, { pos, timeout: 0 });
    assert.equal(next.body.lists.all?.count, 3);
  });
});
