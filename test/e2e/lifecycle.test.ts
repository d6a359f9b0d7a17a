// Lifecycle end to end: a device logged out upstream loses its sliding sync connection with
// 401 M_UNKNOWN_TOKEN, and a proxy restart (SIGTERM, start on the same database) keeps every
// client's pos valid and catches up with what happened while it was down.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startE2eProxy } from '../support/e2e-proxy.js';
import { eventually, type Json, MatrixHttpError, type MatrixUser, registerUser } from '../support/matrix-users.js';
import { homeserverForFile } from '../support/synapse.js';
import { settle } from './oracle.js';

const hs = await homeserverForFile();

const isUnknownToken = (err: unknown) => {
  assert.ok(err instanceof MatrixHttpError, `expected an HTTP error, got ${String(err)}`);
  assert.deepEqual([err.status, err.errcode, err.body.soft_logout], [401, 'M_UNKNOWN_TOKEN', false], err.message);
  return true;
};

test('lifecycle: token death and proxy restarts', { skip: hs.skip, timeout: 180_000 }, async (t) => {
  const hsUrl = hs.url as string;
  const proxy = await startE2eProxy(t, hsUrl);
  const body = { lists: { all: { ranges: [[0, 9]], timeline_limit: 5, required_state: [['m.room.name', '']] } } };
  const timelineIds = (res: Json, room: string): string[] => (res.rooms?.[room]?.timeline ?? []).map((e: Json) => e.event_id);

  await t.test('a device logged out upstream gets 401 M_UNKNOWN_TOKEN, in flight and afterwards', async () => {
    const alice = await registerUser(hsUrl, 'alice');
    const laptop = await alice.login('laptop');
    await alice.createRoom({ name: 'Notes' });
    const first = await laptop.slidingSync(proxy.url, body);
    assert.equal(first.lists.all.count, 1);
    const inFlight = laptop.slidingSync(proxy.url, body, { pos: first.pos, timeout: 30_000 }).then(
      () => assert.fail('the long poll answered 200 after the logout'),
      (err: unknown) => err,
    );
    await laptop.logout();
    // The proxy learns on its next upstream call with the token; Alice's other device writing
    // account data ends the poller's current long poll at once (otherwise up to 30 s).
    await alice.setAccountData('org.example.e2e.nudge', { at: Date.now() });
    isUnknownToken(await inFlight);
    await assert.rejects(laptop.slidingSync(proxy.url, body, { pos: first.pos }), isUnknownToken);
    await assert.rejects(laptop.slidingSync(proxy.url, body), isUnknownToken, 'a new connection too');
    // The user's other device is unaffected.
    assert.equal((await alice.slidingSync(proxy.url, body)).lists.all.count, 1);
  });

  /** Whether the proxy has logged that its poller for `deviceId` met a rejected token. */
  const pollerSawDeadToken = (deviceId: string) =>
    proxy
      .output()
      .split('\n')
      .some((line) => line.includes(`"device":"${deviceId}"`) && line.includes('token rejected by the homeserver'));

  await t.test('a logged-out device with no request in flight gets 401 on its next request', async () => {
    const alice = await registerUser(hsUrl, 'alice');
    const phone = await alice.login('phone');
    const first = await phone.slidingSync(proxy.url, body);
    await phone.logout();
    // The proxy learns on its poller's next upstream call: nudge it (or wait up to 30 s).
    await alice.setAccountData('org.example.e2e.nudge', { at: Date.now() });
    await eventually('the poller to meet the dead token', async () => (pollerSawDeadToken(phone.deviceId) ? true : undefined), 35_000);
    await assert.rejects(phone.slidingSync(proxy.url, body, { pos: first.pos }), isUnknownToken);
    await assert.rejects(phone.slidingSync(proxy.url, body), isUnknownToken, 'a new connection too');
  });

  await t.test('a request racing the death of its token gets 401 M_UNKNOWN_TOKEN, never a 500 or M_UNKNOWN_POS', async () => {
    // The race is narrow: a request that authenticated just before the poller dropped the
    // device's connections. Repeat until one request has met the dead token in each round.
    for (let round = 0; round < 15; round++) {
      const alice = await registerUser(hsUrl, 'alice');
      const phone = await alice.login('phone');
      const first = await phone.slidingSync(proxy.url, body);
      await phone.logout();
      const err = await eventually(
        'a rejected request',
        async () => {
          await alice.setAccountData('org.example.e2e.nudge', { at: Date.now() });
          return phone.slidingSync(proxy.url, body, { pos: first.pos }).then(
            () => undefined,
            (e: unknown) => e,
          );
        },
        35_000,
        0,
      );
      isUnknownToken(err);
    }
  });

  await t.test('after a restart the same pos keeps working and live messages still arrive', async () => {
    const [alice, bob] = await Promise.all([registerUser(hsUrl, 'alice'), registerUser(hsUrl, 'bob')]);
    await Promise.all([settle(proxy.url, alice), settle(proxy.url, bob)]);
    const room = await bob.createRoom({ name: 'Across restarts', invite: [alice.userId] });
    await alice.join(room);
    const before = await bob.sendMessage(room, 'before the restart');
    await settle(proxy.url, alice);
    const first = await alice.slidingSync(proxy.url, body);
    assert.deepEqual(timelineIds(first, room).slice(-1), [before]);

    assert.equal(await proxy.stop(), 0, 'SIGTERM stops the proxy cleanly');
    const whileDown = await bob.sendMessage(room, 'while the proxy was down');
    await proxy.start();

    // The pos from before the restart is still known (no M_UNKNOWN_POS), and the connection
    // continues where it was: the missed message comes as a delta, not the room from scratch.
    const caughtUp = await nextWith(alice, first.pos, room, whileDown);
    assert.equal(caughtUp.rooms[room].initial, undefined);
    assert.deepEqual(timelineIds(caughtUp, room), [whileDown]);

    // A long poll waiting when Bob sends; a response on the way may carry only the room's new
    // unread counts (they can come in a v2 response of their own), then the message follows.
    const [woken, liveId] = await Promise.all([
      alice.slidingSync(proxy.url, body, { pos: caughtUp.pos, timeout: 20_000 }),
      bob.sendMessage(room, 'after the restart'),
    ]);
    const live = timelineIds(woken, room).includes(liveId) ? woken : await nextWith(alice, woken.pos, room, liveId, [woken]);
    assert.deepEqual(timelineIds(live, room), [liveId]);
    assert.equal(live.rooms[room].num_live, 1);
  });

  /**
   * Long-polls from `pos` until a response carries `eventId` in `room` (bounded). Responses on
   * the way may update the room (its unread counts can come in a v2 response of their own) but
   * must carry no other event.
   */
  async function nextWith(user: MatrixUser, pos: string, room: string, eventId: string, before: Json[] = []): Promise<Json> {
    const deadline = Date.now() + 20_000;
    const quiet = (res: Json) => {
      assert.deepEqual(Object.keys(res.rooms), Object.keys(res.rooms).length ? [room] : [], 'no other room changed');
      assert.deepEqual(timelineIds(res, room), [], `no other event arrived: ${JSON.stringify(res.rooms[room])}`);
    };
    for (const res of before) quiet(res);
    let res = await user.slidingSync(proxy.url, body, { pos, timeout: 10_000 });
    while (!timelineIds(res, room).includes(eventId)) {
      assert.ok(Date.now() < deadline, `${eventId} never arrived after the restart`);
      quiet(res);
      res = await user.slidingSync(proxy.url, body, { pos: res.pos, timeout: 10_000 });
    }
    return res;
  }
});
