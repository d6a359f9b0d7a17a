// UserCaches against real Postgres and the real accumulator: a membership change committed and
// published while a user's cache is first being loaded (after the load read the user's rooms,
// before it returned) must not be lost.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createInProcessBus } from '../../src/bus/bus.js';
import { RoomMetaCache } from '../../src/cache/room-meta-cache.js';
import { UserCaches } from '../../src/cache/user-cache.js';
import { createAccumulator } from '../../src/ingest/accumulator.js';
import { insertToken } from '../../src/store/devices-table.js';
import { parseSyncResponse } from '../../src/upstream/sync-response.js';
import { createTestDatabase, testLogger } from '../support/db.js';
import { gatedPool } from '../support/gated-pool.js';

const DEVICE = { userId: '@alice:x', deviceId: 'A1' };
let n = 0;
const member = (membership: string) => ({
  type: 'm.room.member',
  content: { membership },
  event_id: `$uc${++n}`,
  sender: DEVICE.userId,
  state_key: DEVICE.userId,
  origin_server_ts: 1_700_000_000_000 + n,
});

describe('UserCaches', () => {
  it('keeps a room joined while the user cache is first loaded', async (t) => {
    const { pool } = await createTestDatabase(t);
    const bus = createInProcessBus(testLogger);
    const acc = createAccumulator({ pool, bus, logger: testLogger });
    await insertToken(pool, { tokenHash: Buffer.alloc(32, 1), tokenEncrypted: Buffer.from('x'), ...DEVICE });
    let batch = 0;
    const join = async (roomId: string) => {
      const parsed = parseSyncResponse({
        next_batch: `b${++batch}`,
        rooms: { join: { [roomId]: { state: { events: [] }, timeline: { events: [member('join')], limited: false, prev_batch: 'pb' } } } },
      });
      assert.ok('response' in parsed);
      await acc.ingest(DEVICE, parsed.response);
    };
    await join('!first:x');
    const gated = gatedPool(pool);
    const users = new UserCaches(gated.pool, bus, new RoomMetaCache(pool, bus));
    // The load's two queries (rooms, classifying account data) read now, answer later.
    const held = gated.hold(2);
    const loading = users.get(DEVICE.userId);
    await held.read();
    held.stopHolding();
    await join('!second:x');
    held.release();
    const user = await loading;
    assert.deepEqual([...user.rooms.keys()].sort(), ['!first:x', '!second:x']);
    assert.deepEqual([...user.order].sort(), ['!first:x', '!second:x']);
  });
});
