// The dispatcher on an in-process bus, without a database: each message wakes exactly the
// waiting requests it concerns (by room membership, user, device and wanted extensions), and
// looks at no other user's waiters.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createInProcessBus } from '../../../src/bus/bus.js';
import { Dispatcher, type WaitInterest, type WakeReason } from '../../../src/sync/dispatcher.js';
import { testLogger } from '../../support/db.js';

const NOTHING: WaitInterest = { accountData: false, receipts: false, typing: false, deviceData: false };
const EVERYTHING: WaitInterest = { accountData: true, receipts: true, typing: true, deviceData: true };

function setUp(rooms: Record<string, string[]>) {
  const bus = createInProcessBus(testLogger);
  const looked: string[] = [];
  const dispatcher = new Dispatcher(bus, (roomId) => {
    looked.push(roomId);
    return rooms[roomId] ?? [];
  });
  const woken: string[] = [];
  const waiter = (name: string, userId: string, deviceId: string, wants: WaitInterest) =>
    dispatcher.register({ userId, deviceId, wants, wake: (why: WakeReason) => woken.push(`${name}:${why}`) });
  const take = () => woken.splice(0).sort();
  return { bus, dispatcher, waiter, take, looked };
}

const changed = (roomId: string) => ({ roomId, pos: 1, newEvents: 1, statePos: undefined, latestNid: 1, bump: undefined });

describe('Dispatcher', () => {
  it('wakes the waiters of the users in a room, every device of theirs, once each', () => {
    const { bus, waiter, take } = setUp({ '!shared:x': ['@a:x', '@b:x'], '!a:x': ['@a:x'] });
    waiter('a-phone', '@a:x', 'P', NOTHING);
    waiter('a-desktop', '@a:x', 'D', NOTHING);
    waiter('b', '@b:x', 'B', NOTHING);
    waiter('c', '@c:x', 'C', EVERYTHING);
    bus.publish('room.changed', changed('!shared:x'));
    assert.deepEqual(take(), ['a-desktop:woke', 'a-phone:woke', 'b:woke']);
    bus.publish('room.changed', changed('!a:x'));
    assert.deepEqual(take(), ['a-desktop:woke', 'a-phone:woke']);
    bus.publish('user.rooms_changed', { userId: '@b:x', roomIds: ['!new:x'], pos: 2 });
    assert.deepEqual(take(), ['b:woke']);
  });

  it('routes extension data only to the requests that want it', () => {
    const { bus, waiter, take } = setUp({ '!r:x': ['@a:x'] });
    waiter('plain', '@a:x', 'P', NOTHING);
    waiter('all', '@a:x', 'D', EVERYTHING);
    bus.publish('room.receipts', { roomId: '!r:x', pos: 3 });
    bus.publish('room.typing', { roomId: '!r:x', userIds: ['@b:x'] });
    bus.publish('user.account_data', { userId: '@a:x', types: ['m.direct'], pos: 4 });
    assert.deepEqual(take(), ['all:woke', 'all:woke', 'all:woke']);
    // Device data and a dead token concern one device only.
    bus.publish('device.data', { userId: '@a:x', deviceId: 'P', pos: 5, toDevice: 1, deviceLists: false, keys: false });
    assert.deepEqual(take(), [], 'the phone does not want device data; the desktop is another device');
    bus.publish('device.data', { userId: '@a:x', deviceId: 'D', pos: 6, toDevice: 1, deviceLists: false, keys: false });
    assert.deepEqual(take(), ['all:woke']);
    bus.publish('device.token_expired', { userId: '@a:x', deviceId: 'P', softLogout: false });
    assert.deepEqual(take(), ['plain:expired']);
  });

  it('forgets a waiter once unregistered, and a user with none', () => {
    const { bus, dispatcher, waiter, take } = setUp({ '!r:x': ['@a:x'] });
    const stop = waiter('a', '@a:x', 'P', NOTHING);
    assert.ok(dispatcher.hasWaiters('@a:x'));
    assert.equal(dispatcher.size, 1);
    stop();
    assert.equal(dispatcher.hasWaiters('@a:x'), false);
    bus.publish('room.changed', changed('!r:x'));
    assert.deepEqual(take(), []);
  });

  it('costs a user or device message no room lookup, and a room message one', () => {
    const { bus, waiter, looked } = setUp({ '!r:x': ['@a:x'] });
    for (let i = 0; i < 1000; i++) waiter(`w${i}`, `@u${i}:x`, 'D', EVERYTHING);
    bus.publish('user.rooms_changed', { userId: '@u1:x', roomIds: ['!r:x'], pos: 1 });
    bus.publish('device.data', { userId: '@u2:x', deviceId: 'D', pos: 2, toDevice: 1, deviceLists: false, keys: false });
    assert.deepEqual(looked, []);
    bus.publish('room.changed', changed('!r:x'));
    assert.deepEqual(looked, ['!r:x']);
  });
});
