// A stopping proxy answers the long-polls it holds with their current response instead of
// cutting their connections, so clients resume with that pos on the next instance.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRoomState, message, syncResponse } from '../support/builders.js';
import { createTestDatabase } from '../support/db.js';
import { startFakeHomeserver } from '../support/fake-homeserver.js';
import { startTestProxy } from '../support/proxy.js';
import { addUser, FAST_POLLER, slidingSync } from '../support/sliding-sync-client.js';

const ME = '@alice:fake';
const REQ = { lists: { all: { ranges: [[0, 9]], timeline_limit: 3, required_state: [] } } };

describe('shutdown', () => {
  it('answers a waiting long-poll with its current response, which the next instance resumes from', async (t) => {
    const fake = await startFakeHomeserver({ maxWaitMs: 300 });
    t.after(() => fake.close());
    const db = await createTestDatabase(t);
    const env = { SYNCV3_SERVER: fake.url, SYNCV3_SHUTDOWN_GRACE_SECS: '20' };
    // The engine says when a request starts waiting: then the long-poll is held.
    const waiting = Promise.withResolvers<void>();
    const first = await startTestProxy(t, env, { db, poller: FAST_POLLER, onWait: () => waiting.resolve() });
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({ join: { '!a:fake': { state: createRoomState('!a:fake', ME), timeline: [message('first')] } } }),
    );
    const initial = await slidingSync(first, alice.token, REQ);
    assert.equal(initial.status, 200);

    const poll = slidingSync(first, alice.token, REQ, { pos: initial.body.pos, timeout: 60_000 });
    await waiting.promise;
    const stopStarted = Date.now();
    await first.stop();
    const stopMs = Date.now() - stopStarted;
    const res = await poll;
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body.rooms, {});
    assert.notEqual(res.body.pos, initial.body.pos, 'a new pos');
    assert.ok(stopMs < 5000, `the proxy stopped without waiting out the grace period (${stopMs} ms)`);

    const next = await startTestProxy(t, env, { db, poller: FAST_POLLER });
    const resumed = await slidingSync(next, alice.token, REQ, { pos: res.body.pos, timeout: 0 });
    assert.equal(resumed.status, 200, JSON.stringify(resumed.body));
  });
});
