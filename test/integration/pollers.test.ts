// Pollers and the token registry through the real HTTP API, against the fake homeserver with
// fault injection: what a client sees when upstream misbehaves, and what is (not) stored.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { createRoomState, message, syncResponse } from '../support/builders.js';
import { type FakeHomeserver, startFakeHomeserver } from '../support/fake-homeserver.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';

const PATH = '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync';
const FAST = { backoffBaseMs: 10, backoffMaxMs: 40, longPollMs: 300 };
const LIST = { lists: { all: { ranges: [[0, 10]], timeline_limit: 5, required_state: [['m.room.name', '']] } } };

async function setup(t: TestContext, poller: Record<string, number> = {}) {
  const fake = await startFakeHomeserver({ maxWaitMs: 300 });
  t.after(() => fake.close());
  const proxy = await startTestProxy(
    t,
    { SYNCV3_SERVER: fake.url },
    { poller: { ...FAST, ...poller }, registry: { negativeTtlMs: 60_000 } },
  );
  return { fake, proxy };
}

async function slidingSync(proxy: TestProxy, token: string, body: unknown = LIST, query = '') {
  const res = await fetch(`${proxy.url}${PATH}${query}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
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
  });

  it('stops polling when the token dies, and the client then gets M_UNKNOWN_TOKEN', async (t) => {
    const { fake, proxy } = await setup(t);
    const token = alice(fake);
    const first = await slidingSync(proxy, token);
    fake.expireToken(token);
    await waitUntil(async () => (await proxy.pool.query('SELECT count(*)::int AS n FROM tokens')).rows[0].n === 0);
    const polls = fake.syncCount(token);
    assert.equal(proxy.pollers.get('@alice:fake', 'ADEV'), undefined);
    const again = await slidingSync(proxy, token, LIST, `?pos=${first.body.pos}`);
    assert.deepEqual([again.status, again.body.errcode], [401, 'M_UNKNOWN_TOKEN']);
    await new Promise((r) => setTimeout(r, 100));
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
});

async function waitUntil(check: () => Promise<boolean>, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
