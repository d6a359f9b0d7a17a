// setPendingMany: a batch of responses' pending records in one statement, each written only if
// its row is still as the response was computed from, and each pending JSON stored exactly as
// given (it is passed as JSON, not as an escaped text[]). confirmPendingMany: a batch of
// confirmations, each only of the pending pos its row still has, rooms written only for those.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  confirmPendingMany,
  connectionRooms,
  createConnection,
  findConnection,
  setPendingMany,
} from '../../../src/store/connections-table.js';
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

describe('confirmPendingMany', () => {
  it('confirms each row still pending that pos, with its rooms and extensions, and writes nothing of the others', async (t) => {
    const { pool } = await createTestDatabase(t);
    await insertToken(pool, { tokenHash: Buffer.alloc(32, 1), tokenEncrypted: Buffer.from('x'), userId: '@u:x', deviceId: 'D' });
    const rows = [];
    for (const id of ['a', 'b', 'c']) rows.push((await createConnection(pool, key(id))).row);
    const [a, b, c] = rows as [(typeof rows)[number], (typeof rows)[number], (typeof rows)[number]];
    const plain = JSON.stringify({ rooms: [], ext: {} });
    const pending = await setPendingMany(
      pool,
      rows.map((r) => ({ id: r.id, confirmedPos: r.confirmedPos, pendingPos: null, stream: 5, pending: plain })),
    );
    const sent = (name: string) => JSON.stringify({ pos: 5, name: `with "quotes" ${name}` });
    const confirmed = await confirmPendingMany(pool, [
      {
        id: a.id,
        pendingPos: pending.get(a.id) as number,
        rooms: [
          { roomId: '!1:x', sent: sent('a1') },
          { roomId: '!2:x', sent: sent('a2') },
        ],
        extensions: '{"accountData":5}',
      },
      // b: a pending pos it no longer has (another request replaced it); c: no rooms.
      { id: b.id, pendingPos: (pending.get(b.id) as number) - 1000, rooms: [{ roomId: '!1:x', sent: sent('b') }], extensions: '{"x":1}' },
      { id: c.id, pendingPos: pending.get(c.id) as number, rooms: [], extensions: '{}' },
    ]);
    assert.deepEqual([...confirmed].sort(), [a.id, c.id].sort());
    const storedA = await findConnection(pool, key('a'));
    assert.deepEqual(
      [Number(storedA?.confirmedPos), storedA?.pendingPos, storedA?.extensions],
      [pending.get(a.id), null, '{"accountData":5}'],
    );
    assert.deepEqual((await connectionRooms(pool, a.id)).map((r) => [r.room_id, r.sent]).sort(), [
      ['!1:x', sent('a1')],
      ['!2:x', sent('a2')],
    ]);
    const storedB = await findConnection(pool, key('b'));
    assert.deepEqual([Number(storedB?.pendingPos), storedB?.extensions], [pending.get(b.id), '{}'], 'b is left as it was');
    assert.equal((await connectionRooms(pool, b.id)).length, 0);
    assert.equal(Number((await findConnection(pool, key('c')))?.confirmedPos), pending.get(c.id));
  });
});
