// matrix-js-sdk 43, headless in Node, as Element Web drives it when .well-known points at the
// proxy: the proxy's URL is the client's ONLY homeserver URL, so /versions, /pushrules/,
// /capabilities and every other request go through the proxy's front door, and SlidingSync
// runs through startClient({ slidingSync }). No crypto is initialised, so the SDK needs neither
// wasm nor IndexedDB and sends no e2ee extension.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as sdk from 'matrix-js-sdk';
import { type Logger, logger as sdkGlobalLogger } from 'matrix-js-sdk/lib/logger.js';
import { type MSC3575SlidingSyncResponse, SlidingSync, SlidingSyncEvent, SlidingSyncState } from 'matrix-js-sdk/lib/sliding-sync.js';
import { failed, startE2eProxy } from '../support/e2e-proxy.js';
import { eventually, registerUser } from '../support/matrix-users.js';
import { quietSdkLog, silenceGlobal } from '../support/quiet-sdk-log.js';
import { homeserverForFile } from '../support/synapse.js';

const hs = await homeserverForFile();

const sdkLog = quietSdkLog();
silenceGlobal(sdkGlobalLogger, sdkLog);
const quiet = sdkLog.logger as Logger;

test('matrix-js-sdk 43 syncs through the proxy', { skip: hs.skip, timeout: 120_000 }, async (t) => {
  const hsUrl = hs.url as string;
  const proxy = await startE2eProxy(t, hsUrl);
  const [alice, bob] = await Promise.all([registerUser(hsUrl, 'alice'), registerUser(hsUrl, 'bob')]);
  const named = await bob.createRoom({ name: 'Book club', invite: [alice.userId] });
  await alice.join(named);
  await bob.sendMessage(named, 'welcome to the club');
  // No m.room.name: clients name it after its other member (the hero).
  const unnamed = await bob.createRoom({ invite: [alice.userId] });
  await alice.join(unnamed);
  await bob.sendMessage(unnamed, 'just us');

  t.afterEach((st) => {
    if (failed(st)) process.stderr.write(`\n--- matrix-js-sdk log (last 50 lines):\n${sdkLog.tail(50)}\n`);
  });
  const client = sdk.createClient({
    baseUrl: proxy.url,
    accessToken: alice.accessToken,
    userId: alice.userId,
    deviceId: alice.deviceId,
    logger: quiet,
  });
  const lists = new Map([
    [
      'all',
      {
        ranges: [[0, 19]],
        timeline_limit: 10,
        required_state: [
          ['m.room.name', ''],
          ['m.room.create', ''],
          ['m.room.member', '$ME'],
          ['m.room.member', '$LAZY'],
        ],
      },
    ],
  ]);
  // The SDK's own default room subscription. Each request of the SDK leaves a timer of its long
  // poll + 10 s running even after stopClient(), which only delays this file's exit.
  const slidingSync = new SlidingSync(proxy.url, lists, { timeline_limit: 20, required_state: [['*', '*']] }, client, 5000);
  await client.startClient({ slidingSync });
  try {
    await scenarios();
  } finally {
    // Before the proxy stops (t.after), so no request of the SDK is left failing against it.
    client.stopClient();
  }

  async function scenarios() {
    const texts = (roomId: string) =>
      (client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [])
        .filter((e) => e.getType() === 'm.room.message')
        .map((e) => e.getContent().body);

    await t.test('the rooms arrive with their names and timelines', async () => {
      await eventually('the SDK to have both rooms', async () => (client.getRoom(named) && client.getRoom(unnamed) ? true : undefined));
      assert.equal(client.getRoom(named)?.name, 'Book club');
      assert.equal(client.getRoom(unnamed)?.name, bob.localpart, 'named after the hero, from the heroes the proxy sent');
      assert.deepEqual(texts(named), ['welcome to the club']);
      assert.deepEqual(texts(unnamed), ['just us']);
      assert.equal(client.getRoom(named)?.getMyMembership(), 'join');
      assert.ok(['PREPARED', 'SYNCING'].includes(client.getSyncState() ?? ''), `sync state ${client.getSyncState()}`);
    });

    await t.test('a message Bob sends appears on the live timeline', async () => {
      const eventId = await bob.sendMessage(named, 'a live one');
      const event = await eventually('the live message in the SDK', async () =>
        client
          .getRoom(named)
          ?.getLiveTimeline()
          .getEvents()
          .find((e) => e.getId() === eventId),
      );
      assert.equal(event.getSender(), bob.userId);
      assert.deepEqual(texts(named), ['welcome to the club', 'a live one']);
    });

    await t.test('a message the SDK sends goes through the proxy to the homeserver and comes back', async () => {
      const { event_id: eventId } = await client.sendTextMessage(named, 'sent by the SDK');
      await eventually("the SDK's own message, synced back", async () =>
        client
          .getRoom(named)
          ?.getLiveTimeline()
          .getEvents()
          .find((e) => e.getId() === eventId && e.status === null),
      );
      assert.deepEqual(texts(named), ['welcome to the club', 'a live one', 'sent by the SDK']);
    });

    await t.test('a room subscription, sent once by the SDK, is answered and the room stays live through its list', async () => {
      // js-sdk 43 sends a subscription in one request only (its "confirmed" set is not resent);
      // the proxy, as Synapse, applies it to that request, and the list keeps the room live.
      const answered = new Promise<void>((resolve) => {
        const onLifecycle = (state: SlidingSyncState, resp: MSC3575SlidingSyncResponse | null) => {
          if (state === SlidingSyncState.RequestFinished && resp?.rooms?.[named]) {
            slidingSync.off(SlidingSyncEvent.Lifecycle, onLifecycle);
            resolve();
          }
        };
        slidingSync.on(SlidingSyncEvent.Lifecycle, onLifecycle);
      });
      slidingSync.modifyRoomSubscriptions(new Set([named]));
      await bob.sendMessage(named, 'after subscribing');
      await answered;
      await eventually('the message after subscribing', async () => (texts(named).includes('after subscribing') ? true : undefined));
      await bob.sendMessage(named, 'a request later');
      await eventually('a message a request later', async () => (texts(named).at(-1) === 'a request later' ? true : undefined));
    });

    await t.test('a rename reaches the room name', async () => {
      await bob.setState(named, 'm.room.name', '', { name: 'Book club (fiction)' });
      await eventually('the new name in the SDK', async () => (client.getRoom(named)?.name === 'Book club (fiction)' ? true : undefined));
    });

    await t.test('an invite shows up as an invited room', async () => {
      const invite = await bob.createRoom({ name: 'Party', invite: [alice.userId] });
      const room = await eventually('the invite in the SDK', async () => client.getRoom(invite) ?? undefined);
      await eventually('membership invite', async () => (room.getMyMembership() === 'invite' ? true : undefined));
    });
  }
});
