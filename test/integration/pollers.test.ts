// Pollers and the token registry through the real HTTP API, against the fake homeserver with
// fault injection: what a client sees when upstream misbehaves, and what is (not) stored.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { createTokenCipher, hashToken } from '../../src/store/token-cipher.js';
import { createRoomState, message, syncResponse } from '../support/builders.js';
import { type FakeHomeserver, startFakeHomeserver } from '../support/fake-homeserver.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';

const PATH = '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync';
const FAST = { backoffBaseMs: 10, backoffMaxMs: 40, longPollMs: 300 };
const LIST = { lists: { all: { ranges: [[0, 10]], timeline_limit: 5, required_state: [['m.room.name', '']] } } };

async function setup(t: TestContext, poller: Record<string, number> = {}) {
  const fake = await startFakeHomeserver({ maxWaitMs: 300 });
  t.after(() => fake.close());
  const proxy = await startTestProxy(t, { SYNCV3_SERVER: fake.url }, { poller: { ...FAST, ...poller }, auth: { negativeTtlMs: 60_000 } });
  return { fake, proxy };
}

async function slidingSync(proxy: TestProxy, token: string, body: unknown = LIST, query = '') {
  const res = await fetch(`${proxy.url}${PATH}${query}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    // A request that would hang fails the test instead of stalling it.
    signal: AbortSignal.timeout(15_000),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

function alice(fake: FakeHomeserver, token = 'tok-alice', device = 'ADEV') {
  fake.addToken(token, '@alice:fake', device);
  fake.queueSync(
    token,
    syncResponse({
      join: { '!a:fake': { state: createRoomState('!a:fake', '@alice:fake', { name: 'Room A' }), timeline: [message('hello')] } },
    }),
  );
  return token;
}

const roomIds = (body: Record<string, unknown>) => Object.keys((body.rooms ?? {}) as object);
const syncsOf = (fake: FakeHomeserver, token: string) => fake.requests.filter((r) => r.token === token && r.path.endsWith('/sync'));
const filterOf = (req: { query: Record<string, string> } | undefined) => JSON.parse(req?.query.filter ?? 'null');

describe('pollers and tokens', () => {
  it('starts a poller on first use and answers once the initial sync is stored', async (t) => {
    const { fake, proxy } = await setup(t);
    const token = alice(fake);
    const res = await slidingSync(proxy, token);
    assert.equal(res.status, 200);
    assert.deepEqual(roomIds(res.body), ['!a:fake']);
    const whoami = fake.requests.filter((r) => r.path.endsWith('/account/whoami'));
    assert.equal(whoami.length, 1);
    const first = fake.requests.find((r) => r.path.endsWith('/sync'));
    assert.equal(first?.query.since, undefined, 'first poll is an initial sync');
    assert.match(first?.query.filter ?? '', /"limit":1/, 'initial sync asks for a small timeline');
    assert.equal(first?.query.set_presence, 'offline');
    const { rows } = await proxy.pool.query('SELECT token_encrypted FROM tokens');
    assert.equal(rows.length, 1);
    assert.ok(!rows[0].token_encrypted.toString('utf8').includes(token), 'the token is stored encrypted');
  });

  it('answers an unknown token with M_UNKNOWN_TOKEN and remembers it briefly', async (t) => {
    const { fake, proxy } = await setup(t);
    for (let i = 0; i < 3; i++) {
      const res = await slidingSync(proxy, 'nope');
      assert.equal(res.status, 401);
      assert.equal(res.body.errcode, 'M_UNKNOWN_TOKEN');
      assert.equal(res.body.soft_logout, false);
    }
    assert.equal(fake.requests.filter((r) => r.path.endsWith('/whoami')).length, 1, 'one whoami for three requests');
    const missing = await fetch(`${proxy.url}${PATH}`, { method: 'POST', body: '{}' });
    assert.equal(missing.status, 401);
    assert.equal(((await missing.json()) as { errcode: string }).errcode, 'M_MISSING_TOKEN');
    const { rows } = await proxy.pool.query('SELECT count(*)::int AS n FROM tokens');
    assert.equal(rows[0].n, 0, 'nothing stored for a bad token');
  });

  it('passes soft_logout through from the homeserver', async (t) => {
    const { fake, proxy } = await setup(t);
    fake.addToken('soft', '@alice:fake', 'S');
    fake.expireToken('soft', true);
    const res = await slidingSync(proxy, 'soft');
    assert.deepEqual([res.status, res.body.errcode, res.body.soft_logout], [401, 'M_UNKNOWN_TOKEN', true]);
  });

  it('survives 5xx, 429 and garbage on the initial sync, then serves the data', async (t) => {
    const { fake, proxy } = await setup(t);
    const token = 'tok-faults';
    fake.addToken(token, '@alice:fake', 'F');
    fake.queueFault(token, { status: 502 });
    fake.queueFault(token, { status: 429, body: { errcode: 'M_LIMIT_EXCEEDED', retry_after_ms: 50 } });
    fake.queueFault(token, { raw: '{"next_batch": "x", "rooms": ' });
    fake.queueFault(token, { hangUp: true });
    fake.queueSync(
      token,
      syncResponse({ join: { '!f:fake': { state: createRoomState('!f:fake', '@alice:fake'), timeline: [message('finally')] } } }),
    );
    const res = await slidingSync(proxy, token);
    assert.equal(res.status, 200);
    assert.deepEqual(roomIds(res.body), ['!f:fake']);
    assert.ok(fake.syncCount(token) >= 5);
  });

  it('skips a poison response after repeated failures and records the problem', async (t) => {
    const { fake, proxy } = await setup(t);
    const token = alice(fake);
    await slidingSync(proxy, token);
    // Valid JSON with next_batch but rooms of the wrong shape: retried, then skipped.
    for (let i = 0; i < 3; i++) fake.queueFault(token, { status: 200, body: { next_batch: 'after-poison', rooms: { join: [] } } });
    await fake.waitForSync(token, 'after-poison', 5000);
    const { rows } = await proxy.pool.query('SELECT failures, skipped, problem FROM poller_problems');
    assert.equal(rows.length, 1);
    assert.equal(rows[0].skipped, true);
    assert.ok(rows[0].failures >= 3);
    assert.match(rows[0].problem, /rooms\.join/);
    const skipped = await proxy.metrics.skippedResponses.get();
    assert.equal(skipped.values[0]?.value, 1, 'counted');
  });

  it('stops polling when the token dies, and the client then gets M_UNKNOWN_TOKEN', async (t) => {
    const { fake, proxy } = await setup(t);
    const token = alice(fake);
    const first = await slidingSync(proxy, token);
    const poller = proxy.pollers.get('@alice:fake', 'ADEV');
    assert.ok(poller?.running);
    fake.expireToken(token);
    // Its loop is over: nothing can poll with the dead token from here on.
    await waitUntil(async () => !poller.running);
    const polls = fake.syncCount(token);
    assert.equal((await proxy.pool.query('SELECT count(*)::int AS n FROM tokens')).rows[0].n, 0);
    assert.equal(proxy.pollers.get('@alice:fake', 'ADEV'), undefined);
    const again = await slidingSync(proxy, token, LIST, `?pos=${first.body.pos}`);
    assert.deepEqual([again.status, again.body.errcode], [401, 'M_UNKNOWN_TOKEN']);
    assert.equal(fake.syncCount(token), polls, 'no more polls with a dead token');
    const { rows } = await proxy.pool.query('SELECT count(*)::int AS n FROM connections');
    assert.equal(rows[0].n, 0, "the device's connections ended");
  });

  it('continues from the stored since when a device gets a new token', async (t) => {
    const { fake, proxy } = await setup(t);
    const oldToken = alice(fake);
    await slidingSync(proxy, oldToken);
    await fake.waitForSync(oldToken, '1');
    fake.addToken('tok-refreshed', '@alice:fake', 'ADEV');
    fake.expireToken(oldToken);
    fake.queueSync('tok-refreshed', syncResponse({ join: { '!a:fake': { timeline: [message('after refresh')] } } }));
    const res = await slidingSync(proxy, 'tok-refreshed');
    assert.equal(res.status, 200);
    const resumed = fake.requests.find((r) => r.token === 'tok-refreshed' && r.path.endsWith('/sync'));
    assert.equal(resumed?.query.since, '1', 'the new token continues from the device position');
  });

  it('resumes pollers after a restart from where they stopped, and keeps connections valid', async (t) => {
    const { fake, proxy } = await setup(t);
    const token = alice(fake);
    const first = await slidingSync(proxy, token);
    await fake.waitForSync(token, '1');
    await proxy.stop();
    const before = fake.requests.length;
    const second = await startTestProxy(t, { SYNCV3_SERVER: fake.url }, { db: proxy.db, poller: FAST });
    await waitUntil(async () => fake.requests.slice(before).some((r) => r.path.endsWith('/sync')));
    const resumed = fake.requests.slice(before).find((r) => r.path.endsWith('/sync'));
    assert.equal(resumed?.query.since, '1', 'resumed from the stored since');
    assert.equal(resumed?.query.timeout, '0', 'the first poll after a restart does not long-poll');
    // Queued only now: the fake could otherwise hand it to the old proxy's aborted long-poll.
    fake.queueSync(token, syncResponse({ join: { '!a:fake': { timeline: [message('after the restart')] } } }));
    const next = await slidingSync(second, token, LIST, `?pos=${first.body.pos}&timeout=5000`);
    assert.equal(next.status, 200);
    const room = (next.body.rooms as Record<string, { timeline?: { content: { body: string } }[]; initial?: boolean }>)['!a:fake'];
    assert.deepEqual(
      room?.timeline?.map((e) => e.content.body),
      ['after the restart'],
    );
    assert.equal(room?.initial, undefined, 'a delta, not a resend');
  });

  it('recovers when its database connections are cut', async (t) => {
    const { fake, proxy } = await setup(t);
    const token = alice(fake);
    const first = await slidingSync(proxy, token);
    await proxy.pool.query(
      'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()',
    );
    fake.queueSync(token, syncResponse({ join: { '!a:fake': { timeline: [message('after the outage')] } } }));
    let next = await slidingSync(proxy, token, LIST, `?pos=${first.body.pos}&timeout=5000`);
    if (next.status === 503) {
      // A request that met a dead connection is told to retry, with nothing committed.
      assert.equal(next.body.errcode, 'M_UNKNOWN');
      next = await slidingSync(proxy, token, LIST, `?pos=${first.body.pos}&timeout=5000`);
    }
    assert.equal(next.status, 200);
    assert.deepEqual(roomIds(next.body), ['!a:fake']);
  });

  it('answers a first request with M_UNKNOWN_TOKEN when the token dies during the initial sync', async (t) => {
    const { fake, proxy } = await setup(t);
    // whoami accepts both tokens; their initial syncs are then refused (401 soft logout, 403).
    fake.addToken('dies-401', '@alice:fake', 'D401');
    fake.queueFault('dies-401', { delayMs: 100 });
    fake.queueFault('dies-401', { status: 401, body: { errcode: 'M_UNKNOWN_TOKEN', error: 'gone', soft_logout: true } });
    fake.addToken('dies-403', '@bob:fake', 'D403');
    fake.queueFault('dies-403', { status: 403, body: { errcode: 'M_FORBIDDEN', error: 'no' } });
    const [soft, forbidden] = await Promise.all([slidingSync(proxy, 'dies-401'), slidingSync(proxy, 'dies-403')]);
    assert.deepEqual([soft.status, soft.body.errcode, soft.body.soft_logout], [401, 'M_UNKNOWN_TOKEN', true]);
    assert.deepEqual([forbidden.status, forbidden.body.errcode, forbidden.body.soft_logout], [401, 'M_UNKNOWN_TOKEN', false]);
    assert.equal(proxy.pollers.get('@alice:fake', 'D401'), undefined, 'the poller is gone');
    const { rows } = await proxy.pool.query('SELECT count(*)::int AS n FROM tokens');
    assert.equal(rows[0].n, 0, 'the dead tokens are deleted');
  });

  it('answers first requests with 502 while the initial sync keeps failing unskippably, and recovers', async (t) => {
    const { fake, proxy } = await setup(t);
    const token = 'tok-garbage';
    fake.addToken(token, '@alice:fake', 'G');
    // Not JSON, so there is no next_batch to skip to: retried with backoff, never skipped.
    for (let i = 0; i < 6; i++) fake.queueFault(token, { raw: '<html>502 Bad Gateway</html>' });
    // Served once the faults are used up.
    fake.queueSync(
      token,
      syncResponse({ join: { '!g:fake': { state: createRoomState('!g:fake', '@alice:fake'), timeline: [message('at last')] } } }),
    );
    const first = await slidingSync(proxy, token);
    assert.equal(first.status, 502);
    assert.equal(first.body.errcode, 'M_UNKNOWN');
    assert.match(String(first.body.error), /homeserver sync is failing/i);
    const { rows } = await proxy.pool.query('SELECT since, failures, skipped FROM poller_problems');
    assert.equal(rows.length, 1);
    assert.deepEqual([rows[0].since, rows[0].skipped], ['', false]);
    assert.ok(rows[0].failures >= 3, 'recorded after the threshold');
    // Still polling (backing off) rather than giving up; once it answers usably, clients are served.
    await waitUntil(async () => {
      const res = await slidingSync(proxy, token);
      if (res.status === 502) return false;
      assert.equal(res.status, 200);
      assert.deepEqual(roomIds(res.body), ['!g:fake']);
      return true;
    });
    assert.equal(syncsOf(fake, token).filter((r) => r.query.since === undefined).length, 7, 'every retry was an initial sync');
  });

  it('gives a second device a full initial sync while the first device is still in its own', async (t) => {
    const { fake, proxy } = await setup(t);
    fake.addToken('tok-slow', '@alice:fake', 'SLOW');
    fake.queueFault('tok-slow', { delayMs: 1500 });
    fake.queueSync(
      'tok-slow',
      syncResponse({
        join: { '!a:fake': { state: createRoomState('!a:fake', '@alice:fake', { name: 'Room A' }), timeline: [message('hi')] } },
      }),
    );
    const second = alice(fake, 'tok-second', 'SECOND');
    // This fake honours a to-device-only filter, as a homeserver does: no rooms in the answer.
    fake.route('GET', '/_matrix/client/v3/sync', (req) =>
      req.token === second && filterOf(req)?.room?.rooms?.length === 0 ? { status: 200, body: { next_batch: 'td' } } : undefined,
    );
    const slow = slidingSync(proxy, 'tok-slow');
    await fake.waitForSync('tok-slow', undefined);
    const res = await slidingSync(proxy, second);
    assert.equal(res.status, 200);
    assert.deepEqual(roomIds(res.body), ['!a:fake'], "the second device's client sees the user's rooms");
    assert.equal(filterOf(syncsOf(fake, second)[0]).room?.rooms, undefined, 'a full initial sync, not a to-device-only one');
    assert.equal((await slow).status, 200);
  });

  it('gives a second device a to-device-only first sync once the first device has its rooms stored', async (t) => {
    const { fake, proxy } = await setup(t);
    await slidingSync(proxy, alice(fake));
    const second = 'tok-second';
    fake.addToken(second, '@alice:fake', 'SECOND');
    fake.route('GET', '/_matrix/client/v3/sync', (req) =>
      req.token === second && filterOf(req)?.room?.rooms?.length === 0 ? { status: 200, body: { next_batch: 'td' } } : undefined,
    );
    const res = await slidingSync(proxy, second);
    assert.equal(res.status, 200);
    assert.deepEqual(roomIds(res.body), ['!a:fake'], 'served from the rooms the first device stored');
    const [firstPoll] = syncsOf(fake, second);
    assert.deepEqual(filterOf(firstPoll).room, { rooms: [] }, 'no rooms asked for');
    assert.deepEqual(filterOf(firstPoll).presence, { not_types: ['*'] });
    const next = await fake.waitForSync(second, 'td');
    assert.equal(filterOf(next).room?.rooms, undefined, 'later polls ask for rooms again');
    assert.equal(filterOf(next).room?.timeline?.limit, 50);
  });

  it('long-polls 30 s with a 50-event timeline, presence off and filtered out, after the initial sync', async (t) => {
    const fake = await startFakeHomeserver({ maxWaitMs: 300 });
    t.after(() => fake.close());
    // The production long-poll and timeline settings; only the backoffs are shortened.
    const proxy = await startTestProxy(t, { SYNCV3_SERVER: fake.url }, { poller: { backoffBaseMs: 10, backoffMaxMs: 40 } });
    const token = alice(fake);
    await slidingSync(proxy, token);
    const initial = await fake.waitForSync(token, undefined);
    assert.equal(initial.query.timeout, '0', 'the initial sync answers at once');
    const poll = await fake.waitForSync(token, '1');
    assert.equal(poll.query.timeout, '30000');
    assert.equal(poll.query.set_presence, 'offline');
    const filter = filterOf(poll);
    assert.deepEqual(filter.presence, { not_types: ['*'] });
    assert.equal(filter.room?.timeline?.limit, 50);
  });

  it('resumes stored devices at startup without holding up serving, 16 first polls at a time', async (t) => {
    const fake = await startFakeHomeserver({ maxWaitMs: 300 });
    t.after(() => fake.close());
    const first = await startTestProxy(t, { SYNCV3_SERVER: fake.url }, { poller: FAST });
    const cipher = createTokenCipher(first.config.secret ?? '');
    await first.stop();
    const tokens = Array.from({ length: 20 }, (_, i) => `tok-resume-${i}`);
    for (const [i, token] of tokens.entries()) {
      fake.addToken(token, `@u${i}:fake`, 'DEV');
      await first.db.pool.query(`INSERT INTO devices (user_id, device_id, since, initial_sync_at) VALUES ($1, 'DEV', 's0', now())`, [
        `@u${i}:fake`,
      ]);
      await first.db.pool.query(`INSERT INTO tokens (token_hash, token_encrypted, user_id, device_id) VALUES ($1, $2, $3, 'DEV')`, [
        hashToken(token),
        cipher.encrypt(token),
        `@u${i}:fake`,
      ]);
    }
    // Every resumed first poll hangs until released.
    let inFlight = 0;
    let most = 0;
    const release = Promise.withResolvers<void>();
    fake.route('GET', '/_matrix/client/v3/sync', async () => {
      most = Math.max(most, ++inFlight);
      await release.promise;
      inFlight--;
      return undefined;
    });
    const started = performance.now();
    const proxy = await startTestProxy(t, { SYNCV3_SERVER: fake.url }, { db: first.db, poller: FAST });
    assert.ok(performance.now() - started < 5000, 'startup does not wait for the first polls');
    await waitUntil(async () => inFlight === 16);
    // Serving goes on: health, and a resumed device's client (its initial sync is stored).
    assert.equal((await fetch(`${proxy.url}/health`)).status, 200);
    const res = await slidingSync(proxy, tokens[0] ?? '');
    assert.equal(res.status, 200);
    // All 20 were started at once by the resume: the slots, not time, hold four back.
    assert.equal(new Set(fake.requests.filter((r) => r.path.endsWith('/sync')).map((r) => r.token)).size, 16);
    release.resolve();
    await waitUntil(async () => tokens.every((token) => syncsOf(fake, token).some((r) => r.query.since === 's0')));
    assert.equal(most, 16, 'never more than 16 first polls at once, over the whole resume');
    assert.equal(proxy.pollers.size, 20);
  });
});

async function waitUntil(check: () => Promise<boolean>, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
