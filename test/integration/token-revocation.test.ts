// Tokens that end are refused at once: a logout, logout of all devices or device deletion
// forwarded through the proxy takes effect before the client sees its answer, and a token the
// homeserver refuses on any forwarded call is refused from then on. Tokens superseded by
// refreshes do not pile up in the store or in memory.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { queryObjects, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Authenticator } from '../../src/auth/authenticator.js';
import type { PollerManager } from '../../src/poller/poller-manager.js';
import { createTokenCipher } from '../../src/store/token-cipher.js';
import type { Homeserver } from '../../src/upstream/homeserver-client.js';
import { syncResponse } from '../support/builders.js';
import { createTestDatabase, testLogger } from '../support/db.js';
import type { FakeHomeserver } from '../support/fake-homeserver.js';
import { addUser, type Stack, slidingSync, startStack, type TestUser } from '../support/sliding-sync-client.js';

const LIST = { lists: { all: { ranges: [[0, 9]], timeline_limit: 1, required_state: [] } } };

/** A user whose device is being polled by the proxy (its first sliding sync answered). */
async function polledUser(stack: Stack, userId: string, deviceId: string): Promise<TestUser> {
  const user = addUser(stack.fake, userId, deviceId, syncResponse({}));
  const first = await slidingSync(stack.proxy, user.token, LIST);
  assert.equal(first.status, 200, JSON.stringify(first.body));
  return user;
}

/** The homeserver's logout endpoints over `users`: what they end, the fake refuses from then on. */
function logoutEndpoints(fake: FakeHomeserver, users: TestUser[]) {
  const whose = (token: string | undefined) => users.find((u) => u.token === token);
  // Ended without waking the proxy's held long-polls (as expireToken would): the proxy must
  // learn of the logout from the logout itself, not from its pollers a moment later.
  const ended = new Set<string>();
  const end = (match: (u: TestUser) => boolean) => {
    for (const u of users) if (match(u)) ended.add(u.token);
  };
  fake.route('POST', '/_matrix/client/v3/logout', (req) => {
    const me = whose(req.token);
    if (!me) return undefined;
    if (req.path.endsWith('/logout/all')) end((u) => u.userId === me.userId);
    else end((u) => u === me);
    return { status: 200, body: {} };
  });
  // Device deletion wants user-interactive auth: the first attempt is answered with its flows.
  const uia = (req: { body: unknown }, deviceIds: string[], me: TestUser) => {
    if (!(req.body as { auth?: unknown } | undefined)?.auth)
      return { status: 401, body: { flows: [{ stages: ['m.login.password'] }], session: 's' } };
    end((u) => u.userId === me.userId && deviceIds.includes(u.deviceId));
    return { status: 200, body: {} };
  };
  fake.route('DELETE', '/_matrix/client/v3/devices/', (req) => {
    const me = whose(req.token);
    return me && uia(req, [decodeURIComponent(req.path.split('/').pop() ?? '')], me);
  });
  fake.route('POST', '/_matrix/client/v3/delete_devices', (req) => {
    const me = whose(req.token);
    return me && uia(req, (req.body as { devices?: string[] } | undefined)?.devices ?? [], me);
  });
  fake.route('*', '/', (req) =>
    req.token !== undefined && ended.has(req.token)
      ? { status: 401, body: { errcode: 'M_UNKNOWN_TOKEN', error: 'logged out', soft_logout: false } }
      : undefined,
  );
}

async function call(stack: Stack, method: string, path: string, token: string, body?: unknown) {
  const res = await fetch(`${stack.proxy.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function assertRefused(stack: Stack, user: TestUser) {
  const res = await slidingSync(stack.proxy, user.token, LIST);
  assert.equal(res.status, 401, `${user.deviceId}: ${JSON.stringify(res.body)}`);
  assert.equal(res.body.errcode, 'M_UNKNOWN_TOKEN');
}

async function assertServed(stack: Stack, user: TestUser) {
  const res = await slidingSync(stack.proxy, user.token, LIST);
  assert.equal(res.status, 200, `${user.deviceId}: ${JSON.stringify(res.body)}`);
}

describe('token revocation', () => {
  it('refuses a token as soon as POST /logout through the proxy has answered, with its poller stopped', async (t) => {
    // The engine says when a request starts waiting: then the long-poll is held.
    let started: (() => void) | undefined;
    const stack = await startStack(t, { onWait: () => started?.() });
    const alice = await polledUser(stack, '@alice:fake', 'A');
    const bob = await polledUser(stack, '@bob:fake', 'B');
    logoutEndpoints(stack.fake, [alice, bob]);
    const whoamis = () => stack.fake.requests.filter((r) => r.path.endsWith('/whoami')).length;
    const before = whoamis();
    // A long-poll of alice's, held when she logs out.
    const opened = await slidingSync(stack.proxy, alice.token, LIST);
    const underWay = new Promise<void>((resolve) => (started = resolve));
    const held = slidingSync(stack.proxy, alice.token, LIST, { pos: opened.body.pos, timeout: 60_000 });
    await underWay;

    const out = await call(stack, 'POST', '/_matrix/client/v3/logout', alice.token, {});
    assert.equal(out.status, 200);
    const heldAnswer = await held;
    assert.deepEqual([heldAnswer.status, heldAnswer.body.errcode], [401, 'M_UNKNOWN_TOKEN'], 'the held long-poll is answered');
    assert.equal(stack.proxy.pollers.get(alice.userId, alice.deviceId), undefined, 'the poller stopped before the answer');
    const rows = await stack.proxy.pool.query('SELECT user_id FROM tokens ORDER BY user_id');
    assert.deepEqual(
      rows.rows.map((r) => r.user_id),
      [bob.userId],
    );
    await assertRefused(stack, alice);
    await assertRefused(stack, alice);
    assert.equal(
      whoamis(),
      before,
      `refused from memory, without asking the homeserver: ${JSON.stringify(stack.fake.requests.map((r) => [r.method, r.path, r.token]))}`,
    );
    await assertServed(stack, bob);
  });

  it('POST /logout/all ends every device of the user, and no one else', async (t) => {
    const stack = await startStack(t);
    const phone = await polledUser(stack, '@alice:fake', 'PHONE');
    const laptop = await polledUser(stack, '@alice:fake', 'LAPTOP');
    const bob = await polledUser(stack, '@bob:fake', 'B');
    logoutEndpoints(stack.fake, [phone, laptop, bob]);

    assert.equal((await call(stack, 'POST', '/_matrix/client/v3/logout/all', phone.token, {})).status, 200);
    assert.equal(stack.proxy.pollers.get(laptop.userId, laptop.deviceId), undefined);
    await assertRefused(stack, phone);
    await assertRefused(stack, laptop);
    await assertServed(stack, bob);
  });

  it('device deletion ends the deleted devices once the homeserver agreed, not on its user-interactive auth challenge', async (t) => {
    const stack = await startStack(t);
    const a = await polledUser(stack, '@alice:fake', 'A');
    const b = await polledUser(stack, '@alice:fake', 'B');
    const c = await polledUser(stack, '@alice:fake', 'C');
    logoutEndpoints(stack.fake, [a, b, c]);

    const challenge = await call(stack, 'DELETE', '/_matrix/client/v3/devices/B', a.token, {});
    assert.equal(challenge.status, 401);
    assert.ok(challenge.body.flows, 'the challenge reaches the client unchanged');
    await assertServed(stack, b);

    assert.equal(
      (await call(stack, 'DELETE', '/_matrix/client/v3/devices/B', a.token, { auth: { type: 'm.login.password' } })).status,
      200,
    );
    await assertRefused(stack, b);
    await assertServed(stack, a);

    const listed = await call(stack, 'POST', '/_matrix/client/v3/delete_devices', a.token, { devices: ['C'], auth: { type: 'x' } });
    assert.equal(listed.status, 200);
    await assertRefused(stack, c);
    await assertServed(stack, a);
  });

  it('refuses a token from the moment a forwarded call learns the homeserver refuses it', async (t) => {
    const stack = await startStack(t);
    const alice = await polledUser(stack, '@alice:fake', 'A');
    // Logged out elsewhere, and nothing tells the proxy's poller yet: its long-poll stays held.
    stack.fake.route('GET', '/_matrix/client/v3/profile/', (req) =>
      req.token === alice.token ? { status: 401, body: { errcode: 'M_UNKNOWN_TOKEN', error: 'gone', soft_logout: true } } : undefined,
    );
    const profile = await call(stack, 'GET', '/_matrix/client/v3/profile/%40alice%3Afake', alice.token);
    assert.equal(profile.status, 401);
    assert.equal(profile.body.errcode, 'M_UNKNOWN_TOKEN', 'the homeserver answer reaches the client unchanged');
    const res = await slidingSync(stack.proxy, alice.token, LIST);
    assert.equal(res.status, 401, JSON.stringify(res.body));
    assert.deepEqual([res.body.errcode, (res.body as { soft_logout?: boolean }).soft_logout], ['M_UNKNOWN_TOKEN', true]);
    assert.equal(stack.proxy.pollers.get(alice.userId, alice.deviceId), undefined, 'its only token is gone: the poller stopped');
  });
});

describe('token rotation', () => {
  it('keeps the store and the registry memory bounded over 10,000 refreshes of one device', async (t) => {
    const db = await createTestDatabase(t);
    const homeserver = {
      whoami: async () => ({ userId: '@alice:fake', deviceId: 'PHONE' }),
    } as unknown as Homeserver;
    const pollers = { ensurePolling: () => undefined } as unknown as PollerManager;
    const registry = new Authenticator({
      pool: db.pool,
      homeserver,
      cipher: createTokenCipher('test-secret'),
      pollers,
      logger: testLogger,
    });
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
    gc();
    const before = process.memoryUsage();
    let peak = 0;
    // A few refreshes at once, as a client's concurrent requests straddle one; each token is
    // used twice: once new (whoami), once known (touched).
    const AT_ONCE = 8;
    for (let i = 0; i < 10_000; i += AT_ONCE) {
      const batch = Array.from({ length: AT_ONCE }, (_, k) => `token-${i + k}`);
      await Promise.all(batch.map((token) => registry.authenticate(token)));
      await Promise.all(batch.map((token) => registry.authenticate(token)));
      peak = Math.max(peak, registry.memorySize);
    }
    const { rows } = await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM tokens');
    assert.ok((rows[0]?.n ?? 0) <= AT_ONCE, `tokens stored: ${rows[0]?.n}`);
    assert.ok(peak <= 2 * AT_ONCE, `registry entries at most: ${peak}`);
    gc();
    const after = process.memoryUsage();
    t.diagnostic(
      `10,000 rotations: heap ${mib(before.heapUsed)} -> ${mib(after.heapUsed)}, rss ${mib(before.rss)} -> ${mib(after.rss)}; registry peak ${peak}`,
    );
  });

  it('leaves nothing behind per refresh once its requests are answered, through the whole proxy', async (t) => {
    // Each refreshed token is a whoami to the homeserver, and the poller keeps polling; the
    // signals those upstream requests were given (client disconnect, request timeout) must go
    // when the requests end, not when their timeout (SYNCV3_HTTP_TIMEOUT_SECS) would have fired.
    const stack = await startStack(t);
    const user = await polledUser(stack, '@alice:fake', 'PHONE');
    let pos: string | undefined;
    const refresh = async (i: number) => {
      const token = `refreshed-${i}`;
      stack.fake.addToken(token, user.userId, user.deviceId);
      const res = await slidingSync(stack.proxy, token, LIST, { pos });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      pos = res.body.pos;
    };
    // Counted after a full garbage collection: what is still held.
    const liveSignals = () => queryObjects(AbortSignal, { format: 'count' });
    for (let i = 0; i < 20; i++) await refresh(i);
    const before = liveSignals();
    const REFRESHES = 300;
    for (let i = 20; i < 20 + REFRESHES; i++) await refresh(i);
    const after = liveSignals();
    t.diagnostic(`abort signals held: ${before} before ${REFRESHES} refreshes, ${after} after`);
    assert.ok(after - before < REFRESHES / 10, `abort signals held: ${before} before ${REFRESHES} refreshes, ${after} after`);
  });
});
