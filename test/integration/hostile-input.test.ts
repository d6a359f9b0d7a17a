// Input a hostile client sends, answered as Synapse would or at least as a Matrix error, never
// a 500: NUL characters, list names that are Object.prototype's, timeouts Node's timers cannot
// hold, bytes and sizes Node's HTTP parser refuses, a token sent twice, a body that trickles.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { describe, it } from 'node:test';
import { createRoomState, message, syncResponse } from '../support/builders.js';
import { addUser, MSC4186_PATH, type SsResult, type Stack, slidingSync, startStack } from '../support/sliding-sync-client.js';

const MSC3575_PATH = '/_matrix/client/unstable/org.matrix.msc3575/sync';
const ME = '@alice:fake';
const list = { ranges: [[0, 9]], timeline_limit: 1, required_state: [] };

function withRoom(stack: Stack) {
  return addUser(
    stack.fake,
    ME,
    'A',
    syncResponse({ join: { '!a:fake': { state: createRoomState('!a:fake', ME, { name: 'A' }), timeline: [message('hi')] } } }),
  );
}

function assertError(res: SsResult, status: number, errcode: string) {
  const why = JSON.stringify(res.body);
  assert.equal(res.status, status, why);
  assert.equal(res.body.errcode, errcode, why);
  assert.equal(typeof res.body.error, 'string', why);
}

interface RawAnswer {
  head: string;
  body: string;
  /** The server closed the connection after answering. */
  closed: boolean;
}

/** Writes raw bytes on a fresh socket; resolves with what came back once the server closes it or `waitMs` passes. */
function rawRequest(url: string, chunks: Buffer[], waitMs = 5000): Promise<RawAnswer> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    const received: Buffer[] = [];
    let closed = false;
    const finish = () => {
      clearTimeout(timer);
      const text = Buffer.concat(received).toString('latin1');
      const at = text.indexOf('\r\n\r\n');
      resolve({ head: at < 0 ? text : text.slice(0, at), body: at < 0 ? '' : text.slice(at + 4), closed });
      socket.destroy();
    };
    const timer = setTimeout(finish, waitMs);
    socket.on('data', (d) => received.push(d));
    socket.on('error', (err) => (received.length ? undefined : reject(err)));
    socket.on('close', () => {
      closed = true;
      finish();
    });
    socket.on('connect', () => {
      for (const c of chunks) socket.write(c);
    });
  });
}

function assertMatrixAnswer(answer: RawAnswer, status: number, errcode: string) {
  assert.match(answer.head, new RegExp(`^HTTP/1\\.1 ${status} `), answer.head);
  assert.match(answer.head, /\r\nconnection: close/i, `says it closes the connection: ${answer.head}`);
  const body = JSON.parse(answer.body) as { errcode?: string; error?: string };
  assert.equal(body.errcode, errcode);
  assert.equal(typeof body.error, 'string');
  assert.ok(answer.closed, 'and closes it');
}

describe('hostile input', () => {
  it('refuses U+0000 in strings and keys with 400 M_INVALID_PARAM, on both endpoints', async (t) => {
    const stack = await startStack(t);
    const alice = withRoom(stack);
    for (const path of [MSC4186_PATH, MSC3575_PATH]) {
      assertError(
        await slidingSync(stack.proxy, alice.token, { conn_id: 'a\u0000b', lists: { a: list } }, { path }),
        400,
        'M_INVALID_PARAM',
      );
      assertError(await slidingSync(stack.proxy, alice.token, { lists: { 'x\u0000': list } }, { path }), 400, 'M_INVALID_PARAM');
      assertError(await slidingSync(stack.proxy, alice.token, { txn_id: '\u0000' }, { path }), 400, 'M_INVALID_PARAM');
      assertError(await slidingSync(stack.proxy, alice.token, { lists: { a: list } }, { path, pos: '1\u0000' }), 400, 'M_INVALID_PARAM');
    }
    const ok = await slidingSync(stack.proxy, alice.token, { conn_id: 'ab', lists: { a: list } });
    assert.equal(ok.status, 200, 'and the connection still works');
  });

  it('serves lists named after Object.prototype members like any other, on both endpoints', async (t) => {
    const stack = await startStack(t);
    const alice = withRoom(stack);
    const names = ['toString', 'constructor', 'valueOf', 'hasOwnProperty', '__proto__'];
    // JSON.parse keeps `__proto__` as an ordinary key; an object literal would not.
    const raw = `{"lists":{${names.map((n) => `${JSON.stringify(n)}:${JSON.stringify(list)}`).join(',')}}}`;
    for (const path of [MSC4186_PATH, MSC3575_PATH]) {
      const first = await slidingSync(stack.proxy, alice.token, undefined, { raw, path, timeout: 0 });
      assert.equal(first.status, 200, JSON.stringify(first.body));
      for (const name of names) {
        assert.ok(Object.hasOwn(first.body.lists, name), `${path}: list ${name} answered`);
        assert.equal(first.body.lists[name]?.count, 1, `${path}: list ${name} counts the room`);
      }
      // And again on the same connection, where the sticky lists (MSC3575) are merged.
      const next = await slidingSync(stack.proxy, alice.token, undefined, { raw, path, pos: first.body.pos, timeout: 0 });
      assert.equal(next.status, 200, JSON.stringify(next.body));
    }
    const subs = `{"room_subscriptions":{"__proto__":{"timeline_limit":1},"!a:fake":{"timeline_limit":1}}}`;
    const res = await slidingSync(stack.proxy, alice.token, undefined, { raw: subs });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.ok(res.body.rooms['!a:fake'], 'the real subscription is served beside the odd one');
  });

  it('accepts a timeout of any size, as Synapse does, and holds it to the cap', async (t) => {
    const stack = await startStack(t);
    const alice = withRoom(stack);
    const first = await slidingSync(stack.proxy, alice.token, { lists: { a: list } });
    assert.equal(first.status, 200);
    // Without a pos there is nothing to wait for: each is answered at once, never refused.
    for (const timeout of [2 ** 31, 1e15, 1e300]) {
      const res = await slidingSync(stack.proxy, alice.token, { lists: { a: list }, timeout });
      assert.equal(res.status, 200, `${timeout}: ${JSON.stringify(res.body)}`);
    }
    const query = await slidingSync(stack.proxy, alice.token, { lists: { a: list } }, { timeout: 99_999_999_999 });
    assert.equal(query.status, 200, JSON.stringify(query.body));
    assertError(await slidingSync(stack.proxy, alice.token, { lists: { a: list }, timeout: -1 }), 400, 'M_INVALID_PARAM');
  });

  it('refuses an Authorization header together with ?access_token= as Synapse does', async (t) => {
    const stack = await startStack(t);
    const alice = withRoom(stack);
    const res = await fetch(`${stack.proxy.url}${MSC4186_PATH}?access_token=${alice.token}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${alice.token}`, 'content-type': 'application/json' },
      body: '{}',
    });
    const body = (await res.json()) as { errcode: string; error: string };
    assert.deepEqual(
      [res.status, body.errcode, body.error],
      [401, 'M_MISSING_TOKEN', 'Mixing Authorization headers and access_token query parameters.'],
    );
    const query = await fetch(`${stack.proxy.url}${MSC4186_PATH}?access_token=${alice.token}`, {
      method: 'POST',
      body: JSON.stringify({ lists: { a: list } }),
    });
    assert.equal(query.status, 200, 'the query parameter alone still works');
  });

  it('answers a URL with raw bytes over 0x7f, and one over 16 KiB, with a Matrix error and Connection: close', async (t) => {
    const stack = await startStack(t);
    const bad = Buffer.concat([
      Buffer.from('GET /_matrix/client/v3/x'),
      Buffer.from([0xc3, 0xa9, 0xff]),
      Buffer.from(' HTTP/1.1\r\nHost: x\r\n\r\n'),
    ]);
    assertMatrixAnswer(await rawRequest(stack.proxy.url, [bad]), 400, 'M_UNRECOGNIZED');
    const long = Buffer.from(`GET /_matrix/client/v3/${'a'.repeat(17 * 1024)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    assertMatrixAnswer(await rawRequest(stack.proxy.url, [long]), 431, 'M_TOO_LARGE');
  });

  it('answers a request whose body trickles with 408 and closes its connection', async (t) => {
    const stack = await startStack(t, { bodyTimeoutMs: 300 });
    const alice = withRoom(stack);
    const head = `POST ${MSC4186_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${alice.token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n`;
    const started = Date.now();
    const answer = await rawRequest(stack.proxy.url, [Buffer.from(head), Buffer.from('{"lists": ')]);
    assertMatrixAnswer(answer, 408, 'M_UNKNOWN');
    assert.ok(Date.now() - started < 4000, `dropped after ${Date.now() - started} ms`);
  });
});
