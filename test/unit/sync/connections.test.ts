// The connection manager against a real database: the "too far behind" rule (Synapse's: more
// than 100 rooms to send after more than an hour unused), expiry, and connections whose row
// vanished from under the in-memory copy.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { insertToken } from '../../../src/store/devices-table.js';
import { hashToken } from '../../../src/store/token-cipher.js';
import { type ConnectionCounters, ConnectionManager, type ConnectionOptions } from '../../../src/sync/connections.js';
import { createTestDatabase } from '../../support/db.js';

const ME = '@alice:x';
const KEY = { userId: ME, deviceId: 'D', connId: '' };
const HOUR = 3_600_000;

function counting(): ConnectionCounters & { counts: { expiredIdle: number; destroyed: number } } {
  const counts = { expiredIdle: 0, destroyed: 0 };
  return {
    counts,
    expiredIdle: {
      inc(n = 1) {
        counts.expiredIdle += n;
      },
    },
    destroyed: {
      inc(n = 1) {
        counts.destroyed += n;
      },
    },
  };
}

async function setup(t: TestContext, opts: Partial<ConnectionOptions> = {}) {
  const db = await createTestDatabase(t);
  await insertToken(db.pool, { tokenHash: hashToken('token'), tokenEncrypted: Buffer.from('enc'), userId: ME, deviceId: 'D' });
  const counters = counting();
  const make = () => new ConnectionManager(db.pool, { maxPerDevice: 3, maxInMemory: 100, counters, ...opts });
  return { pool: db.pool, counters, make };
}

const isUnknownPos = (err: unknown) => (err as { errcode?: string }).errcode === 'M_UNKNOWN_POS';
const isUnknownToken = (err: unknown) => (err as { errcode?: string }).errcode === 'M_UNKNOWN_TOKEN';

describe('ConnectionManager', () => {
  it('is too far behind only with more than 100 rooms to send after more than an hour unused (stored last use)', async (t) => {
    const { pool, counters, make } = await setup(t);
    const connections = make();
    const fresh = await connections.resolve(KEY, undefined);
    assert.equal(connections.tooFarBehind(fresh, 5000), false, 'a new connection never is');
    const p1 = await connections.commit(fresh, 0, new Map(), {});
    const resumed = await connections.resolve(KEY, p1);
    assert.ok(resumed.idleMs < 60_000);
    assert.equal(connections.tooFarBehind(resumed, 5000), false, 'a connection in use is not');
    const p2 = await connections.commit(resumed, 0, new Map(), {});

    // Last used two hours ago, as the store says; a restarted manager loads that.
    await pool.query(`UPDATE connections SET last_used_at = now() - interval '2 hours'`);
    const restarted = make();
    const stale = await restarted.resolve(KEY, p2);
    assert.ok(stale.idleMs > 2 * HOUR - 60_000, `idle for ${stale.idleMs} ms`);
    assert.equal(restarted.tooFarBehind(stale, 100), false, '100 rooms are not more than 100');
    assert.equal(restarted.tooFarBehind(stale, 101), true);
    assert.ok(Date.now() - stale.lastUsedAt < 60_000, 'using it makes it recently used');

    const p3 = await restarted.commit(stale, 0, new Map(), {});
    await restarted.expire(stale);
    assert.equal(counters.counts.destroyed, 1);
    const { rows } = await pool.query('SELECT count(*)::int AS n FROM connections');
    assert.equal(rows[0].n, 0, 'expire deletes the row');
    await assert.rejects(restarted.resolve(KEY, p3), isUnknownPos, 'its pending pos is unknown');
    await assert.rejects(make().resolve(KEY, p3), isUnknownPos, 'also to another process');
  });

  it('takes its thresholds from the options, and measures idleness from the last use in memory', async (t) => {
    const { make } = await setup(t, { farBehindRooms: 2, farBehindIdleMs: 50 });
    // Only the clock is faked: the database's timers run for real.
    t.mock.timers.enable({ apis: ['Date'], now: Date.now() });
    const connections = make();
    const conn = await connections.resolve(KEY, undefined);
    const p1 = await connections.commit(conn, 0, new Map(), {});
    t.mock.timers.tick(80);
    const resumed = await connections.resolve(KEY, p1);
    assert.equal(connections.tooFarBehind(resumed, 2), false);
    assert.equal(connections.tooFarBehind(resumed, 3), true);
    const p2 = await connections.commit(resumed, 0, new Map(), {});
    const again = await connections.resolve(KEY, p2);
    assert.equal(connections.tooFarBehind(again, 3), false, 'resumed at once this time');
  });

  it('answers a pos of a connection whose row vanished with M_UNKNOWN_POS, or 401 once the token is gone', async (t) => {
    const { pool, make } = await setup(t);
    const connections = make();
    const conn = await connections.resolve(KEY, undefined);
    const p1 = await connections.commit(conn, 0, new Map([['!r:x', { pos: 1, tl: 1, rs: '', m: 'join' }]]), {});
    // Deleted by another process's expiry: the in-memory copy still has the pending pos.
    await pool.query('DELETE FROM connections');
    await assert.rejects(connections.resolve(KEY, p1), isUnknownPos, 'the pending pos');
    assert.equal(connections.size, 0, 'forgotten in memory');

    const again = await connections.resolve(KEY, undefined);
    const confirmed = again.pos;
    await connections.commit(again, 0, new Map(), {});
    await pool.query('DELETE FROM connections');
    await pool.query('DELETE FROM tokens');
    await assert.rejects(connections.resolve(KEY, String(confirmed)), isUnknownToken, 'a retry of the confirmed pos, token gone');
  });

  it('expires idle connections in the store and in memory, and counts them', async (t) => {
    const { pool, counters, make } = await setup(t);
    const connections = make();
    const idle = await connections.resolve(KEY, undefined);
    const p1 = await connections.commit(idle, 0, new Map(), {});
    const busy = await connections.resolve({ ...KEY, connId: 'busy' }, undefined);
    const p2 = await connections.commit(busy, 0, new Map(), {});
    await pool.query(`UPDATE connections SET last_used_at = now() - interval '8 days' WHERE conn_id = ''`);
    assert.equal(await connections.expireIdle(7 * 86_400), 1);
    assert.deepEqual(counters.counts, { expiredIdle: 1, destroyed: 1 });
    assert.equal(connections.size, 1);
    await assert.rejects(connections.resolve(KEY, p1), isUnknownPos);
    assert.equal((await connections.resolve({ ...KEY, connId: 'busy' }, p2)).pos, Number(p2));
  });

  it('discards a pending response in the store when the confirmed pos is retried', async (t) => {
    const { pool, make } = await setup(t);
    const connections = make();
    const conn = await connections.resolve(KEY, undefined);
    const confirmed = String(conn.pos);
    const pending = await connections.commit(conn, 0, new Map(), {});
    await connections.resolve(KEY, confirmed);
    const { rows } = await pool.query('SELECT pending_pos, pending FROM connections');
    assert.deepEqual(rows, [{ pending_pos: null, pending: null }]);
    await assert.rejects(make().resolve(KEY, pending), isUnknownPos, 'a restarted proxy does not accept it');
  });
});

describe('ConnectionManager confirmations', () => {
  it('confirms many connections coming back at once in a few shared statements, each with its own rooms', async (t) => {
    const db = await createTestDatabase(t);
    await insertToken(db.pool, { tokenHash: hashToken('token'), tokenEncrypted: Buffer.from('enc'), userId: ME, deviceId: 'D' });
    let confirms = 0;
    const counted = {
      query: (text: string, values?: unknown[]) => {
        if (text.includes('SET confirmed_pos')) confirms++;
        return db.pool.query(text, values);
      },
    } as unknown as typeof db.pool;
    const connections = new ConnectionManager(counted, { maxPerDevice: 100, maxInMemory: 100 });
    const keys = Array.from({ length: 40 }, (_, i) => ({ ...KEY, connId: `c${i}` }));
    const positions: string[] = [];
    for (const [i, key] of keys.entries()) {
      const conn = await connections.resolve(key, undefined);
      positions.push(await connections.commit(conn, 0, new Map([[`!room${i}:x`, { pos: i, tl: 1, rs: '', m: 'join' }]]), {}));
    }
    const resumed = await Promise.all(keys.map((key, i) => connections.resolve(key, positions[i])));
    assert.ok(confirms <= 5, `40 confirmations took ${confirms} statements`);
    for (const [i, conn] of resumed.entries()) {
      assert.equal(String(conn.pos), positions[i]);
      assert.deepEqual([...conn.rooms.keys()], [`!room${i}:x`]);
    }
    // What the store holds is the same: a fresh manager resumes each from its row.
    const restarted = new ConnectionManager(db.pool, { maxPerDevice: 100, maxInMemory: 100 });
    for (const [i, key] of keys.entries()) {
      const conn = await restarted.resolve(key, positions[i]);
      assert.deepEqual(
        [...conn.rooms].map(([id, s]) => [id, s.pos]),
        [[`!room${i}:x`, i]],
      );
    }
  });
});
