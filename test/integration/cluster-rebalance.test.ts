// The rebalance every clustered process runs every 2 s must stay cheap as devices grow: a
// settled process reads counts, not the device list, and a token is read and decrypted only for
// a device this process is claiming.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type pg from 'pg';
import { createInProcessBus } from '../../src/bus/bus.js';
import { createAccumulator } from '../../src/ingest/accumulator.js';
import { DEFAULT_POLLER_OPTIONS } from '../../src/poller/device-poller.js';
import { PollerManager } from '../../src/poller/poller-manager.js';
import type { Pool } from '../../src/store/db.js';
import { DeviceLeases } from '../../src/store/device-leases.js';
import { insertToken } from '../../src/store/devices-table.js';
import { takeInstanceLock } from '../../src/store/instance-lock.js';
import { createTokenCipher, hashToken } from '../../src/store/token-cipher.js';
import type { Homeserver } from '../../src/upstream/homeserver-client.js';
import { createTestDatabase, type TestDatabase, testLogger } from '../support/db.js';

const DEVICES = 12;

/** A homeserver whose syncs wait until aborted: pollers start and hold their devices, nothing more. */
const silentHomeserver = {
  sync: (_token: string, _params: unknown, opts: { signal?: AbortSignal }) =>
    new Promise((_resolve, reject) => {
      // A poll queued for a first-poll slot starts after its poller was stopped.
      if (opts.signal?.aborted) reject(opts.signal.reason);
      opts.signal?.addEventListener('abort', () => reject(opts.signal?.reason), { once: true });
    }),
} as unknown as Homeserver;

interface Reads {
  /** Rows returned per query since the last reset. */
  rows: number[];
  /** Rows that carried an encrypted token. */
  tokenRows: number;
  decrypts: number;
}

/** A process's poller manager whose pool and cipher count what a rebalance reads and decrypts. */
function processOf(db: TestDatabase, secret: string) {
  const reads: Reads = { rows: [], tokenRows: 0, decrypts: 0 };
  const counted = new Proxy(db.pool, {
    get(target, prop, receiver) {
      if (prop !== 'query') return Reflect.get(target, prop, receiver);
      return async (...args: Parameters<pg.Pool['query']>) => {
        const res = (await (target.query as (...a: unknown[]) => Promise<pg.QueryResult>)(...args)) as pg.QueryResult;
        reads.rows.push(res.rows.length);
        reads.tokenRows += res.rows.filter((r) => 'tokenEncrypted' in r || 'token_encrypted' in r).length;
        return res;
      };
    },
  }) as Pool;
  const cipher = createTokenCipher(secret);
  const counting = {
    encrypt: cipher.encrypt,
    decrypt: (data: Buffer) => {
      reads.decrypts++;
      return cipher.decrypt(data);
    },
  };
  const bus = createInProcessBus(testLogger);
  const leases = new DeviceLeases(db.pool, testLogger, { heartbeatMs: 60_000, leaseMs: 120_000 }, () => undefined);
  const manager = new PollerManager(
    {
      homeserver: silentHomeserver,
      accumulator: createAccumulator({ pool: db.pool, bus, logger: testLogger }),
      pool: counted,
      bus,
      cipher: counting,
      logger: testLogger,
      leases,
    },
    { ...DEFAULT_POLLER_OPTIONS, idleDays: 30, firstPollConcurrency: 4 },
  );
  return {
    manager,
    reads,
    reset() {
      reads.rows = [];
      reads.tokenRows = 0;
      reads.decrypts = 0;
    },
  };
}

describe('rebalancing devices across processes', () => {
  it('reads counts when settled, and a token only for each device it claims', async (t) => {
    const db = await createTestDatabase(t, { dropManually: true });
    const secret = 'rebalance-secret';
    const cipher = createTokenCipher(secret);
    for (let i = 0; i < DEVICES; i++) {
      const token = `token-${i}`;
      await insertToken(db.pool, { tokenHash: hashToken(token), tokenEncrypted: cipher.encrypt(token), userId: `@u${i}:x`, deviceId: 'D' });
    }
    // Two live processes, as the instance lock counts them.
    const locks = [await takeInstanceLock(db.pool, 'cluster', testLogger), await takeInstanceLock(db.pool, 'cluster', testLogger)];
    const [a, b] = [processOf(db, secret), processOf(db, secret)] as const;
    t.after(async () => {
      await Promise.all([a.manager.stopAll(), b.manager.stopAll()]);
      for (const lock of locks) await lock.release();
      await db.drop();
    });

    await a.manager.rebalance();
    assert.equal(a.manager.size, DEVICES / 2, 'its fair share');
    assert.equal(a.reads.decrypts, DEVICES / 2, 'a token decrypted per device claimed');
    assert.equal(a.reads.tokenRows, DEVICES / 2, 'a token read per device claimed');

    await b.manager.rebalance();
    assert.equal(b.manager.size, DEVICES / 2, 'the other half');
    assert.equal(b.reads.decrypts, DEVICES / 2);
    assert.equal(b.reads.tokenRows, DEVICES / 2);

    // Settled: every further rebalance reads one count, no device row, no token.
    a.reset();
    b.reset();
    for (let round = 0; round < 3; round++) {
      await a.manager.rebalance();
      await b.manager.rebalance();
    }
    for (const p of [a, b]) {
      assert.equal(p.manager.size, DEVICES / 2);
      assert.equal(p.reads.decrypts, 0, 'nothing decrypted when settled');
      assert.equal(p.reads.tokenRows, 0, 'no token read when settled');
      assert.deepEqual(p.reads.rows, [1, 1, 1], 'one row (a count) per rebalance');
    }
  });
});
