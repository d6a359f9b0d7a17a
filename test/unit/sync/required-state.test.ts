import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  compileRequiredState,
  deserializeStateConfig,
  serializeStateConfig,
  stateConfigGrew,
  toSelector,
  unionStateConfigs,
  wants,
} from '../../../src/sync/required-state.js';

const me = '@me:x';

describe('required_state', () => {
  it('understands *, $ME and $LAZY', () => {
    const cfg = compileRequiredState(
      [
        ['m.room.name', ''],
        ['m.room.member', '$ME'],
        ['m.room.member', '$LAZY'],
        ['m.space.child', '*'],
        ['*', 'k'],
      ],
      me,
    );
    assert.equal(wants(cfg, 'm.room.name', ''), true);
    assert.equal(wants(cfg, 'm.room.member', me), true);
    assert.equal(wants(cfg, 'm.room.member', '@other:x'), false);
    assert.equal(wants(cfg, 'm.space.child', '!any:x'), true);
    assert.equal(wants(cfg, 'anything', 'k'), true);
    assert.equal(wants(cfg, 'm.room.topic', ''), false);
    assert.equal(cfg.lazyMembers, true);
    assert.equal(wants(compileRequiredState([['*', '*']], me), 'x', 'y'), true);
  });

  it('takes exclusions out of what is included', () => {
    const cfg = compileRequiredState([['*', '*']], me, [
      ['m.room.member', '*'],
      ['*', 'k'],
      ['m.room.topic', ''],
    ]);
    assert.equal(wants(cfg, 'm.room.name', ''), true);
    assert.equal(wants(cfg, 'm.room.member', me), false);
    assert.equal(wants(cfg, 'x', 'k'), false);
    assert.equal(wants(cfg, 'm.room.topic', ''), false);
    assert.equal(wants(cfg, 'm.room.topic', 'other'), true);
  });

  it('keeps an exclusion in a union only where the other side wants none of it', () => {
    const allButMembers = compileRequiredState([['*', '*']], me, [['m.room.member', '*']]);
    const bob = compileRequiredState([['m.room.member', '@bob:x']], me);
    const union = unionStateConfigs(allButMembers, bob);
    assert.equal(wants(union, 'm.room.name', ''), true);
    assert.equal(wants(union, 'm.room.member', '@bob:x'), true, 'the other side asked for bob');
    const names = unionStateConfigs(allButMembers, compileRequiredState([['m.room.name', '']], me));
    assert.equal(wants(names, 'm.room.member', '@bob:x'), false, 'nobody asked for members');
    const both = unionStateConfigs(allButMembers, compileRequiredState([['m.room.topic', '*']], me, [['m.room.member', '*']]));
    assert.equal(wants(both, 'm.room.member', '@bob:x'), false);
  });

  it('counts a lifted exclusion as growth, and remembers exclusions across a round trip', () => {
    const allButMembers = compileRequiredState([['*', '*']], me, [['m.room.member', '*']]);
    const all = compileRequiredState([['*', '*']], me);
    assert.equal(stateConfigGrew(allButMembers, all), true);
    assert.equal(stateConfigGrew(all, allButMembers), false);
    assert.equal(stateConfigGrew(allButMembers, allButMembers), false);
    const back = deserializeStateConfig(serializeStateConfig(allButMembers));
    assert.equal(wants(back, 'm.room.member', me), false);
    assert.equal(wants(back, 'm.room.name', ''), true);
    assert.equal(stateConfigGrew(back, allButMembers), false);
  });

  it('treats * as a whole value, not a glob', () => {
    const cfg = compileRequiredState([['m.room.*', '']], me);
    assert.equal(wants(cfg, 'm.room.name', ''), false);
    assert.equal(wants(cfg, 'm.room.*', ''), true);
  });

  it('unions configs of several lists and subscriptions', () => {
    const a = compileRequiredState([['m.room.name', '']], me);
    const b = compileRequiredState(
      [
        ['m.room.topic', ''],
        ['m.room.member', '$LAZY'],
      ],
      me,
    );
    const u = unionStateConfigs(a, b);
    assert.equal(wants(u, 'm.room.name', ''), true);
    assert.equal(wants(u, 'm.room.topic', ''), true);
    assert.equal(u.lazyMembers, true);
  });

  it('tells when a config asks for more than before', () => {
    const small = compileRequiredState([['m.room.name', '']], me);
    const big = compileRequiredState(
      [
        ['m.room.name', ''],
        ['m.room.topic', ''],
      ],
      me,
    );
    assert.equal(stateConfigGrew(small, big), true);
    assert.equal(stateConfigGrew(big, small), false);
    assert.equal(stateConfigGrew(compileRequiredState([['*', '*']], me), big), false);
    assert.equal(stateConfigGrew(big, compileRequiredState([['m.room.topic', '*']], me)), true);
    assert.equal(stateConfigGrew(small, compileRequiredState([['m.room.member', '$LAZY']], me)), true);
  });

  it('round-trips through connection memory and builds a store selector', () => {
    const cfg = compileRequiredState(
      [
        ['m.room.name', ''],
        ['m.room.member', '$ME'],
        ['m.room.member', '$LAZY'],
        ['x', '*'],
      ],
      me,
    );
    const back = deserializeStateConfig(serializeStateConfig(cfg));
    assert.equal(stateConfigGrew(cfg, back) || stateConfigGrew(back, cfg), false);
    assert.deepEqual(toSelector(cfg), {
      all: false,
      types: ['x'],
      keys: [],
      pairTypes: ['m.room.name', 'm.room.member'],
      pairKeys: ['', me],
    });
  });
});
