// What a user may see of a room, decided in one place for every path that serves room data
// (timeline, required_state, names, avatars, heroes, counts, receipts). Events are stored once
// and shared by every user whose pollers saw them, so the store holds history that some of its
// readers never had: this applies the spec's history visibility rules per event, as Synapse's
// filter_events_for_client does, from the user's own membership changes and the room's
// history_visibility changes in the stream.
import type { UserRoom } from '../cache/user-cache.js';
import { HISTORY_START } from '../store/room-reads.js';

/** Stream positions in (after, upTo]. */
export interface StreamRange {
  after: number;
  upTo: number;
}

/** A state change at a stream position: a history_visibility value or a membership. */
export interface Change {
  pos: number;
  value: string;
}

export interface RoomHistory {
  /** The room's m.room.history_visibility changes, oldest first. */
  visibility: Change[];
  /** The user's own m.room.member changes, oldest first. */
  membership: Change[];
}

export interface RoomView {
  /**
   * Where the user's view of the room ends: now while joined, at their leave or ban otherwise.
   * State, names, avatars, heroes and counts are served as of this position.
   */
  upTo: number;
  /** The ranges whose timeline events the user may see, oldest first, within (HISTORY_START, upTo]. */
  visible: StreamRange[];
}

/** Least restrictive first (Synapse's order); anything else counts as `shared`. */
const VISIBILITY = ['world_readable', 'shared', 'invited', 'joined'];
/** Most joined first; anything else counts as `leave`. */
const MEMBERSHIP = ['join', 'invite', 'knock', 'leave', 'ban'];

const visibilityOf = (v: string) => (VISIBILITY.includes(v) ? v : 'shared');
const membershipOf = (v: string) => (MEMBERSHIP.includes(v) ? v : 'leave');
const laxer = (a: string, b: string) => (VISIBILITY.indexOf(a) <= VISIBILITY.indexOf(b) ? a : b);
const moreJoined = (a: string, b: string) => (MEMBERSHIP.indexOf(a) <= MEMBERSHIP.indexOf(b) ? a : b);

/**
 * Whether what happens in a room now (receipts, typing) reaches the user: only while joined.
 * A room the user is out of, or only invited to, shows nothing of its members' activity.
 */
export function followsActivity(room: Pick<UserRoom, 'membership'> | undefined): boolean {
  return room?.membership === 'join';
}

/** Where the user's view of a room ends (see RoomView.upTo). */
export function viewEnd(room: Pick<UserRoom, 'membership' | 'membershipPos'>, now: number): number {
  return room.membership === 'join' ? now : Math.min(now, room.membershipPos);
}

/**
 * The spec's rule for one event: visible when the room was world_readable at it; or `shared`
 * and the user is joined now; or the user was joined at it; or `invited` and the user was
 * invited at it. A user not joined now ("peeking") gets no `shared` history from before or
 * between their joins: Synapse treats them as never having joined.
 */
function allowed(visibility: string, membership: string, peeking: boolean): boolean {
  if (visibility === 'world_readable' || (visibility === 'shared' && !peeking)) return true;
  if (membership === 'join') return true;
  return visibility === 'invited' && membership === 'invite';
}

/**
 * What `room` (the user's relation to it) lets the user see, given the stream position of the
 * response and the room's history. A change at position p made by a timeline event is that
 * event's own effect: events after it see the new value, the event itself is judged as the
 * spec says for boundaries (a history_visibility change by the laxer of old and new, the user's
 * own membership change by the more joined of the two, and their own leave after an invite or a
 * join always, so a rejected invite or a kick is seen).
 */
export function roomView(room: Pick<UserRoom, 'membership' | 'membershipPos'>, now: number, history: RoomHistory): RoomView {
  const upTo = viewEnd(room, now);
  if (room.membership === 'invite' || room.membership === 'knock') return { upTo, visible: [] };
  const peeking = room.membership !== 'join';
  const visibility = history.visibility.filter((c) => c.pos <= upTo);
  const membership = history.membership.filter((c) => c.pos <= upTo);
  // Joined with no join on record (its event never reached the store): joined from then on.
  if (!peeking && membership.at(-1)?.value !== 'join' && room.membershipPos > (membership.at(-1)?.pos ?? 0)) {
    membership.push({ pos: room.membershipPos, value: 'join' });
  }
  const lax = (v: string) => v === 'world_readable' || (v === 'shared' && !peeking);
  // Before the first change the room counts as `shared`.
  if (lax('shared') && visibility.every((c) => lax(visibilityOf(c.value)))) return { upTo, visible: [{ after: HISTORY_START, upTo }] };

  const visible: StreamRange[] = [];
  const add = (after: number, to: number, ok: boolean) => {
    if (!ok || to <= after) return;
    const last = visible.at(-1);
    if (last && last.upTo === after) last.upTo = to;
    else visible.push({ after, upTo: to });
  };
  const visibilityAt = new Map(visibility.map((c) => [c.pos, visibilityOf(c.value)]));
  const membershipAt = new Map(membership.map((c) => [c.pos, membershipOf(c.value)]));
  const boundaries = [...new Set([...visibilityAt.keys(), ...membershipAt.keys()])].sort((a, b) => a - b);
  let vis = 'shared';
  let member = 'leave';
  let prev = HISTORY_START;
  for (const pos of boundaries) {
    add(prev, pos - 1, allowed(vis, member, peeking));
    const newVis = visibilityAt.get(pos);
    const newMember = membershipAt.get(pos);
    const ownLeave = newMember === 'leave' && (member === 'join' || member === 'invite');
    const atVis = newVis === undefined ? vis : laxer(vis, newVis);
    const atMember = newMember === undefined ? member : moreJoined(member, newMember);
    add(pos - 1, pos, ownLeave || allowed(atVis, atMember, peeking));
    vis = newVis ?? vis;
    member = newMember ?? member;
    prev = pos;
  }
  add(prev, upTo, allowed(vis, member, peeking));
  return { upTo, visible };
}
