// The response adapters: one neutral room result, each protocol's wire shape.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { msc3575Response } from '../../../src/http/msc3575-response.js';
import { msc4186Response } from '../../../src/http/msc4186-response.js';
import { RawJson, toJson } from '../../../src/sync/json.js';
import type { SyncResponse } from '../../../src/sync/types.js';

function neutral(): SyncResponse {
  return {
    pos: '7',
    lists: { all: { count: 1, ops: [{ op: 'SYNC', range: [0, 0], room_ids: ['!r:x'] }] } },
    rooms: {
      '!r:x': {
        initial: true,
        timeline: [new RawJson('{"type":"m.room.message"}')],
        limited: false,
        heroes: [
          { userId: '@b:x', displayname: 'Bob', avatarUrl: 'mxc://x/b', membership: 'join' },
          { userId: '@c:x', displayname: '', avatarUrl: '' },
        ],
        bumpPos: 42,
        bumpTs: 1700000000000,
      },
    },
    extensions: { to_device: { next_batch: '3', events: [] } },
  };
}

const wire = (body: Record<string, unknown>) => JSON.parse(toJson(body));

describe('sliding sync response adapters', () => {
  it('MSC4186: recency as bump_stamp, heroes as Synapse writes them, no timestamp', () => {
    const out = wire(msc4186Response(neutral()));
    const room = out.rooms['!r:x'];
    assert.equal(room.bump_stamp, 42);
    assert.equal(room.timestamp, undefined);
    assert.deepEqual(room.heroes, [
      { user_id: '@b:x', displayname: 'Bob', avatar_url: 'mxc://x/b' },
      { user_id: '@c:x', displayname: '', avatar_url: '' },
    ]);
    assert.deepEqual(room.timeline, [{ type: 'm.room.message' }]);
    assert.equal(out.pos, '7');
    assert.deepEqual(out.lists, neutral().lists);
    assert.deepEqual(out.extensions, { to_device: { next_batch: '3', events: [] } });
  });

  it('MSC3575: recency as timestamp, heroes without empty names, no bump_stamp', () => {
    const room = wire(msc3575Response(neutral())).rooms['!r:x'];
    assert.equal(room.timestamp, 1700000000000);
    assert.equal(room.bump_stamp, undefined);
    assert.deepEqual(room.heroes, [{ user_id: '@b:x', displayname: 'Bob', avatar_url: 'mxc://x/b' }, { user_id: '@c:x' }]);
    assert.equal(room.limited, false);
  });
});
