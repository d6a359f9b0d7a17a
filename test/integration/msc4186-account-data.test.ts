// MSC4186 account_data extension (MSC3959) through the whole proxy, and how per-room extensions
// are scoped by lists with zero, one or several ranges and by room subscriptions.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRoomState, message, syncResponse } from '../support/builders.js';
import { addUser, pushSync, queueLater, type SsResult, slidingSync, startStack } from '../support/sliding-sync-client.js';

const ME = '@alice:fake';
const BOB = '@bob:fake';
const note = (room: number, v = 1) => ({ type: 'org.example.note', content: { room, v } });

/** !r1..!rn, the higher the more recent; each with room account data, a receipt and a typer. */
function rooms(n: number) {
  const join: Record<string, unknown> = {};
  for (let i = 1; i <= n; i++) {
    const msg = message(`r${i}`, BOB);
    join[`!r${i}:fake`] = {
      state: createRoomState(`!r${i}:fake`, ME, { joined: [BOB] }),
      timeline: [msg],
      accountData: [note(i)],
      ephemeral: [
        { type: 'm.receipt', content: { [msg.event_id]: { 'm.read': { [BOB]: { ts: i } } } } },
        { type: 'm.typing', content: { user_ids: [BOB] } },
      ],
    };
  }
  return join as never;
}

const ranged = (ranges: number[][] | undefined) => ({ ...(ranges ? { ranges } : {}), timeline_limit: 1, required_state: [] });
const globalTypes = (res: SsResult) => (res.body.extensions.account_data?.global ?? []).map((e) => e.type).sort();
const roomsOf = (res: SsResult, ext: 'account_data' | 'receipts' | 'typing') => Object.keys(res.body.extensions[ext]?.rooms ?? {}).sort();

describe('MSC4186 account_data', () => {
  it('sends all global account data first, then only what changed, and room data for rooms in scope', async (t) => {
    const { fake, proxy } = await startStack(t);
    const settings = (v: number) => ({ type: 'org.example.settings', content: { v } });
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({ join: rooms(3), accountData: [settings(1), { type: 'm.direct', content: { [BOB]: ['!r1:fake'] } }] }),
    );
    const req = (ranges: number[][]) => ({ lists: { main: ranged(ranges) }, extensions: { account_data: { enabled: true } } });
    const first = await slidingSync(proxy, alice.token, req([[0, 0]]));
    assert.deepEqual(globalTypes(first), ['m.direct', 'org.example.settings']);
    assert.deepEqual(first.body.extensions.account_data?.rooms, { '!r3:fake': [note(3)] }, 'only the room in the window');

    const quiet = await slidingSync(proxy, alice.token, req([[0, 0]]), { pos: first.body.pos, timeout: 0 });
    assert.deepEqual(globalTypes(quiet), [], 'nothing changed');
    assert.deepEqual(roomsOf(quiet, 'account_data'), []);

    await pushSync(
      fake,
      alice,
      syncResponse({
        accountData: [settings(2), { type: 'org.example.new', content: {} }],
        join: { '!r3:fake': { accountData: [note(3, 2)] }, '!r1:fake': { accountData: [note(1, 2)] } },
      }),
    );
    const changed = await slidingSync(proxy, alice.token, req([[0, 0]]), { pos: quiet.body.pos, timeout: 0 });
    assert.deepEqual(globalTypes(changed), ['org.example.new', 'org.example.settings'], 'the changed types only');
    assert.deepEqual(changed.body.extensions.account_data?.global?.find((e) => e.type === 'org.example.settings')?.content, { v: 2 });
    assert.deepEqual(changed.body.extensions.account_data?.rooms, { '!r3:fake': [note(3, 2)] }, 'not for a room out of scope');
    const retried = await slidingSync(proxy, alice.token, req([[0, 0]]), { pos: quiet.body.pos, timeout: 0 });
    assert.deepEqual(globalTypes(retried), ['org.example.new', 'org.example.settings'], 'a lost response is resent');

    const wider = await slidingSync(proxy, alice.token, req([[0, 2]]), { pos: retried.body.pos, timeout: 0 });
    assert.deepEqual(wider.body.extensions.account_data?.rooms, { '!r1:fake': [note(1, 2)], '!r2:fake': [note(2)] });
  });

  it('ends a long-poll on an account data change alone', async (t) => {
    const { fake, proxy, parked } = await startStack(t);
    const alice = addUser(fake, ME, 'A', syncResponse({ join: rooms(1) }));
    const req = { lists: { main: ranged([[0, 9]]) }, extensions: { account_data: { enabled: true } } };
    const first = await slidingSync(proxy, alice.token, req);
    const waiting = parked();
    const poll = slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 10_000 });
    await waiting;
    await queueLater(fake, alice, syncResponse({ accountData: [{ type: 'org.example.ping', content: {} }] }));
    const res = await poll;
    assert.deepEqual(globalTypes(res), ['org.example.ping']);
    assert.deepEqual(res.body.rooms, {});
    assert.ok(res.ms < 5000, `returned early (${res.ms} ms)`);
  });
});

describe('MSC4186 extension scope', () => {
  const all = { enabled: true };
  const scoped = (lists?: string[], rooms?: string[]) => ({ enabled: true, lists, rooms });
  const exts = (scope: Record<string, unknown>) => ({ account_data: scope, receipts: scope, typing: scope });
  const assertScope = (res: SsResult, expected: string[], why: string) => {
    assert.equal(res.status, 200, JSON.stringify(res.body));
    for (const ext of ['account_data', 'receipts', 'typing'] as const) assert.deepEqual(roomsOf(res, ext), expected, `${ext}: ${why}`);
  };

  it('covers the windows of lists with zero, one or several ranges', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', syncResponse({ join: rooms(4) }));
    const send = (connId: string, lists: Record<string, unknown>, scope: Record<string, unknown>) =>
      slidingSync(proxy, alice.token, { conn_id: connId, lists, extensions: exts(scope) });

    const several = await send(
      'several',
      {
        multi: ranged([
          [0, 0],
          [2, 2],
        ]),
      },
      all,
    );
    assertScope(several, ['!r2:fake', '!r4:fake'], 'two ranges');
    const one = await send('one', { single: ranged([[1, 2]]) }, all);
    assertScope(one, ['!r2:fake', '!r3:fake'], 'one range');
    const none = await send('none', { everything: ranged(undefined) }, all);
    assertScope(none, ['!r1:fake', '!r2:fake', '!r3:fake', '!r4:fake'], 'a list without ranges is all rooms');
    const empty = await send('empty', { nothing: ranged([]) }, all);
    assert.equal(empty.body.lists.nothing?.count, 4);
    assertScope(empty, [], 'ranges: [] selects no room');
    const named = await send(
      'named',
      {
        multi: ranged([
          [0, 0],
          [2, 2],
        ]),
        single: ranged([[1, 1]]),
      },
      scoped(['single']),
    );
    assertScope(named, ['!r3:fake'], 'only the lists named');
    const neither = await send('neither', { multi: ranged([[0, 3]]) }, scoped([], []));
    assertScope(neither, [], 'lists: [] and rooms: [] select nothing');
  });

  it('covers room subscriptions, all of them or those named', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', syncResponse({ join: rooms(3) }));
    const subs = { '!r1:fake': ranged(undefined), '!r2:fake': ranged(undefined) };
    const every = await slidingSync(proxy, alice.token, { conn_id: 'every', room_subscriptions: subs, extensions: exts(all) });
    assertScope(every, ['!r1:fake', '!r2:fake'], 'all subscriptions');
    const body = { conn_id: 'named', room_subscriptions: subs, extensions: exts(scoped([], ['!r2:fake', '!r3:fake'])) };
    const named = await slidingSync(proxy, alice.token, body);
    assertScope(named, ['!r2:fake'], 'named rooms that are subscribed');
  });
});
