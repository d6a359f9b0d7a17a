// setPendingMany: a batch of responses' pending records in one statement, each written only if
// its row is still as the response was computed from, and each pending JSON stored exactly as
// given (it is passed as JSON, not as an escaped text[]).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createConnection, findConnection, setPendingMany } from '../../../src/store/connections-table.js';
import { insertToken } from '../../../src/store/devices-table.js';
import { createTestDatabase } from '../../support/db.js';

const key = (connId: string) => ({ userId: '@u:x', deviceId: 'D', connId });

describe('setPendingMany', () => {
  it('stores each pending JSON as given, and only on rows still as read', async (t) => {
    const { pool } = await createTestDatabase(t);
    await insertToken(pool, { tokenHash: Buffer.alloc(32, 1), tokenEncrypted: Buffer.from('x'), userId: '@u:x', deviceId: 'D' });
    const a = (await createConnection(pool, key('a'))).row;
    const b = (await createConnection(pool, key('b'))).row;
    const c = (await createConnection(pool, key('c'))).row;
    const awkward = JSON.stringify({
      rooms: [['!r:x', { name: 'with "quotes", back\\slash, {braces}, ünï\u2028code\ttab' }]],
      ext: { n: null },
    });
    const plain = JSON.stringify({ rooms: [], ext: {} });

    // a: as read (no pending yet); b: read with a pending pos it does not have; c: another confirmed pos.
    const first = await setPendingMany(pool, [
      { id: a.id, confirmedPos: a.confirmedPos, pendingPos: null, stream: 7, pending: awkward },
      { id: b.id, confirmedPos: b.confirmedPos, pendingPos: 12345, stream: 8, pending: plain },
      { id: c.id, confirmedPos: c.confirmedPos + 1, pendingPos: null, stream: 9, pending: plain },
    ]);
    assert.deepEqual([...first.keys()], [a.id]);
    const storedA = await findConnection(pool, key('a'));
    assert.equal(storedA?.pending, awkward);
    assert.equal(Number(storedA?.pendingStream), 7);
    assert.equal(Number(storedA?.pendingPos), first.get(a.id));
    assert.equal((await findConnection(pool, key('b')))?.pending, null);
    assert.equal((await findConnection(pool, key('c')))?.pending, null);

    // The next response on a, computed with the pending pos it now has, replaces it; b goes as read.
    const second = await setPendingMany(pool, [
      { id: a.id, confirmedPos: a.confirmedPos, pendingPos: first.get(a.id) as number, stream: 10, pending: plain },
      { id: b.id, confirmedPos: b.confirmedPos, pendingPos: null, stream: 11, pending: awkward },
    ]);
    assert.deepEqual([...second.keys()].sort(), [a.id, b.id].sort());
    assert.ok((second.get(a.id) as number) > (first.get(a.id) as number));
    assert.equal((await findConnection(pool, key('a')))?.pending, plain);
    const storedB = await findConnection(pool, key('b'));
    assert.equal(storedB?.pending, awkward);
    assert.equal(Number(storedB?.pendingStream), 11);
  });
});
