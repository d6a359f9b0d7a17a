// Knocks: a room the user asked to join is listed with its stripped state, like an invite, and
// becomes a joined room, sent from scratch, once the knock is accepted.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRoomState, member, message, stateEvent, stripped, syncResponse } from '../support/builders.js';
import { addUser, pushSync, slidingSync, startStack } from '../support/sliding-sync-client.js';

const ME = '@alice:fake';
const BOB = '@bob:fake';
const req = { lists: { all: { ranges: [[0, 10]], timeline_limit: 5, required_state: [['m.room.name', '']] } } };

describe('MSC4186 knocks', () => {
  it('lists a knocked room with its stripped state, then sends it from scratch once joined', async (t) => {
    const { fake, proxy } = await startStack(t);
    const knockState = [stateEvent('m.room.name', '', { name: 'Knock knock' }, BOB), member(ME, 'knock')].map(stripped);
    const alice = addUser(fake, ME, 'A', syncResponse({ knock: { '!kn:fake': knockState } }));
    const first = await slidingSync(proxy, alice.token, req);
    assert.equal(first.status, 200);
    assert.equal(first.body.lists.all?.count, 1);
    const room = first.body.rooms['!kn:fake'];
    assert.equal(room?.initial, true);
    assert.deepEqual(
      (room?.invite_state ?? []).map((e) => e.type),
      ['m.room.name', 'm.room.member'],
    );
    assert.equal(room?.timeline, undefined, 'no timeline before joining');
    assert.equal(room?.required_state, undefined);

    await pushSync(
      fake,
      alice,
      syncResponse({
        join: {
          '!kn:fake': {
            state: createRoomState('!kn:fake', BOB, { name: 'Knock knock' }),
            timeline: [member(ME, 'join'), message('welcome', BOB)],
          },
        },
      }),
    );
    const joined = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 5000 });
    const now = joined.body.rooms['!kn:fake'];
    assert.equal(now?.initial, true, 'a newly joined room is sent from scratch');
    assert.equal(now?.invite_state, undefined);
    assert.deepEqual(
      (now?.timeline ?? []).map((e) => e.content.body ?? e.content.membership),
      ['join', 'welcome'],
    );
    assert.equal(now?.name, 'Knock knock');
  });
});
