// Two processes (SYNCV3_CLUSTER) serving one connection: a request working on a copy loaded
// before another process's request recorded its response must not overwrite that response (its
// pos may already be with the client). The loser answers, if its client still listens, as a
// retry of its pos would be answered now. Deterministic: the order is driven step by step, and
// the engine says when a request is parked (onWait).
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { describe, it, type TestContext } from 'node:test';
import { createInProcessBus } from '../../src/bus/bus.js';
import { createAccumulator } from '../../src/ingest/accumulator.js';
import type { MatrixError } from '../../src/matrix-error.js';
import { insertToken } from '../../src/store/devices-table.js';
import { ConnectionManager, ConnectionMoved } from '../../src/sync/connections.js';
import { createSyncService } from '../../src/sync/create-engine.js';
import type { Device } from '../../src/sync/engine.js';
import { parseSyncResponse } from '../../src/upstream/sync-response.js';
import { createRoomState, engineRequest, message, syncResponse } from '../support/builders.js';
import { createTestDatabase, testLogger } from '../support/db.js';

const ALICE = '@alice:x';
const PHONE: Device = { userId: ALICE, deviceId: 'PHONE' };
const KEY = { ...PHONE, connId: 'main' };
const request = (pos: string | undefined, timeoutMs = 0) => engineRequest(pos, timeoutMs, 'main', 5);
const isUnknownPos = (err: unknown) => (err as MatrixError).errcode === 'M_UNKNOWN_POS';

async function setUp(t: TestContext) {
  const { pool } = await createTestDatabase(t);
  await insertToken(pool, { tokenHash: Buffer.alloc(32, 1), tokenEncrypted: Buffer.from('x'), ...PHONE });
  return { pool };
}

describe('a connection served by two processes', () => {
  it('never overwrites the response another process recorded first; the loser then finds its copy stale', async (t) => {
    const { pool } = await setUp(t);
    const a = new ConnectionManager(pool, { maxPerDevice: 10, maxInMemory: 10, shared: true });
    const b = new ConnectionManager(pool, { maxPerDevice: 10, maxInMemory: 10, shared: true });
    const p0 = await a.commit(await a.resolve(KEY, undefined), 0, new Map(), {});
    // Process A takes the client's request with p0 and works on its copy (a long-poll) ...
    const onA = await a.resolve(KEY, p0);
    // ... meanwhile the client retried p0 on process B, which answered first.
    const onB = await b.resolve(KEY, p0);
    const pB = await b.commit(onB, 1, new Map(), {});
    // A's response comes too late: nothing written.
    await assert.rejects(a.commit(onA, 2, new Map(), {}), ConnectionMoved);
    // B's pos is still good, on either process.
    const next = await a.resolve(KEY, pB);
    assert.equal(next.pos, Number(pB));
    // A's copy was forgotten: a pos the connection has moved past is refused there too.
    await assert.rejects(a.resolve(KEY, p0), isUnknownPos);
  });

  it('lets an overtaken long-poll whose client still listens answer from the row, and its pos continue', async (t) => {
    const { pool } = await setUp(t);
    // One bus for both: it stands for the cluster bus (both hear every ingest).
    const bus = createInProcessBus(testLogger);
    const acc = createAccumulator({ pool, bus, logger: testLogger });
    let batch = 0;
    const ingest = async (body: Record<string, unknown>) => {
      const parsed = parseSyncResponse({ next_batch: `b${++batch}`, ...body });
      assert.ok('response' in parsed);
      await acc.ingest(PHONE, parsed.response);
    };
    await ingest(syncResponse({ join: { '!a:x': { state: createRoomState('!a:x', ALICE), timeline: [message('hello', ALICE)] } } }));
    const waits = new EventEmitter();
    const service = (name: string) =>
      createSyncService(
        { pool, bus, logger: testLogger, onWait: () => waits.emit(name) },
        { maxConnectionsPerDevice: 10, maxConnectionsInMemory: 100, sharedConnections: true },
      );
    const [a, b] = [await service('a'), await service('b')];
    const signal = new AbortController().signal;

    const first = await a.engine.sync(PHONE, request(undefined), signal);
    const parked = once(waits, 'a');
    const longPoll = a.engine.sync(PHONE, request(first.pos, 10_000), signal);
    await parked;
    // The client gave up on it and retried on B, which answered at once (nothing new).
    const onB = await b.engine.sync(PHONE, request(first.pos), signal);
    assert.deepEqual(Object.keys(onB.rooms), []);
    // News wakes A's long-poll, whose connection moved on under it.
    await ingest(syncResponse({ join: { '!a:x': { timeline: [message('news', ALICE)] } } }));
    const answered = await longPoll;
    assert.deepEqual(
      (answered.rooms['!a:x']?.timeline ?? []).map((e) => JSON.parse(e.text).content.body),
      ['news'],
      'answered from the row, as a retry of its pos',
    );
    // That answer is now the connection's: its pos continues on either process, and B's
    // pending response was discarded as a retry discards it.
    const after = await b.engine.sync(PHONE, request(answered.pos), signal);
    assert.deepEqual(Object.keys(after.rooms), [], 'nothing sent twice');
    await assert.rejects(a.engine.sync(PHONE, request(onB.pos), signal), isUnknownPos);
  });
});
