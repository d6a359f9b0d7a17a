// Memory tracks active users: an idle user's cache is dropped (with the rooms no cached user
// holds) unless a request of theirs is waiting, and typing keeps only rooms where someone types.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createInProcessBus } from '../../src/bus/bus.js';
import { TypingCache } from '../../src/cache/typing-cache.js';
import { USER_IDLE_MS } from '../../src/cache/user-cache.js';
import { createAccumulator } from '../../src/ingest/accumulator.js';
import { insertToken } from '../../src/store/devices-table.js';
import { createSyncService } from '../../src/sync/create-engine.js';
import { parseSyncResponse } from '../../src/upstream/sync-response.js';
import { createRoomState, engineRequest, message, syncResponse } from '../support/builders.js';
import { createTestDatabase, testLogger } from '../support/db.js';

const ALICE = { userId: '@alice:x', deviceId: 'A' };
const BOB = { userId: '@bob:x', deviceId: 'B' };

describe('bounded caches', () => {
  it('drops idle users and their rooms, but keeps a user whose request waits', async (t) => {
    const { pool } = await createTestDatabase(t);
    const bus = createInProcessBus(testLogger);
    const acc = createAccumulator({ pool, bus, logger: testLogger });
    let n = 0;
    for (const [device, rooms] of [
      [ALICE, ['!shared:x']],
      [BOB, ['!shared:x', '!bobs:x']],
    ] as const) {
      await insertToken(pool, { tokenHash: Buffer.alloc(32, ++n), tokenEncrypted: Buffer.from('x'), ...device });
      const join = Object.fromEntries(
        rooms.map((id) => [id, { state: createRoomState(id, device.userId), timeline: [message('hi', device.userId)] }]),
      );
      const parsed = parseSyncResponse({ next_batch: `b${n}`, ...syncResponse({ join }) });
      assert.ok('response' in parsed);
      await acc.ingest(device, parsed.response);
    }
    let parked: () => void = () => undefined;
    const waiting = new Promise<void>((resolve) => {
      parked = resolve;
    });
    const { engine, users, metas } = await createSyncService(
      { pool, bus, logger: testLogger, onWait: () => parked() },
      { maxConnectionsPerDevice: 10, maxConnectionsInMemory: 100 },
    );
    const signal = new AbortController().signal;
    await engine.sync(BOB, engineRequest(undefined), signal);
    const first = await engine.sync(ALICE, engineRequest(undefined), signal);
    assert.equal(users.size, 2);
    assert.equal(metas.size, 2);

    const hangUp = new AbortController();
    const poll = engine.sync(ALICE, engineRequest(first.pos, 60_000), hangUp.signal).catch(() => undefined);
    await waiting;
    const later = Date.now() + USER_IDLE_MS + 1;
    assert.equal(users.sweep(later), 1, 'only Bob is dropped');
    assert.ok(users.peek(ALICE.userId), 'Alice waits: kept');
    assert.equal(metas.get('!bobs:x'), undefined, "Bob's own room is dropped");
    assert.ok(metas.get('!shared:x'), 'the room Alice has stays');

    hangUp.abort();
    await poll;
    assert.equal(users.sweep(later), 1, 'Alice goes once nothing of hers waits');
    assert.equal(metas.size, 0);
    // Coming back reloads everything.
    const again = await engine.sync(BOB, engineRequest(undefined), signal);
    assert.deepEqual(Object.keys(again.rooms).sort(), ['!bobs:x', '!shared:x']);
  });

  it('keeps typing only for rooms where someone types', () => {
    const bus = createInProcessBus(testLogger);
    const typing = new TypingCache(bus);
    const changed: string[] = [];
    typing.onChange((roomId) => changed.push(roomId));
    bus.publish('room.typing', { roomId: '!a:x', userIds: ['@bob:x'] });
    const serial = typing.get('!a:x')?.serial;
    assert.ok(serial);
    bus.publish('room.typing', { roomId: '!a:x', userIds: [] });
    assert.equal(typing.get('!a:x'), undefined, 'nobody types: nothing kept');
    bus.publish('room.typing', { roomId: '!b:x', userIds: [] });
    assert.deepEqual(changed, ['!a:x', '!a:x'], 'the stop is a change; an empty list for a quiet room is not');
    bus.publish('room.typing', { roomId: '!a:x', userIds: ['@bob:x'] });
    assert.ok((typing.get('!a:x')?.serial ?? 0) > serial, 'typing again is a newer serial');
  });
});
