// What a v2 response's rooms mean for the stored rows, without I/O: shared by the ingest of one
// response (accumulator.ts) and that of several devices' repeats together (repeats.ts), so both
// store and announce exactly the same things.
import type { DeviceRef } from '../store/device-inbox-table.js';
import type { KnownEvent } from '../store/events-table.js';
import type { ReceiptRow } from '../store/receipts-table.js';
import type { RoomUpsert } from '../store/room-state-table.js';
import type { Membership, MembershipUpdate, RoomCountsUpdate } from '../store/user-rooms-table.js';
import type { RoomEvent, SyncResponse } from '../upstream/sync-response.js';
import type { PollerViews } from './poller-views.js';
import type { RoomBlock } from './room-events.js';

/**
 * Rooms in the order their latest events happened: a response lists rooms in no particular
 * order, and positions (hence recency order) are handed out as rooms are stored.
 */
export function roomBlocks(response: SyncResponse): RoomBlock[] {
  const keyed: { block: RoomBlock; ts: number }[] = [];
  for (const rooms of [response.rooms.join, response.rooms.leave]) {
    for (const roomId in rooms) {
      const room = rooms[roomId] as RoomBlock['room'];
      const events = room.timeline.events;
      keyed.push({ block: { roomId, room }, ts: events.length ? (events[events.length - 1] as RoomEvent).origin_server_ts : 0 });
    }
  }
  return keyed.sort((a, b) => a.ts - b.ts).map((k) => k.block);
}

export function* eventIdsOf(response: SyncResponse) {
  for (const rooms of [response.rooms.join, response.rooms.leave]) {
    for (const roomId in rooms) {
      const room = rooms[roomId] as RoomBlock['room'];
      for (const e of room.state) yield e.event_id;
      for (const e of room.timeline.events) yield e.event_id;
    }
  }
}

export const membershipOf = (event: RoomEvent): Membership | undefined => {
  const m = event.content.membership;
  return m === 'join' || m === 'invite' || m === 'knock' || m === 'leave' || m === 'ban' ? m : undefined;
};

/**
 * Rooms whose chunk starts with an event already in the stored timeline, for a poller that
 * brought an event there before: if that last event is the stored one just before, the gap
 * mark on the first one (if any) is disproved.
 */
export function anchorProofs(views: PollerViews, device: DeviceRef, blocks: RoomBlock[], known: Map<string, KnownEvent>) {
  const proofs: { eventId: string; anchor: number }[] = [];
  for (const { roomId, room } of blocks) {
    const first = room.timeline.events[0];
    const anchor = views.last(device, roomId);
    // (An event remembered without a gap mark needs no healing.)
    const stored = first && known.get(first.event_id);
    if (stored && anchor !== undefined && !room.timeline.limited && stored.inTimeline && stored.gapBefore !== false)
      proofs.push({ eventId: first.event_id, anchor });
  }
  return proofs;
}

export const changesRoom = (r: RoomUpsert) =>
  r.latestNid > 0 || r.statePos > 0 || r.roomVersion !== undefined || r.joined !== undefined || r.invited !== undefined;

/** MSC4186's fixed bump types: what makes a room jump up the list (not reactions, edits of state, ...). */
const BUMP_EVENT_TYPES = new Set([
  'm.room.create',
  'm.room.message',
  'm.room.encrypted',
  'm.sticker',
  'm.call.invite',
  'm.poll.start',
  'm.beacon_info',
]);

export function roomUpsert(
  roomId: string,
  room: RoomBlock['room'],
  newNid: (e: RoomEvent) => number | undefined,
  statePos: number,
): RoomUpsert {
  const isCreate = (e: RoomEvent) => e.type === 'm.room.create' && e.state_key === '';
  const create = room.state.find(isCreate) ?? room.timeline.events.find(isCreate);
  let latestNid = 0;
  let bumpNid = 0;
  let bumpTs = 0;
  for (const e of room.timeline.events) {
    const nid = newNid(e);
    if (nid === undefined) continue;
    latestNid = Math.max(latestNid, nid);
    if (BUMP_EVENT_TYPES.has(e.type) && nid > bumpNid) {
      bumpNid = nid;
      bumpTs = e.origin_server_ts;
    }
  }
  return {
    roomId,
    roomVersion: create ? String(create.content.room_version ?? '1') : undefined,
    joined: room.summary?.['m.joined_member_count'],
    invited: room.summary?.['m.invited_member_count'],
    latestNid,
    bumpNid,
    bumpTs,
    statePos,
  };
}

/** m.receipt content: { eventId: { receiptType: { userId: { ts, thread_id? } } } } */
export function receiptRows(response: SyncResponse, pos: number): ReceiptRow[] {
  const rows: ReceiptRow[] = [];
  for (const [roomId, room] of Object.entries(response.rooms.join)) {
    for (const edu of room.ephemeral) {
      if (edu.type !== 'm.receipt') continue;
      for (const [eventId, byType] of Object.entries(edu.content)) {
        if (typeof byType !== 'object' || byType === null) continue;
        for (const [receiptType, byUser] of Object.entries(byType as Record<string, unknown>)) {
          if (typeof byUser !== 'object' || byUser === null) continue;
          for (const [userId, data] of Object.entries(byUser as Record<string, unknown>)) {
            const d = (typeof data === 'object' && data !== null ? data : {}) as Record<string, unknown>;
            const threadId = typeof d.thread_id === 'string' ? d.thread_id : '';
            rows.push({ roomId, receiptType, userId, threadId, eventId, data: JSON.stringify(d), pos });
          }
        }
      }
    }
  }
  return rows;
}

/** Every room of a response that concerns the user's own membership. */
export function membershipRoomIds(response: SyncResponse): string[] {
  const { join, leave, invite, knock } = response.rooms;
  return [...Object.keys(join), ...Object.keys(leave), ...Object.keys(invite), ...Object.keys(knock)];
}

/** The polling user's own membership changes a response makes, against the stored ones (`before`). */
export function membershipUpdates(
  userId: string,
  response: SyncResponse,
  blocks: RoomBlock[],
  nidOf: (id: string) => number | undefined,
  /** Positions of the invites and knocks. */
  arrivalPos: Map<string, number>,
  pos: number,
  before: Map<string, Membership>,
): MembershipUpdate[] {
  const { leave, invite, knock } = response.rooms;
  const updates: MembershipUpdate[] = [];
  const isOwn = (e: RoomEvent) => e.type === 'm.room.member' && e.state_key === userId;
  const ownMemberEvent = (block: RoomBlock) => block.room.timeline.events.findLast(isOwn) ?? block.room.state.findLast(isOwn);

  for (const block of blocks) {
    const isLeave = block.roomId in leave;
    const own = ownMemberEvent(block);
    const membership: Membership = isLeave ? (own && membershipOf(own) === 'ban' ? 'ban' : 'leave') : 'join';
    if (before.get(block.roomId) === membership) continue;
    // Leaves take effect at the leave event, so nothing after it is ever served.
    const at = own && membershipOf(own) === membership ? nidOf(own.event_id) : undefined;
    const kicked = membership === 'leave' && own !== undefined && own.sender !== userId;
    updates.push({ userId, roomId: block.roomId, membership, pos: at ?? pos, inviteState: null, kicked });
  }
  // Invites and knocks keep the stripped state they came with.
  const pending = [
    ...Object.entries(invite).map(([roomId, room]) => ({ roomId, membership: 'invite' as const, state: room.invite_state })),
    ...Object.entries(knock).map(([roomId, room]) => ({ roomId, membership: 'knock' as const, state: room.knock_state })),
  ];
  for (const { roomId, membership, state } of pending) {
    if (before.get(roomId) !== membership)
      updates.push({ userId, roomId, membership, pos: arrivalPos.get(roomId) ?? pos, inviteState: JSON.stringify(state), kicked: false });
  }
  return updates;
}

/** The user's unread counts and heroes a response brings, room by room. */
export function roomCountUpdates(userId: string, response: SyncResponse, pos: number): RoomCountsUpdate[] {
  const updates: RoomCountsUpdate[] = [];
  for (const [roomId, room] of Object.entries(response.rooms.join)) {
    const unread = room.unread_notifications;
    const heroes = room.summary?.['m.heroes'];
    if (!unread && !heroes && !room.unread_thread_notifications) continue;
    updates.push({
      userId,
      roomId,
      notificationCount: unread?.notification_count,
      highlightCount: unread?.highlight_count,
      threadCounts: room.unread_thread_notifications && JSON.stringify(room.unread_thread_notifications),
      heroes: heroes && JSON.stringify(heroes),
      pos,
    });
  }
  return updates;
}

/**
 * Stored events of a chunk that directly follow their predecessor in it, while that predecessor
 * is in the stored timeline: any gap mark on them is disproved. (Only stored events that may
 * carry a mark: new ones are inserted with the right one.)
 */
export function gapFollowers(blocks: RoomBlock[], knownBefore: Map<string, KnownEvent>, inTimeline: Set<string>): string[] {
  const mayHaveGap = (id: string) => knownBefore.has(id) && knownBefore.get(id)?.gapBefore !== false;
  return blocks.flatMap(({ room }) =>
    room.timeline.events
      .filter((e, i) => {
        const before = room.timeline.events[i - 1]?.event_id;
        return mayHaveGap(e.event_id) && before !== undefined && (inTimeline.has(before) || knownBefore.get(before)?.inTimeline === true);
      })
      .map((e) => e.event_id),
  );
}

/** Who a room's m.typing says is typing (undefined: the room has no typing notice). */
export function typingOf(room: RoomBlock['room']): string[] | undefined {
  const typing = room.ephemeral.find((e) => e.type === 'm.typing');
  if (!typing || !Array.isArray(typing.content.user_ids)) return undefined;
  return typing.content.user_ids.filter((u): u is string => typeof u === 'string');
}

/**
 * Rows for one batched statement that may name a key only once: rows of one key merged in
 * order, each defined value replacing the one before (as one statement after the other would
 * store them, where absent values keep what is stored).
 */
export function mergeByKey<R extends object>(rows: R[], key: (row: R) => string): R[] {
  const merged = new Map<string, R>();
  for (const row of rows) {
    const k = key(row);
    const prev = merged.get(k);
    if (!prev) {
      merged.set(k, row);
      continue;
    }
    const next = { ...prev };
    for (const [field, value] of Object.entries(row)) if (value !== undefined) Object.assign(next, { [field]: value });
    merged.set(k, next);
  }
  return [...merged.values()];
}
