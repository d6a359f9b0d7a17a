import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseSyncResponse } from '../../../src/upstream/sync-response.js';

describe('v2 /sync parsing', () => {
  it('drops malformed events, counting them, and keeps the rest', () => {
    const parsed = parseSyncResponse({
      next_batch: 's1',
      rooms: {
        join: {
          '!r:x': {
            timeline: {
              events: [
                { type: 'm.room.message', content: { body: 'hi' }, event_id: '$1', sender: '@a:x', origin_server_ts: 1 },
                { type: 'm.room.message', content: {}, sender: '@a:x', origin_server_ts: 2 },
                'garbage',
              ],
              limited: true,
              prev_batch: 'p',
            },
          },
        },
      },
      to_device: { events: [{ type: 'm.room_key', sender: '@a:x', content: {} }, { nope: 1 }] },
    });
    assert.ok('response' in parsed);
    assert.equal(parsed.stats.droppedEvents, 3);
    const room = parsed.response.rooms.join['!r:x'];
    assert.equal(room?.timeline.events.length, 1);
    assert.equal(room?.timeline.limited, true);
    assert.equal(room?.timeline.prevBatch, 'p');
    assert.equal(parsed.response.to_device.length, 1);
    assert.deepEqual(parsed.response.rooms.leave, {});
  });

  it('rejects a response without next_batch or with rooms of the wrong shape', () => {
    assert.match((parseSyncResponse({ rooms: {} }) as { error: string }).error, /next_batch/);
    assert.ok('error' in parseSyncResponse({ next_batch: 's', rooms: { join: [] } }));
    assert.ok('error' in parseSyncResponse('nope'));
  });

  it('fills absent blocks with empty defaults', () => {
    const parsed = parseSyncResponse({ next_batch: 's2' });
    assert.ok('response' in parsed);
    assert.deepEqual(parsed.response.rooms, { join: {}, invite: {}, knock: {}, leave: {} });
    assert.deepEqual(parsed.response.account_data, []);
    assert.equal(parsed.response.device_lists, undefined);
  });
});
