// MSC4186 long-polling through the whole proxy: early return on new upstream data, an empty
// answer with a fresh pos at the timeout, no waiting for timeout=0 or without pos, and clients
// that hang up mid-poll.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRoomState, message, syncResponse } from '../support/builders.js';
import { addUser, bodies, queueLater, slidingSync, startStack } from '../support/sliding-sync-client.js';

const ME = '@alice:fake';
const BOB = '@bob:fake';
const ping = message('ready', BOB);
const REQ = { lists: { all: { ranges: [[0, 9]], timeline_limit: 3, required_state: [] } } };
const LONG = 10_000;

async function started(t: Parameters<typeof startStack>[0]) {
  const stack = await startStack(t);
  const alice = addUser(
    stack.fake,
    ME,
    'A',
    syncResponse({ join: { '!a:fake': { state: createRoomState('!a:fake', ME), timeline: [message('first')] } } }),
  );
  const first = await slidingSync(stack.proxy, alice.token, REQ);
  assert.equal(first.status, 200);
  return { ...stack, alice, first };
}

describe('MSC4186 long-polling', () => {
  it('returns as soon as a new upstream event is ingested', async (t) => {
    const { fake, proxy, alice, first, parked } = await started(t);
    // Once the request waits, it is the wake-up that answers it.
    const waiting = parked();
    const poll = slidingSync(proxy, alice.token, REQ, { pos: first.body.pos, timeout: LONG });
    await waiting;
    const queuedAt = Date.now();
    const ingested = queueLater(fake, alice, syncResponse({ join: { '!a:fake': { timeline: [message('ping')] } } }));
    const res = await poll;
    await ingested;
    assert.equal(res.status, 200);
    assert.deepEqual(bodies(res.body.rooms['!a:fake']?.timeline), ['ping']);
    assert.ok(res.ms < LONG / 4, `returned early (${res.ms} ms of ${LONG})`);
    assert.ok(Date.now() - queuedAt < 3000, 'within moments of the upstream event');
  });

  it('returns after about the timeout with no rooms and a new pos when nothing happens', async (t) => {
    const { proxy, alice, first } = await started(t);
    const res = await slidingSync(proxy, alice.token, REQ, { pos: first.body.pos, timeout: 600 });
    assert.equal(res.status, 200);
    assert.ok(res.ms >= 550, `waited for the timeout (${res.ms} ms)`);
    assert.ok(res.ms < 4000, `but not much longer (${res.ms} ms)`);
    assert.deepEqual(res.body.rooms, {});
    assert.equal(typeof res.body.pos, 'string');
    assert.notEqual(res.body.pos, first.body.pos, 'a new pos');
    const next = await slidingSync(proxy, alice.token, REQ, { pos: res.body.pos, timeout: 0 });
    assert.equal(next.status, 200, 'the new pos is usable');
  });

  it('waits the full timeout with every extension enabled when nothing is new', async (t) => {
    const { fake, proxy } = await startStack(t);
    const room = {
      state: createRoomState('!a:fake', ME, { joined: [BOB] }),
      timeline: [ping],
      ephemeral: [
        { type: 'm.typing', content: { user_ids: [BOB] } },
        { type: 'm.receipt', content: { [ping.event_id]: { 'm.read': { [BOB]: { ts: 1 } } } } },
      ],
      accountData: [{ type: 'org.example.room', content: { a: 1 } }],
    };
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({
        join: { '!a:fake': room },
        toDevice: [{ type: 'org.example.msg', sender: BOB, content: { n: 1 } }],
        accountData: [{ type: 'org.example.global', content: { g: 1 } }],
        deviceLists: { changed: [BOB] },
        otkCounts: { signed_curve25519: 5 },
      }),
    );
    const extensions = (since?: string) => ({
      to_device: { enabled: true, since },
      e2ee: { enabled: true },
      account_data: { enabled: true },
      receipts: { enabled: true },
      typing: { enabled: true },
    });
    const first = await slidingSync(proxy, alice.token, { ...REQ, extensions: extensions() });
    assert.equal(first.status, 200);
    const ext = first.body.extensions;
    assert.equal(ext.to_device?.events?.length, 1, 'each extension had something to say at first');
    assert.ok(ext.typing?.rooms?.['!a:fake'] && ext.receipts?.rooms?.['!a:fake'] && ext.account_data?.global?.length);
    // Later polls of the homeserver bring nothing; the poller keeps polling meanwhile.
    const since = ext.to_device?.next_batch;
    const res = await slidingSync(proxy, alice.token, { ...REQ, extensions: extensions(since) }, { pos: first.body.pos, timeout: 1500 });
    assert.equal(res.status, 200);
    assert.ok(res.ms >= 1400, `waited for the timeout (${res.ms} ms)`);
    assert.ok(res.ms < 5000, `but not much longer (${res.ms} ms)`);
    assert.deepEqual(res.body.rooms, {});
    assert.deepEqual(res.body.extensions.to_device?.events ?? [], []);
    assert.deepEqual(res.body.extensions.e2ee?.device_lists, { changed: [], left: [] });
    assert.deepEqual(res.body.extensions.typing?.rooms ?? {}, {});
    assert.deepEqual(res.body.extensions.receipts?.rooms ?? {}, {});
    assert.deepEqual(res.body.extensions.account_data?.global ?? [], []);
  });

  it('returns at once with timeout=0, and without pos whatever the timeout', async (t) => {
    const { proxy, alice, first } = await started(t);
    const zero = await slidingSync(proxy, alice.token, REQ, { pos: first.body.pos, timeout: 0 });
    assert.equal(zero.status, 200);
    assert.ok(zero.ms < 1000, `timeout=0 took ${zero.ms} ms`);
    assert.deepEqual(zero.body.rooms, {});
    const fresh = await slidingSync(proxy, alice.token, { ...REQ, conn_id: 'fresh' }, { timeout: LONG });
    assert.equal(fresh.status, 200);
    assert.ok(fresh.ms < 2000, `no pos took ${fresh.ms} ms`);
    assert.equal(fresh.body.rooms['!a:fake']?.initial, true);
  });

  it('takes the timeout from the body too', async (t) => {
    const { proxy, alice, first } = await started(t);
    const res = await slidingSync(proxy, alice.token, { ...REQ, pos: first.body.pos, timeout: 400 });
    assert.equal(res.status, 200);
    assert.ok(res.ms >= 350, `waited (${res.ms} ms)`);
    assert.notEqual(res.body.pos, first.body.pos);
  });

  it('copes with a client that hangs up mid long-poll', async (t) => {
    const { fake, proxy, alice, first, parked } = await started(t);
    const abort = new AbortController();
    const waiting = parked();
    const poll = slidingSync(proxy, alice.token, REQ, { pos: first.body.pos, timeout: LONG, signal: abort.signal });
    await waiting;
    abort.abort();
    await assert.rejects(poll);
    const again = await slidingSync(proxy, alice.token, REQ, { pos: first.body.pos, timeout: 0 });
    assert.equal(again.status, 200, JSON.stringify(again.body));
    assert.deepEqual(again.body.rooms, {});
    // The connection still long-polls and wakes normally.
    const waiting2 = parked();
    const poll2 = slidingSync(proxy, alice.token, REQ, { pos: again.body.pos, timeout: LONG });
    await waiting2;
    await queueLater(fake, alice, syncResponse({ join: { '!a:fake': { timeline: [message('after hang-up')] } } }));
    const res = await poll2;
    assert.equal(res.status, 200);
    assert.deepEqual(bodies(res.body.rooms['!a:fake']?.timeline), ['after hang-up']);
    assert.ok(res.ms < LONG / 2);
  });

  it('lets a newer request with the same pos replace one still long-polling', async (t) => {
    const { fake, proxy, alice, first, parked } = await started(t);
    const startedAt = Date.now();
    const waiting = parked();
    const older = slidingSync(proxy, alice.token, REQ, { pos: first.body.pos, timeout: LONG }).then(
      () => Date.now(),
      () => Date.now(),
    );
    await waiting;
    const newer = await slidingSync(
      proxy,
      alice.token,
      { ...REQ, lists: { all: { ...REQ.lists.all, timeline_limit: 1 } } },
      {
        pos: first.body.pos,
        timeout: 300,
      },
    );
    assert.equal(newer.status, 200);
    const endedAt = await older;
    assert.ok(endedAt - startedAt < LONG / 2, 'the replaced long-poll ends instead of hanging on');
    await queueLater(fake, alice, syncResponse({ join: { '!a:fake': { timeline: [message('later')] } } }));
    const next = await slidingSync(proxy, alice.token, REQ, { pos: newer.body.pos, timeout: LONG });
    assert.equal(next.status, 200);
    assert.deepEqual(bodies(next.body.rooms['!a:fake']?.timeline), ['later']);
  });
});
