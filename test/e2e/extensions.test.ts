// Extensions end to end: to-device between two real devices, one-time-key counts, device list
// changes, account data and tags, public and private receipts, typing. Where the shapes should
// match, the same request also goes to Synapse's native endpoint and the answers are compared.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startE2eProxy } from '../support/e2e-proxy.js';
import { type Json, type MatrixUser, registerUser, txnId } from '../support/matrix-users.js';
import { homeserverForFile } from '../support/synapse.js';
import { settle } from './oracle.js';

const hs = await homeserverForFile();

/** {type → content}: account data is a map keyed by type; order and empty lists carry nothing. */
const byType = (events: Json[] | undefined) => Object.fromEntries((events ?? []).map((e: Json) => [e.type, e.content]));

test('extensions end to end', { skip: hs.skip, timeout: 180_000 }, async (t) => {
  const hsUrl = hs.url as string;
  const proxy = await startE2eProxy(t, hsUrl);
  const both = (user: MatrixUser, body: unknown, pos?: [string, string], timeout?: number) =>
    Promise.all([user.slidingSync(proxy.url, body, { pos: pos?.[0], timeout }), user.slidingSync(hsUrl, body, { pos: pos?.[1], timeout })]);
  async function users(n: number): Promise<MatrixUser[]> {
    const all = await Promise.all(Array.from({ length: n }, (_, i) => registerUser(hsUrl, ['alice', 'bob', 'carol'][i])));
    await Promise.all(all.map((u) => settle(proxy.url, u)));
    return all;
  }
  async function sharedRoom(owner: MatrixUser, other: MatrixUser, name: string): Promise<string> {
    const room = await owner.createRoom({ name, invite: [other.userId] });
    await other.join(room);
    return room;
  }
  const list = (extensions: Json, timelineLimit = 1) => ({
    lists: { all: { ranges: [[0, 9]], timeline_limit: timelineLimit, required_state: [] } },
    extensions,
  });

  await t.test('to_device: delivered to the addressed device, acknowledged by since, never again', async () => {
    const [alice, bob] = (await users(2)) as [MatrixUser, MatrixUser];
    // A second device of Bob's that only ever syncs with Synapse: the oracle for the shape.
    const bobNative = await bob.login('native only');
    const body = (since?: string) => ({ conn_id: 'encryption', extensions: { to_device: { enabled: true, since } } });
    const first = await bob.slidingSync(proxy.url, body());
    assert.deepEqual(first.extensions.to_device.events ?? [], []);
    const content = { nonce: txnId(), body: 'psst' };
    const [live] = await Promise.all([
      bob.slidingSync(proxy.url, body(first.extensions.to_device.next_batch), { pos: first.pos, timeout: 20_000 }),
      alice.sendToDevice('org.example.e2e.secret', { [bob.userId]: { [bob.deviceId]: content, [bobNative.deviceId]: content } }),
    ]);
    const expected = [{ type: 'org.example.e2e.secret', sender: alice.userId, content }];
    assert.deepEqual(live.extensions.to_device.events, expected);
    assert.equal(typeof live.extensions.to_device.next_batch, 'string');
    const native = await bobNative.slidingSync(hsUrl, body());
    assert.deepEqual(live.extensions.to_device.events, native.extensions.to_device.events, 'same events as Synapse serves');

    // Not acknowledged yet: the same since (a lost response) gets the same message again.
    const retried = await bob.slidingSync(proxy.url, body(first.extensions.to_device.next_batch), { pos: first.pos });
    assert.deepEqual(retried.extensions.to_device.events, expected);
    // Acknowledged: gone, on this connection, with the old since, and on a new connection.
    const next = retried.extensions.to_device.next_batch;
    const acked = await bob.slidingSync(proxy.url, body(next), { pos: retried.pos });
    assert.deepEqual(acked.extensions.to_device.events ?? [], []);
    const stale = await bob.slidingSync(proxy.url, body(first.extensions.to_device.next_batch), { pos: acked.pos });
    assert.deepEqual(stale.extensions.to_device.events ?? [], []);
    const fresh = await bob.slidingSync(proxy.url, { ...body(), conn_id: 'other' });
    assert.deepEqual(fresh.extensions.to_device.events ?? [], []);
  });

  await t.test('e2ee: one-time-key counts and fallback key types follow uploads', async () => {
    const [alice] = (await users(1)) as [MatrixUser];
    const body = { conn_id: 'encryption', extensions: { e2ee: { enabled: true } } };
    const [before, nativeBefore] = await both(alice, body);
    assert.deepEqual(before.extensions.e2ee, nativeBefore.extensions.e2ee);
    assert.deepEqual(before.extensions.e2ee.device_one_time_keys_count, { signed_curve25519: 0 });
    assert.equal((await alice.uploadKeys({ deviceKeys: true, oneTimeKeys: 5, fallbackKey: true })).signed_curve25519, 5);
    // Key counts ride on the next v2 response, which a key upload alone does not trigger.
    await settle(proxy.url, alice);
    const [after, nativeAfter] = await both(alice, body);
    assert.deepEqual(after.extensions.e2ee.device_one_time_keys_count, { signed_curve25519: 5 });
    assert.deepEqual(after.extensions.e2ee.device_unused_fallback_key_types, ['signed_curve25519']);
    assert.deepEqual(after.extensions.e2ee, nativeAfter.extensions.e2ee);
  });

  await t.test('e2ee: device_lists.changed when a user sharing a room logs in a new device', async () => {
    const [alice, bob] = (await users(2)) as [MatrixUser, MatrixUser];
    await sharedRoom(alice, bob, 'Shared');
    await settle(proxy.url, alice);
    const body = { conn_id: 'encryption', extensions: { e2ee: { enabled: true } } };
    const [ours1, native1] = await both(alice, body);
    assert.equal(ours1.extensions.e2ee.device_lists, undefined, 'no device list changes on an initial sync');
    const [[ours2, native2]] = await Promise.all([
      both(alice, body, [ours1.pos, native1.pos], 20_000),
      bob.login('phone').then((phone) => phone.uploadKeys({ deviceKeys: true })),
    ]);
    assert.deepEqual(ours2.extensions.e2ee.device_lists, { changed: [bob.userId], left: [] });
    assert.deepEqual(ours2.extensions.e2ee, native2.extensions.e2ee);
  });

  await t.test('account_data: global and per room (with m.tag), initially and live', async () => {
    const [alice] = (await users(1)) as [MatrixUser];
    const room = await alice.createRoom({ name: 'Work' });
    await alice.setTag(room, 'u.work', 0.25);
    await alice.setAccountData('org.example.prefs', { theme: 'dark' });
    await alice.setRoomAccountData(room, 'org.example.room', { pinned: true });
    await settle(proxy.url, alice);
    const body = list({ account_data: { enabled: true } });
    const [ours1, native1] = await both(alice, body);
    const compare = (ours: Json, native: Json, what: string) => {
      assert.deepEqual(byType(ours.extensions.account_data?.global), byType(native.extensions.account_data?.global), `${what}: global`);
      assert.deepEqual(
        byType(ours.extensions.account_data?.rooms?.[room]),
        byType(native.extensions.account_data?.rooms?.[room]),
        `${what}: room`,
      );
    };
    compare(ours1, native1, 'initial');
    assert.deepEqual(byType(ours1.extensions.account_data.rooms[room]), {
      'm.tag': { tags: { 'u.work': { order: 0.25 } } },
      'org.example.room': { pinned: true },
    });
    assert.deepEqual(byType(ours1.extensions.account_data.global)['org.example.prefs'], { theme: 'dark' });

    const [[ours2, native2]] = await Promise.all([
      both(alice, body, [ours1.pos, native1.pos], 20_000),
      (async () => {
        await alice.setTag(room, 'm.favourite', 0.1);
        await alice.setAccountData('org.example.prefs', { theme: 'light' });
      })(),
    ]);
    // A long poll may return after the first change only: collect until both have arrived.
    let [o, n] = [ours2, native2];
    const merged = { ours: [ours2], native: [native2] };
    const arrived = (rs: Json[]) => byType(rs.flatMap((r) => r.extensions.account_data?.global ?? []))['org.example.prefs'];
    while (!arrived(merged.ours) || !arrived(merged.native)) {
      [o, n] = await both(alice, body, [o.pos, n.pos], 10_000);
      merged.ours.push(o);
      merged.native.push(n);
      assert.ok(merged.ours.length < 5, 'the global change never arrived');
    }
    const flatten = (rs: Json[]) => ({
      extensions: {
        account_data: {
          global: rs.flatMap((r) => r.extensions.account_data?.global ?? []),
          rooms: { [room]: rs.flatMap((r) => r.extensions.account_data?.rooms?.[room] ?? []) },
        },
      },
    });
    compare(flatten(merged.ours), flatten(merged.native), 'live');
    const delta = flatten(merged.ours).extensions.account_data;
    assert.deepEqual(byType(delta.global)['org.example.prefs'], { theme: 'light' });
    assert.deepEqual(byType(delta.rooms[room])['m.tag'], { tags: { 'u.work': { order: 0.25 }, 'm.favourite': { order: 0.1 } } });
  });

  await t.test('receipts: public ones for everyone, m.read.private only for its owner', async () => {
    const [alice, bob] = (await users(2)) as [MatrixUser, MatrixUser];
    const room = await sharedRoom(alice, bob, 'Receipts');
    const fromAlice = await alice.sendMessage(room, 'read me');
    const fromBob = await bob.sendMessage(room, 'and me');
    await bob.receipt(room, fromAlice, 'm.read');
    await alice.receipt(room, fromBob, 'm.read.private');
    await Promise.all([settle(proxy.url, alice), settle(proxy.url, bob)]);
    const body = list({ receipts: { enabled: true } }, 5);
    const receiptsOf = (res: Json) => res.extensions.receipts?.rooms?.[room]?.content ?? {};
    const [forAlice, nativeAlice] = await both(alice, body);
    const [forBob, nativeBob] = await both(bob, body);
    assert.ok(receiptsOf(forAlice)[fromAlice]?.['m.read']?.[bob.userId], "Bob's public receipt, seen by Alice");
    assert.ok(receiptsOf(forAlice)[fromBob]?.['m.read.private']?.[alice.userId], "Alice's own private receipt");
    assert.equal(JSON.stringify(receiptsOf(forBob)).includes('m.read.private'), false, "Alice's private receipt is hers alone");
    assert.ok(receiptsOf(forBob)[fromAlice]?.['m.read']?.[bob.userId], "Bob's own public receipt");
    assert.deepEqual(forAlice.extensions.receipts, nativeAlice.extensions.receipts, 'as Synapse serves Alice');
    assert.deepEqual(forBob.extensions.receipts, nativeBob.extensions.receipts, 'as Synapse serves Bob');

    const [[live, nativeLive]] = await Promise.all([
      both(alice, body, [forAlice.pos, nativeAlice.pos], 20_000),
      bob.receipt(room, fromBob, 'm.read'),
    ]);
    assert.ok(receiptsOf(live)[fromBob]?.['m.read']?.[bob.userId], 'a live receipt');
    assert.deepEqual(live.extensions.receipts, nativeLive.extensions.receipts, 'live, as Synapse serves it');
  });

  await t.test('typing: live for joined rooms, never for a room the user was kicked from', async () => {
    const [alice, bob] = (await users(2)) as [MatrixUser, MatrixUser];
    const room = await sharedRoom(bob, alice, 'Typing');
    const kicked = await sharedRoom(bob, alice, 'Kicked');
    await bob.kick(kicked, alice.userId);
    await settle(proxy.url, alice);
    const body = list({ typing: { enabled: true } });
    const [ours1, native1] = await both(alice, body);
    assert.equal(ours1.lists.all.count, 2, 'the kicked room is still listed');
    const [[ours2, native2]] = await Promise.all([both(alice, body, [ours1.pos, native1.pos], 20_000), bob.typing(room, true)]);
    assert.deepEqual(ours2.extensions.typing.rooms, { [room]: { type: 'm.typing', content: { user_ids: [bob.userId] } } });
    assert.deepEqual(ours2.extensions.typing, native2.extensions.typing);

    // Bob types where Alice was kicked (the proxy hears it through Bob's own poller), then stops
    // typing in the shared room: only the latter may reach Alice. Synapse does not filter
    // non-joined rooms (MSC4508 says to), so only ours is asserted here.
    await bob.typing(kicked, true);
    await settle(proxy.url, bob);
    const [ours3] = await Promise.all([alice.slidingSync(proxy.url, body, { pos: ours2.pos, timeout: 20_000 }), bob.typing(room, false)]);
    assert.deepEqual(ours3.extensions.typing.rooms, { [room]: { type: 'm.typing', content: { user_ids: [] } } });
  });
});
