// matrix-js-sdk 37.2.0, the last release that speaks MSC3575, headless in Node against the
// proxy's org.matrix.msc3575 endpoint: the proxy is its only homeserver URL, its SlidingSync
// keeps a by-name and a by-recency list through the ops the proxy sends, and startClient()
// turns room data and the extensions (account data, typing, receipts) into its Room objects.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as sdk from 'matrix-js-sdk-37';
import { logger as sdkGlobalLogger } from 'matrix-js-sdk-37/lib/logger.js';
import { SlidingSync, SlidingSyncEvent } from 'matrix-js-sdk-37/lib/sliding-sync.js';
import { failed, startE2eProxy } from '../support/e2e-proxy.js';
import { eventually, registerUser } from '../support/matrix-users.js';
import { quietSdkLog, silenceGlobal } from '../support/quiet-sdk-log.js';
import { homeserverForFile } from '../support/synapse.js';

const hs = await homeserverForFile();

const sdkLog = quietSdkLog();
silenceGlobal(sdkGlobalLogger, sdkLog);

test('matrix-js-sdk 37 (MSC3575) syncs through the proxy', { skip: hs.skip, timeout: 150_000 }, async (t) => {
  const hsUrl = hs.url as string;
  const proxy = await startE2eProxy(t, hsUrl);
  const [alice, bob] = await Promise.all([registerUser(hsUrl, 'alice'), registerUser(hsUrl, 'bob')]);
  const zebra = await bob.createRoom({ name: 'Zebra', invite: [alice.userId] });
  await alice.join(zebra);
  await bob.sendMessage(zebra, 'stripes');
  const apple = await bob.createRoom({ name: 'apple', invite: [alice.userId] });
  await alice.join(apple);
  const appleEvent = await bob.sendMessage(apple, 'crunch');
  // No m.room.name: MSC3575 calculates it from the other member.
  const dm = await bob.createRoom({ invite: [alice.userId] });
  await alice.join(dm);
  await bob.sendMessage(dm, 'just us');

  t.afterEach((st) => {
    if (failed(st)) process.stderr.write(`\n--- matrix-js-sdk 37 log (last 50 lines):\n${sdkLog.tail(50)}\n`);
  });
  const client = sdk.createClient({
    baseUrl: proxy.url,
    accessToken: alice.accessToken,
    userId: alice.userId,
    deviceId: alice.deviceId,
    logger: sdkLog.logger as never,
  });
  const required = [
    ['m.room.name', ''],
    ['m.room.member', '$ME'],
    // Typing users must be members the SDK knows.
    ['m.room.member', '$LAZY'],
  ];
  const lists = new Map([
    ['names', { ranges: [[0, 9]], sort: ['by_name'], timeline_limit: 5, required_state: required }],
    ['recent', { ranges: [[0, 1]], sort: ['by_recency'], timeline_limit: 5, required_state: required }],
  ]);
  const slidingSync = new SlidingSync(proxy.url, lists, { timeline_limit: 10, required_state: [['*', '*']] }, client as never, 5000);
  const seen = new Map<string, string[]>();
  slidingSync.on(SlidingSyncEvent.List, (key, _count, indexToRoom) => {
    seen.set(
      key,
      Object.entries(indexToRoom)
        .sort(([a], [b]) => Number(a) - Number(b))
        .map(([, id]) => id),
    );
  });
  await client.startClient({ slidingSync } as never);
  try {
    await scenarios();
  } finally {
    client.stopClient();
  }

  async function scenarios() {
    const listIs = async (key: string, ids: string[]) => {
      try {
        await eventually(`list ${key}`, async () => (String(seen.get(key)) === String(ids) ? true : undefined));
      } catch (err) {
        const names = new Map([
          [zebra, 'zebra'],
          [apple, 'apple'],
          [dm, 'dm'],
        ]);
        const shown = (xs: string[] | undefined) => (xs ?? []).map((x) => names.get(x) ?? x).join(',');
        throw new Error(`${(err as Error).message}: wanted ${shown(ids)}, saw ${shown(seen.get(key))}`);
      }
    };

    await t.test('lists come sorted by name and by recency, rooms with calculated names and timelines', async () => {
      await listIs('names', [apple, dm, zebra]);
      await listIs('recent', [dm, apple]);
      await eventually('the rooms in the SDK', async () => (client.getRoom(dm) && client.getRoom(zebra) ? true : undefined));
      assert.equal(client.getRoom(apple)?.name, 'apple');
      assert.equal(client.getRoom(dm)?.name, bob.localpart, 'named after the other member by the proxy');
      const texts = (client.getRoom(zebra)?.getLiveTimeline().getEvents() ?? []).filter((e) => e.getType() === 'm.room.message');
      assert.deepEqual(
        texts.map((e) => e.getContent().body),
        ['stripes'],
      );
    });

    await t.test('a new message moves its room to the top of the recency window (DELETE/INSERT)', async () => {
      await bob.sendMessage(zebra, 'back on top');
      await listIs('recent', [zebra, dm]);
      await eventually('the live message', async () =>
        client
          .getRoom(zebra)
          ?.getLiveTimeline()
          .getEvents()
          .some((e) => e.getContent().body === 'back on top')
          ? true
          : undefined,
      );
      assert.deepEqual(seen.get('names'), [apple, dm, zebra], 'a message does not reorder by name');
    });

    await t.test('a rename reorders the by-name list', async () => {
      await bob.setState(apple, 'm.room.name', '', { name: 'zzz last' });
      await listIs('names', [dm, zebra, apple]);
      await eventually('the new name', async () => (client.getRoom(apple)?.name === 'zzz last' ? true : undefined));
    });

    await t.test('extensions: account data, typing and receipts reach the SDK', async () => {
      await alice.setAccountData('org.example.e2e', { answer: 42 });
      await eventually('global account data', async () =>
        client.getAccountData('org.example.e2e' as never)?.getContent().answer === 42 ? true : undefined,
      );
      await bob.typing(zebra, true);
      await eventually('bob typing', async () => (client.getRoom(zebra)?.getMember(bob.userId)?.typing ? true : undefined));
      await bob.receipt(apple, appleEvent);
      await eventually('bob read receipt', async () =>
        client.getRoom(apple)?.getReadReceiptForUserId(bob.userId, true)?.eventId === appleEvent ? true : undefined,
      );
    });
  }
});
