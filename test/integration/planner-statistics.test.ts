// The planner's statistics after fast growth: a new database's events table is analysed once an
// ingest has stored enough events, without waiting for autovacuum.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { createInProcessBus } from '../../src/bus/bus.js';
import { createAccumulator } from '../../src/ingest/accumulator.js';
import { insertToken } from '../../src/store/devices-table.js';
import { plannerStatistics } from '../../src/store/planner-statistics.js';
import { parseSyncResponse } from '../../src/upstream/sync-response.js';
import { createRoomState, message, syncResponse } from '../support/builders.js';
import { createTestDatabase, testLogger } from '../support/db.js';

it('analyses the tables once an ingest has stored enough events, and counts only new ones', async (t) => {
  const { pool } = await createTestDatabase(t);
  const statistics = plannerStatistics(pool, testLogger, { minRows: 40, growth: 0.2, minIntervalMs: 0 });
  const acc = createAccumulator({ pool, bus: createInProcessBus(testLogger), logger: testLogger, statistics });
  const device = { userId: '@alice:x', deviceId: 'A1' };
  await insertToken(pool, { tokenHash: Buffer.alloc(32, 1), tokenEncrypted: Buffer.from('x'), ...device });
  const analysedAt = async () =>
    (await pool.query<{ at: Date | null }>(`SELECT last_analyze AS at FROM pg_stat_user_tables WHERE relname = 'events'`)).rows[0]?.at ??
    null;
  const ingest = async (body: Record<string, unknown>) => {
    const parsed = parseSyncResponse(body);
    assert.ok('response' in parsed);
    await acc.ingest(device, parsed.response);
    await statistics.idle();
  };
  const room = (n: number, messages: number) => ({
    state: createRoomState(`!r${n}:x`, device.userId),
    timeline: Array.from({ length: messages }, (_, i) => message(`m${n}.${i}`, device.userId)),
  });

  await ingest(syncResponse({ join: { '!r1:x': room(1, 5) }, nextBatch: 's1' }));
  assert.equal(await analysedAt(), null, 'a few events: left to autovacuum');
  const bigger = room(2, 40);
  await ingest(syncResponse({ join: { '!r2:x': bigger }, nextBatch: 's2' }));
  const first = await analysedAt();
  assert.ok(first, 'analysed once 40 new events were stored');
  const { rows } = await pool.query<{ n: number }>(`SELECT reltuples::int AS n FROM pg_class WHERE relname = 'events'`);
  assert.ok((rows[0]?.n ?? 0) >= 45, `the planner counts the stored events: ${rows[0]?.n}`);
  // The same events again (another poller's copy) are no growth.
  await ingest(syncResponse({ join: { '!r2:x': bigger }, nextBatch: 's3' }));
  assert.deepEqual(await analysedAt(), first);
});
