import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { boolArray, columns, jsonTextsArray, numberArray, textArray } from '../../../src/store/pg-arrays.js';
import { createTestDatabase } from '../../support/db.js';

const awkward = ['', 'plain', 'with "quotes"', 'back\\slash', 'a,b', '{braces}', ' spaced ', 'NULL', 'ünï\u2028code', 'tab\tnew\nline'];

describe('array parameters', () => {
  it('columns: one array per field named, in the order named, each of its kind', async (t) => {
    const { pool } = await createTestDatabase(t);
    const rows = [
      { id: 'a', n: 1, ok: true, note: null as string | null },
      { id: 'with "q"', n: 2, ok: false, note: 'x' },
    ];
    const params = columns(rows, { n: 'number', id: 'text', note: 'text', ok: 'bool' });
    assert.equal(params.length, 4);
    const { rows: back } = await pool.query(
      'SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::boolean[]) AS u(n, id, note, ok)',
      params,
    );
    assert.deepEqual(
      back.map((r) => ({ ...r, n: Number(r.n) })),
      rows.map(({ id, n, ok, note }) => ({ n, id, note, ok })),
    );
  });

  it('round-trip through PostgreSQL exactly, NULLs included', async (t) => {
    const { pool } = await createTestDatabase(t);
    const texts = [...awkward, null, undefined];
    const { rows } = await pool.query<{ t: string[]; n: (number | null)[]; b: boolean[] }>(
      'SELECT $1::text[] AS t, $2::bigint[] AS n, $3::boolean[] AS b',
      [textArray(texts), numberArray([0, -1, 1_700_000_000_000, null, 2 ** 53 - 1]), boolArray([true, false])],
    );
    assert.deepEqual(rows[0]?.t, [...awkward, null, null]);
    assert.deepEqual(rows[0]?.n, ['0', '-1', '1700000000000', null, String(2 ** 53 - 1)]);
    assert.deepEqual(rows[0]?.b, [true, false]);
    assert.deepEqual((await pool.query('SELECT $1::text[] AS t', [textArray([])])).rows[0]?.t, []);
  });

  it('json texts come back as exactly the text given, in order', async (t) => {
    const { pool } = await createTestDatabase(t);
    // JSON.stringify escapes a lone surrogate, which the json type keeps as written.
    const texts = [...awkward, '\ud800 lone'].map((s, i) => JSON.stringify({ i, s, nested: { q: '"', list: [1, 2.5, null, true] } }));
    const { rows } = await pool.query<{ j: string }>(
      'SELECT j::text FROM json_array_elements($1::json) WITH ORDINALITY AS u(j, o) ORDER BY o',
      [jsonTextsArray(texts)],
    );
    assert.deepEqual(
      rows.map((r) => r.j),
      texts,
    );
  });
});

describe('state rows point at stored events', () => {
  it('refuses state rows naming no event, and deleting a state event still referenced', async (t) => {
    const { pool } = await createTestDatabase(t);
    await pool.query(
      `INSERT INTO events (nid, event_id, room_id, type, state_key, sender, origin_server_ts, in_timeline, json)
       VALUES (1, '$s', '!r', 'm.room.name', '', '@u', 1, false, '{}'), (2, '$m', '!r', 'm.room.message', NULL, '@u', 2, true, '{}')`,
    );
    await pool.query(`INSERT INTO state_changes (room_id, type, state_key, event_nid, pos) VALUES ('!r', 'm.room.name', '', 1, 1)`);
    await pool.query(`INSERT INTO room_state (room_id, type, state_key, event_nid) VALUES ('!r', 'm.room.name', '', 1)`);
    await assert.rejects(
      pool.query(`INSERT INTO state_changes (room_id, type, state_key, event_nid, pos) VALUES ('!r', 'm.room.topic', '', 99, 3)`),
      /not a stored event/,
    );
    await assert.rejects(
      pool.query(`INSERT INTO room_state (room_id, type, state_key, event_nid) VALUES ('!r', 'm.room.topic', '', 99)`),
      /not a stored event/,
    );
    await assert.rejects(
      pool.query(
        `INSERT INTO room_state (room_id, type, state_key, event_nid) VALUES ('!r', 'm.room.name', '', 99)
         ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_nid = excluded.event_nid`,
      ),
      /not a stored event/,
    );
    await assert.rejects(pool.query('DELETE FROM events WHERE nid = 1'), /still referenced/);
    assert.equal((await pool.query('DELETE FROM events WHERE nid = 2')).rowCount, 1);
  });
});
