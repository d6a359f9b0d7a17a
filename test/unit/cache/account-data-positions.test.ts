// Global account data known unchanged from the bus: only after the position the tracker
// started at, only up to the user's latest change, and after a reset (the bound) only past it.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createInProcessBus } from '../../../src/bus/bus.js';
import { AccountDataPositions } from '../../../src/cache/account-data-positions.js';
import { testLogger } from '../../support/db.js';

describe('AccountDataPositions', () => {
  it('knows a user unchanged after their latest change, and nothing before its start', () => {
    const bus = createInProcessBus(testLogger);
    const positions = new AccountDataPositions(bus, 10);
    assert.equal(positions.unchangedSince('@a:x', 9), false, 'before the start: unknown');
    assert.equal(positions.unchangedSince('@a:x', 10), true);
    bus.publish('user.account_data', { userId: '@a:x', types: ['m.direct'], pos: 15 });
    assert.equal(positions.unchangedSince('@a:x', 12), false);
    assert.equal(positions.unchangedSince('@a:x', 15), true);
    assert.equal(positions.unchangedSince('@b:x', 12), true, 'another user is unaffected');
  });

  it('forgets everyone past its bound and answers only for positions after the reset', () => {
    const bus = createInProcessBus(testLogger);
    const positions = new AccountDataPositions(bus, 0, 2);
    bus.publish('user.account_data', { userId: '@a:x', types: ['x'], pos: 5 });
    bus.publish('user.account_data', { userId: '@b:x', types: ['x'], pos: 6 });
    bus.publish('stream.advanced', { pos: 8 });
    bus.publish('user.account_data', { userId: '@c:x', types: ['x'], pos: 9 });
    // The reset came with @c's change at 9: everything up to it is forgotten.
    assert.equal(positions.unchangedSince('@a:x', 8), false, 'before the reset: unknown');
    assert.equal(positions.unchangedSince('@a:x', 9), true);
    assert.equal(positions.unchangedSince('@c:x', 8), false);
    assert.equal(positions.unchangedSince('@c:x', 9), true);
  });
});
