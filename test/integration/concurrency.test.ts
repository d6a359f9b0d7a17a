// Concurrent requests of one user against real Postgres and the real accumulator: several
// devices waiting on one change, retries of the same pos racing each other, two starts racing
// on one conn_id, and two processes confirming one pos. Deterministic: the engine says when a
// request is parked (onWait), no sleep stands for it.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it, type TestContext } from 'node:test';
import { createInProcessBus } from '../../src/bus/bus.js';
import { createAccumulator } from '../../src/ingest/accumulator.js';
import { MatrixError } from '../../src/matrix-error.js';
import { insertToken } from '../../src/store/devices-table.js';
import { ConnectionManager } from '../../src/sync/connections.js';
import { createSyncService } from '../../src/sync/create-engine.js';
import type { Device } from '../../src/sync/engine.js';
import type { SyncResponse } from '../../src/sync/types.js';
import { parseSyncResponse } from '../../src/upstream/sync-response.js';
import { createRoomState, engineRequest, member, message, stripped, syncResponse } from '../support/builders.js';
import { createTestDatabase, testLogger } from '../support/db.js';

const ALICE = '@alice:x';
const PHONE: Device = { userId: ALICE, deviceId: 'PHONE' };
const DESKTOP: Device = { userId: ALICE, deviceId: 'DESKTOP' };

async function setUp(t: TestContext) {
  const { pool } = await createTestDatabase(t);
  const bus = createInProcessBus(testLogger);
  const acc = createAccumulator({ pool, bus, logger: testLogger });
  let token = 0;
  for (const d of [PHONE, DESKTOP])
    await insertToken(pool, { tokenHash: Buffer.alloc(32, ++token), tokenEncrypted: Buffer.from('x'), ...d });
  const ingest = async (body: Record<string, unknown>) => {
    const parsed = parseSyncResponse({ next_batch: `b${++token}`, ...body });
    assert.ok('response' in parsed);
    await acc.ingest(PHONE, parsed.response);
  };
  await ingest(syncResponse({ join: { '!a:x': { state: createRoomState('!a:x', ALICE), timeline: [message('hello', ALICE)] } } }));
  const waits = new EventEmitter();
  const service = await createSyncService(
    { pool, bus, logger: testLogger, onWait: (device) => waits.emit('wait', device) },
    { maxConnectionsPerDevice: 10, maxConnectionsInMemory: 100 },
  );
  return { pool, ingest, waits, ...service };
}

/** Settles every request; a failure must be a Matrix error below 500 (what the HTTP layer answers as is). */
async function settleAll(
  requests: [Promise<SyncResponse>, Promise<SyncResponse>],
): Promise<[SyncResponse | MatrixError, SyncResponse | MatrixError]> {
  const outcome = (s: PromiseSettledResult<SyncResponse>) => {
    if (s.status === 'fulfilled') return s.value;
    assert.ok(s.reason instanceof MatrixError, `a Matrix error, not ${String(s.reason)}`);
    assert.ok(s.reason.statusCode < 500, `never a 5xx: ${s.reason.statusCode} ${s.reason.message}`);
    return s.reason;
  };
  const [a, b] = await Promise.allSettled(requests);
  return [outcome(a), outcome(b)];
}

describe('concurrent requests of one user', () => {
  it('wakes both devices of the user on one invite', async (t) => {
    const { engine, ingest, waits } = await setUp(t);
    const signal = new AbortController().signal;
    const parked = new Set<string>();
    const bothParked = new Promise<void>((resolve) =>
      waits.on('wait', (d: Device) => {
        parked.add(d.deviceId);
        if (parked.size === 2) resolve();
      }),
    );
    const polls = [];
    for (const d of [PHONE, DESKTOP]) {
      const first = await engine.sync(d, engineRequest(undefined), signal);
      polls.push(engine.sync(d, engineRequest(first.pos, 20_000), signal));
    }
    await bothParked;
    const invite = [...createRoomState('!inv:x', '@bob:x'), member(ALICE, 'invite', { sender: '@bob:x' })].map(stripped);
    const answeredBy = Promise.all(polls);
    await ingest(syncResponse({ invite: { '!inv:x': invite } }));
    // Both must answer with the invite, not one with it and the other at its timeout.
    const started = performance.now();
    const [phone, desktop] = await answeredBy;
    assert.ok(performance.now() - started < 10_000, 'answered by the wake, not the timeout');
    assert.ok(phone?.rooms['!inv:x'], 'the phone got the invite');
    assert.ok(desktop?.rooms['!inv:x'], 'the desktop got the invite');
  });

  it('answers the same pos sent twice at once without a 5xx, 20 rounds', async (t) => {
    const { engine } = await setUp(t);
    const signal = new AbortController().signal;
    let pos = (await engine.sync(PHONE, engineRequest(undefined), signal)).pos;
    for (let round = 0; round < 20; round++) {
      const [first, retry] = await settleAll([
        engine.sync(PHONE, engineRequest(pos), signal),
        engine.sync(PHONE, engineRequest(pos), signal),
      ]);
      // The retry arrived last: it takes over the connection and answers; the first either
      // answered already or is told it was superseded.
      assert.ok(!(retry instanceof MatrixError), `round ${round}: the retry is answered (${String(retry)})`);
      if (first instanceof MatrixError) assert.equal(first.errcode, 'M_UNKNOWN', `round ${round}: superseded`);
      pos = retry.pos;
    }
    // The chain goes on from the last answer.
    await engine.sync(PHONE, engineRequest(pos), signal);
  });

  it('starts two pos-less requests on one conn_id at once without a 5xx, 20 rounds', async (t) => {
    const { engine } = await setUp(t);
    const signal = new AbortController().signal;
    for (let round = 0; round < 20; round++) {
      const [, second] = await settleAll([
        engine.sync(PHONE, engineRequest(undefined), signal),
        engine.sync(PHONE, engineRequest(undefined), signal),
      ]);
      assert.ok(!(second instanceof MatrixError), `round ${round}: the later start is answered (${String(second)})`);
      const next = await engine.sync(PHONE, engineRequest(second.pos), signal);
      assert.ok(next.pos, `round ${round}: its pos continues the connection`);
    }
  });

  it('lets one of two processes confirm a pos and the other serve it as the confirmed one', async (t) => {
    const { pool, engine } = await setUp(t);
    const signal = new AbortController().signal;
    const first = await engine.sync(PHONE, engineRequest(undefined), signal);
    const pending = (await engine.sync(PHONE, engineRequest(first.pos), signal)).pos;
    // Two other processes load the connection with `pending` still pending, then both confirm it.
    const key = { ...PHONE, connId: 'main' };
    const a = new ConnectionManager(pool, { maxPerDevice: 10, maxInMemory: 10 });
    const b = new ConnectionManager(pool, { maxPerDevice: 10, maxInMemory: 10 });
    const [ca, cb] = await Promise.all([a.resolve(key, pending), b.resolve(key, pending)]);
    assert.equal(ca.pos, Number(pending));
    assert.equal(cb.pos, Number(pending));
    // The pos before it is now really old.
    await assert.rejects(a.resolve(key, first.pos), (err: MatrixError) => err.errcode === 'M_UNKNOWN_POS');
  });
});
