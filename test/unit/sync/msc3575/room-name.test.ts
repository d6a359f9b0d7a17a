import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { calculateRoomName, type Hero, type NameInputs, nameSortKey } from '../../../../src/sync/msc3575/room-name.js';

const alice: Hero = { userId: '@alice:x', displayname: 'Alice' };
const bob: Hero = { userId: '@bob:x', displayname: 'Bob' };
const charlie: Hero = { userId: '@charlie:x', displayname: 'Charlie' };
const dave: Hero = { userId: '@dave:x', displayname: 'Dave' };
const erin: Hero = { userId: '@erin:x', displayname: 'Erin' };

function name(partial: Partial<NameInputs>): string {
  return calculateRoomName({ heroes: [], joinedCount: 1, invitedCount: 0, ...partial });
}

describe('calculateRoomName', () => {
  it('prefers m.room.name over everything', () => {
    assert.equal(name({ name: 'Team', canonicalAlias: '#team:x', heroes: [alice, bob], joinedCount: 5, invitedCount: 1 }), 'Team');
  });

  it('falls back to the canonical alias when there is no name', () => {
    assert.equal(name({ canonicalAlias: '#team:x', heroes: [alice, bob], joinedCount: 5, invitedCount: 1 }), '#team:x');
  });

  it('treats an empty name or alias as absent', () => {
    assert.equal(name({ name: '', canonicalAlias: '', heroes: [alice], joinedCount: 2 }), 'Alice');
  });

  it('names a DM after the one other member', () => {
    assert.equal(name({ heroes: [alice], joinedCount: 2 }), 'Alice');
  });

  it('joins two heroes with "and"', () => {
    assert.equal(name({ heroes: [alice, bob], joinedCount: 3 }), 'Alice and Bob');
  });

  it('lists three or more heroes with commas and a final "and", no Oxford comma', () => {
    assert.equal(name({ heroes: [alice, bob, charlie], joinedCount: 4 }), 'Alice, Bob and Charlie');
    assert.equal(name({ heroes: [alice, bob, charlie, dave, erin], joinedCount: 6 }), 'Alice, Bob, Charlie, Dave and Erin');
  });

  it('counts the members not shown as heroes: joined + invited - 1 - heroes', () => {
    assert.equal(name({ heroes: [alice, bob], joinedCount: 5, invitedCount: 1 }), 'Alice, Bob and 3 others');
    assert.equal(name({ heroes: [alice], joinedCount: 10 }), 'Alice and 8 others');
  });

  it('says "1 other" for a single remaining member', () => {
    assert.equal(name({ heroes: [alice, bob, charlie, dave, erin], joinedCount: 7 }), 'Alice, Bob, Charlie, Dave, Erin and 1 other');
  });

  it('names at most five heroes', () => {
    const six: Hero = { userId: '@frank:x', displayname: 'Frank' };
    assert.equal(name({ heroes: [alice, bob, charlie, dave, erin, six], joinedCount: 9 }), 'Alice, Bob, Charlie, Dave, Erin and 3 others');
  });

  it('counts invited members as present', () => {
    assert.equal(name({ heroes: [alice, { userId: '@bob:x' }], joinedCount: 2, invitedCount: 1 }), 'Alice and @bob:x');
  });

  it('uses the user ID for a hero without a display name, or with an empty one', () => {
    assert.equal(name({ heroes: [{ userId: '@alice:x' }, { userId: '@bob:x', displayname: '' }], joinedCount: 3 }), '@alice:x and @bob:x');
  });

  it('disambiguates every hero sharing a display name, leaving unique ones alone', () => {
    const alice2: Hero = { userId: '@alice2:x', displayname: 'Alice' };
    assert.equal(name({ heroes: [alice, bob, alice2], joinedCount: 10 }), 'Alice (@alice:x), Bob, Alice (@alice2:x) and 6 others');
  });

  it('disambiguates a display name that imitates another hero’s user ID', () => {
    const evil: Hero = { userId: '@evil:x', displayname: '@alice:x' };
    assert.equal(name({ heroes: [evil, { userId: '@alice:x' }], joinedCount: 3 }), '@alice:x (@evil:x) and @alice:x (@alice:x)');
  });

  it('says "Empty Room" when the requester is alone and there are no heroes', () => {
    assert.equal(name({ heroes: [], joinedCount: 1 }), 'Empty Room');
  });

  it('says "Empty Room" when there are no members and no heroes at all', () => {
    assert.equal(name({ heroes: [], joinedCount: 0, invitedCount: 0 }), 'Empty Room');
  });

  it('names former members of an empty room', () => {
    const left = [
      { ...alice, membership: 'leave' },
      { ...bob, membership: 'ban' },
    ];
    assert.equal(name({ heroes: left, joinedCount: 1 }), 'Empty Room (was Alice and Bob)');
  });

  it('says "Empty Room (was Alice)" for a DM the other member left, as the spec does (the Go proxy said "Alice")', () => {
    assert.equal(name({ heroes: [{ ...alice, membership: 'leave' }], joinedCount: 1 }), 'Empty Room (was Alice)');
  });

  it('disambiguates former members too', () => {
    const heroes = [
      { ...alice, membership: 'leave' },
      { userId: '@alice2:x', displayname: 'Alice', membership: 'leave' },
    ];
    assert.equal(name({ heroes, joinedCount: 1 }), 'Empty Room (was Alice (@alice:x) and Alice (@alice2:x))');
  });

  it('trusts a joined or invited hero over counts that say the room is empty', () => {
    // An invite known only from stripped state: the inviter is joined even though no counts arrived.
    assert.equal(name({ heroes: [{ ...alice, membership: 'join' }], joinedCount: 0, invitedCount: 0 }), 'Alice');
    assert.equal(
      name({
        heroes: [
          { ...alice, membership: 'join' },
          { ...bob, membership: 'invite' },
        ],
        joinedCount: 1,
      }),
      'Alice and Bob',
    );
  });

  it('falls back to a bare count when members exist but no heroes were given', () => {
    assert.equal(name({ heroes: [], joinedCount: 3 }), '2 others');
  });
});

describe('nameSortKey', () => {
  it('trims the listed characters from both ends', () => {
    assert.equal(nameSortKey('#alias:x'), 'alias:x');
    assert.equal(nameSortKey('@alice:x'), 'alice:x');
    assert.equal(nameSortKey('!room:x'), 'room:x');
    assert.equal(nameSortKey('__(Team)__'), 'team');
    assert.equal(nameSortKey(':_@#!()Team()!#@_:'), 'team');
  });

  it('keeps the listed characters inside the name', () => {
    assert.equal(nameSortKey('Empty Room (was Alice)'), 'empty room (was alice');
    assert.equal(nameSortKey('a#b!c(d)e:f_g@h'), 'a#b!c(d)e:f_g@h');
  });

  it('trims only the listed characters, not whitespace or other punctuation', () => {
    assert.equal(nameSortKey(' #team '), ' #team ');
    assert.equal(nameSortKey('[team]'), '[team]');
    assert.equal(nameSortKey('-team-'), '-team-');
    assert.equal(nameSortKey('$team$'), '$team$');
  });

  it('folds case', () => {
    assert.equal(nameSortKey('TeAm'), 'team');
    assert.equal(nameSortKey('Alice and Bob'), nameSortKey('ALICE AND BOB'));
  });

  it('folds non-ASCII case, so "Ärger" sorts with "ärger"', () => {
    assert.equal(nameSortKey('Ärger'), 'ärger');
    assert.equal(nameSortKey('ÄRGER'), nameSortKey('ärger'));
    assert.equal(nameSortKey('ΣΟΦΙΑ'), 'σοφια');
    const sorted = ['zebra', 'Ärger', 'Apple', 'ärgerlich'].map(nameSortKey).sort();
    assert.deepEqual(sorted, ['apple', 'zebra', 'ärger', 'ärgerlich']);
  });

  it('returns an empty key for a name made only of trimmed characters', () => {
    assert.equal(nameSortKey('#@!'), '');
    assert.equal(nameSortKey(''), '');
  });
});
