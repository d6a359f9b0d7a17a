/**
 * Calculated room display name for MSC3575 `rooms[id].name` and the `by_name` sort key.
 *
 * Follows the Client-Server spec "Calculating the display name for a room", with the Go sliding-sync
 * proxy's wording where the spec leaves room (no Oxford comma), because
 * MSC3575 clients were built against that proxy's output.
 */

import { type Hero, MAX_HEROES } from '../heroes.js';

export type { Hero };

export interface NameInputs {
  /** m.room.name content.name, when non-empty */
  name?: string;
  /** m.room.canonical_alias content.alias */
  canonicalAlias?: string;
  /** up to 5 other members (never the requester), joined/invited first, as the homeserver's m.heroes */
  heroes: Hero[];
  /** including the requester when joined */
  joinedCount: number;
  invitedCount: number;
}

const EMPTY_ROOM = 'Empty Room';

export function calculateRoomName(inputs: NameInputs): string {
  if (inputs.name) return inputs.name;
  if (inputs.canonicalAlias) return inputs.canonicalAlias;
  return nameFromMembers(inputs.heroes, otherMemberCount(inputs));
}

/**
 * Members besides the requester. Counts can lag behind the heroes (e.g. an invite whose stripped state
 * carries the inviter but no counts), so a hero known to be joined or invited proves the room is not empty.
 */
function otherMemberCount(inputs: NameInputs): number {
  const fromCounts = inputs.joinedCount + inputs.invitedCount - 1;
  const presentHeroes = inputs.heroes.filter((h) => h.membership === 'join' || h.membership === 'invite').length;
  return Math.max(fromCounts, presentHeroes);
}

function nameFromMembers(heroes: Hero[], others: number): string {
  const names = disambiguate(heroes).slice(0, MAX_HEROES);
  if (others <= 0) {
    // Alone: the heroes, if any, are whoever used to be here (homeservers fall back to left/banned members).
    return names.length === 0 ? EMPTY_ROOM : `${EMPTY_ROOM} (was ${joinWithAnd(names)})`;
  }
  const remaining = others - names.length;
  if (remaining <= 0) return joinWithAnd(names);
  const rest = remaining === 1 ? '1 other' : `${remaining} others`;
  return names.length === 0 ? rest : `${names.join(', ')} and ${rest}`;
}

/** "A", "A and B", "A, B and C": the Go proxy's list style, without an Oxford comma. */
function joinWithAnd(names: string[]): string {
  if (names.length <= 1) return names.join('');
  return `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
}

/**
 * Heroes whose visible names collide all get their user ID appended, so no name can impersonate another
 * hero; a display name equal to another hero's bare user ID counts as a collision too.
 */
function disambiguate(heroes: Hero[]): string[] {
  const uses = new Map<string, number>();
  for (const hero of heroes) uses.set(visibleName(hero), (uses.get(visibleName(hero)) ?? 0) + 1);
  return heroes.map((hero) => {
    const name = visibleName(hero);
    return (uses.get(name) ?? 0) > 1 ? `${name} (${hero.userId})` : name;
  });
}

/** An empty displayname is as good as none: the spec falls back to the raw user ID. */
function visibleName(hero: Hero): string {
  return hero.displayname || hero.userId;
}

/** Sigils and punctuation that would otherwise sort aliases and "(was …)" names away from their letters. */
const SORT_TRIM = /^[#!():_@]+|[#!():_@]+$/g;

/** by_name sort key: case-folded calculated name with the characters #!():_@ trimmed from both ends */
export function nameSortKey(name: string): string {
  // Locale-independent lower-casing, as the Go proxy's strings.ToLower, so keys do not depend on the host locale.
  return name.replace(SORT_TRIM, '').toLowerCase();
}
