// Two devices of one user, each long-polling its own connection through the proxy, against a
// real Synapse: one invite must end both long-polls with the invite, not one of them at its
// timeout (the second device used to recompute from the user's old rooms and sleep again).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startE2eProxy } from '../support/e2e-proxy.js';
import { type Json, registerUser } from '../support/matrix-users.js';
import { homeserverForFile } from '../support/synapse.js';
import { settle } from './oracle.js';

const hs = await homeserverForFile();
const LONG_POLL_MS = 20_000;

test('two devices of one user are both woken by one invite', { skip: hs.skip, timeout: 180_000 }, async (t) => {
  const hsUrl = hs.url as string;
  const proxy = await startE2eProxy(t, hsUrl);
  const [phone, bob] = await Promise.all([registerUser(hsUrl, 'alice'), registerUser(hsUrl, 'bob')]);
  const desktop = await phone.login('desktop');
  // One device at a time: settle's marker is the user's account data, shared by their devices.
  await Promise.all([settle(proxy.url, phone).then(() => settle(proxy.url, desktop)), settle(proxy.url, bob)]);
  const body = { lists: { all: { ranges: [[0, 9]], timeline_limit: 1, required_state: [['m.room.name', '']] } } };
  for (let round = 0; round < 3; round++) {
    const [p1, d1] = await Promise.all([phone.slidingSync(proxy.url, body), desktop.slidingSync(proxy.url, body)]);
    const started = Date.now();
    // Whether a long-poll is already parked when the invite lands or not, it must answer with it.
    const polls = [p1, d1].map((first, i) =>
      (i ? desktop : phone).slidingSync(proxy.url, body, { pos: first.pos, timeout: LONG_POLL_MS }).then((res: Json) => ({
        res,
        ms: Date.now() - started,
      })),
    );
    const room = await bob.createRoom({ name: `Invite ${round}`, invite: [phone.userId] });
    const [onPhone, onDesktop] = await Promise.all(polls);
    for (const [name, got] of [
      ['phone', onPhone],
      ['desktop', onDesktop],
    ] as const) {
      assert.ok(got?.res.rooms?.[room], `round ${round}: the ${name} got the invite`);
      assert.ok((got?.ms ?? LONG_POLL_MS) < LONG_POLL_MS / 2, `round ${round}: the ${name} answered on the invite (${got?.ms} ms)`);
    }
  }
});
