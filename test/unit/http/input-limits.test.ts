// The edge's limits on sliding sync input, parsed without a server: timeouts held to what
// Node's timers can wait, NUL refused at any depth, client-named maps kept as plain keys.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { refuseNul, SYNC_TIMEOUT_CAP_MS } from '../../../src/http/input-limits.js';
import { parseMsc3575 } from '../../../src/http/msc3575-request.js';
import { parseMsc4186 } from '../../../src/http/msc4186-request.js';
import { MatrixError } from '../../../src/matrix-error.js';

describe('sliding sync input limits', () => {
  it('holds a body or query timeout of any size to the cap, never above what setTimeout can wait', () => {
    assert.ok(SYNC_TIMEOUT_CAP_MS <= 2 ** 31 - 1);
    for (const parse of [parseMsc4186, parseMsc3575]) {
      for (const timeout of [2 ** 31, 2 ** 53, 1e300]) assert.equal(parse({}, { timeout }).request.timeoutMs, SYNC_TIMEOUT_CAP_MS);
      assert.equal(parse({ timeout: '99999999999999999999' }, {}).request.timeoutMs, SYNC_TIMEOUT_CAP_MS);
      assert.equal(parse({ timeout: '30000' }, {}).request.timeoutMs, 30_000);
      assert.equal(parse({}, { timeout: 5 }).request.timeoutMs, 5);
      assert.throws(() => parse({}, { timeout: 1.5 }), MatrixError);
      assert.throws(() => parse({ timeout: '-1' }, {}), MatrixError);
    }
  });

  it('keeps list and subscription names that are Object.prototype members as plain keys', () => {
    const body = JSON.parse(
      '{"lists":{"__proto__":{"ranges":[[0,1]]},"toString":{"ranges":[[0,1]]}},"room_subscriptions":{"constructor":{}}}',
    );
    const parsed = parseMsc4186({}, body).request;
    assert.deepEqual([...parsed.lists.keys()], ['__proto__', 'toString']);
    assert.deepEqual([...parsed.roomSubscriptions.keys()], ['constructor']);
    const old = parseMsc3575({}, body).request;
    assert.deepEqual([...(old.sticky?.lists.keys() ?? [])], ['__proto__', 'toString']);
  });

  it('finds U+0000 at any depth without exhausting the stack', () => {
    let deep: unknown = 'x\u0000';
    for (let i = 0; i < 200_000; i++) deep = [deep];
    assert.throws(
      () => refuseNul({ a: deep }, ''),
      (err: unknown) => err instanceof MatrixError && err.errcode === 'M_INVALID_PARAM',
    );
    assert.doesNotThrow(() => refuseNul({ lists: { a: { ranges: [[0, 1]] } }, conn_id: 'ok' }, ''));
  });
});
