// The accumulator: one v2 /sync response for one device becomes stored facts in ONE
// transaction, together with the device's new `since`. Either all of it is stored and the
// homeserver's position advances, or none of it is and the same response is fetched again.
// After commit, the bus hears what changed (ids and positions only).
import type { Bus } from '../bus/bus.js';
import { type AccountDataRow, upsertAccountData } from '../store/account-data-table.js';
import { type Pool, withTransaction } from '../store/db.js';
import {
  advanceSince,
  type DeviceRef,
  insertToDevice,
  lockIngest,
  nextPosition,
  reservePositions,
  updateKeyCounts,
  upsertDeviceListChanges,
} from '../store/device-inbox-table.js';
import {
  eventForRedaction,
  findEvents,
  healGaps,
  insertEvents,
  insertTransactionIds,
  markInTimeline,
  storeRedacted,
} from '../store/events-table.js';
import { type ReceiptRow, upsertReceipts } from '../store/receipts-table.js';
import { applyStateChanges, currentStateOf, type RoomUpsert, roomVersions, stateKeyOf, upsertRooms } from '../store/room-state-table.js';
import {
  currentMemberships,
  type Membership,
  type MembershipUpdate,
  type RoomCountsUpdate,
  updateRoomCounts,
  upsertMemberships,
} from '../store/user-rooms-table.js';
import type { Logger } from '../telemetry/logger.js';
import { secondsSince } from '../telemetry/metrics.js';
import type { Telemetry } from '../telemetry/telemetry.js';
import type { RoomEvent, SyncResponse } from '../upstream/sync-response.js';
import { redactEvent, redactionTarget } from './redact.js';
import { planEvents, planStateChanges, type RoomBlock } from './room-events.js';

export interface IngestSummary {
  /** The highest position this response took (0 when it stored nothing positional). */
  pos: number;
  newEvents: number;
  rooms: number;
  toDevice: number;
}

export interface Accumulator {
  ingest(device: DeviceRef, response: SyncResponse): Promise<IngestSummary>;
}

type Published = () => void;

export function createAccumulator(deps: {
  pool: Pool;
  bus: Bus;
  logger: Logger;
  telemetry?: Pick<Telemetry, 'metrics' | 'tracer'>;
}): Accumulator {
  const store = async (device: DeviceRef, response: SyncResponse) => {
    const publish: Published[] = [];
    const started = performance.now();
    const summary = await withTransaction(deps.pool, (tx) => ingestInTransaction(tx, device, response, deps.bus, publish));
    const committed = performance.now();
    for (const p of publish) p();
    deps.telemetry?.metrics.ingestDuration.observe((committed - started) / 1000);
    deps.telemetry?.metrics.busLag.observe(secondsSince(committed));
    return summary;
  };
  const tracer = deps.telemetry?.tracer;
  return {
    ingest(device, response) {
      if (!tracer?.enabled) return store(device, response);
      return tracer.run('ingest', { user_id: device.userId, device_id: device.deviceId }, async (span) => {
        const summary = await store(device, response);
        span.setAttributes({ rooms: summary.rooms, new_events: summary.newEvents, to_device: summary.toDevice, pos: summary.pos });
        return summary;
      });
    },
  };
}

/**
 * Rooms in the order their latest events happened: a response lists rooms in no particular
 * order, and positions (hence recency order) are handed out as rooms are stored.
 */
function roomBlocks(response: SyncResponse): RoomBlock[] {
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

const membershipOf = (event: RoomEvent): Membership | undefined => {
  const m = event.content.membership;
  return m === 'join' || m === 'invite' || m === 'knock' || m === 'leave' || m === 'ban' ? m : undefined;
};

async function ingestInTransaction(
  tx: Parameters<Parameters<typeof withTransaction>[1]>[0],
  device: DeviceRef,
  response: SyncResponse,
  bus: Bus,
  publish: Published[],
): Promise<IngestSummary> {
  const blocks = roomBlocks(response);
  const roomIds = blocks.map((b) => b.roomId);
  const allIds: string[] = [];
  const followers: string[] = [];
  for (const { room } of blocks) {
    for (const e of room.state) allIds.push(e.event_id);
    const timeline = room.timeline.events;
    for (let i = 0; i < timeline.length; i++) {
      const id = (timeline[i] as RoomEvent).event_id;
      allIds.push(id);
      if (i > 0) followers.push(id);
    }
  }
  // Events: dedup against the store, insert the new ones in the homeserver's order; current
  // state is read before the events are written, which do not touch it. One after the other:
  // pg deprecates overlapping queries on one client (pg 9 will refuse them).
  await lockIngest(tx);
  const knownBefore = await findEvents(tx, allIds);
  const current = await currentStateOf(tx, roomIds);
  const plan = planEvents(blocks, knownBefore, response.next_batch);
  // One position for the state blocks (before every timeline), then one per new event.
  const needsStatePos = plan.inserts.length > 0 || blocks.some((b) => b.room.state.length);
  const stateBlockPos = needsStatePos ? await reservePositions(tx, 1 + plan.inserts.length) : 0;
  const inserted = await insertEvents(tx, plan.inserts, stateBlockPos + 1);
  const nidOf = (id: string) => inserted.get(id) ?? knownBefore.get(id)?.nid;
  // Every event after the first of a chunk follows its predecessor directly: no gap before it.
  await healGaps(tx, followers);
  const promoted = plan.promote.map((p) => nidOf(p.eventId) as number);
  await markInTimeline(
    tx,
    promoted,
    new Map(plan.promote.filter((p) => p.prevBatch).map((p) => [nidOf(p.eventId) as number, p.prevBatch as string])),
  );
  await insertTransactionIds(
    tx,
    plan.txnIds.map((t) => ({ ...t, ...device })),
  );

  // Rooms and their current state.
  const newTimelineNids = new Set(plan.inserts.filter((e) => e.inTimeline).map((e) => inserted.get(e.eventId) as number));
  const stateChanges = planStateChanges(blocks, knownBefore, nidOf, current, stateKeyOf, newTimelineNids).map((c) => ({
    ...c,
    pos: c.atEvent ? c.eventNid : stateBlockPos,
  }));
  const statePosByRoom = new Map<string, number>();
  for (const c of stateChanges) statePosByRoom.set(c.roomId, Math.max(statePosByRoom.get(c.roomId) ?? 0, c.pos));
  const roomRows = blocks.map(({ roomId, room }) =>
    roomUpsert(
      roomId,
      room,
      (e) => (newTimelineNids.has(nidOf(e.event_id) as number) ? nidOf(e.event_id) : undefined),
      statePosByRoom.get(roomId) ?? 0,
    ),
  );
  await upsertRooms(tx, roomRows);
  await applyStateChanges(tx, stateChanges);
  await applyRedactions(tx, blocks, newTimelineNids, nidOf);

  // Everything else of this response takes one position after all its events.
  const pos = await nextPosition(tx);
  const membershipChanged = await storeMemberships(tx, device.userId, response, blocks, nidOf, pos);
  const countsChanged = await storeRoomCounts(tx, device.userId, response, pos);
  const accountData = accountDataRows(device.userId, response, pos);
  await upsertAccountData(tx, accountData);
  const receipts = receiptRows(response, pos);
  await upsertReceipts(tx, receipts);
  const toDevicePos = await insertToDevice(
    tx,
    device,
    response.to_device.map((m) => JSON.stringify(m)),
  );
  const lists = response.device_lists;
  await upsertDeviceListChanges(tx, device, lists?.changed ?? [], lists?.left ?? [], pos);
  const keys = await updateKeyCounts(
    tx,
    device,
    response.device_one_time_keys_count && JSON.stringify(response.device_one_time_keys_count),
    response.device_unused_fallback_key_types && JSON.stringify(response.device_unused_fallback_key_types),
    pos,
  );
  await advanceSince(tx, device, response.next_batch);

  // After commit: tell the serving side, room by room and user by user.
  blocks.forEach(({ roomId, room }, i) => {
    const row = roomRows[i] as RoomUpsert;
    let newEvents = 0;
    for (const e of room.timeline.events) if (newTimelineNids.has(nidOf(e.event_id) as number)) newEvents++;
    const statePos = statePosByRoom.get(roomId);
    if (newEvents || statePos) {
      const bump = row.bumpNid ? { nid: row.bumpNid, ts: row.bumpTs } : undefined;
      publish.push(() => bus.publish('room.changed', { roomId, pos, newEvents, statePos, latestNid: row.latestNid, bump }));
    }
    const typing = room.ephemeral.find((e) => e.type === 'm.typing');
    if (typing && Array.isArray(typing.content.user_ids)) {
      const userIds = typing.content.user_ids.filter((u): u is string => typeof u === 'string');
      publish.push(() => bus.publish('room.typing', { roomId, userIds }));
    }
  });
  for (const roomId of new Set(receipts.map((r) => r.roomId))) publish.push(() => bus.publish('room.receipts', { roomId, pos }));
  const userRooms = new Set([...membershipChanged, ...countsChanged, ...accountData.filter((a) => a.roomId).map((a) => a.roomId)]);
  if (userRooms.size) publish.push(() => bus.publish('user.rooms_changed', { userId: device.userId, roomIds: [...userRooms], pos }));
  const globalTypes = accountData.filter((a) => !a.roomId).map((a) => a.type);
  if (globalTypes.length) publish.push(() => bus.publish('user.account_data', { userId: device.userId, types: globalTypes, pos }));
  const listsChanged = Boolean(lists && (lists.changed.length || lists.left.length));
  if (toDevicePos || listsChanged || keys) {
    publish.push(() =>
      bus.publish('device.data', {
        ...device,
        pos: Math.max(pos, toDevicePos ?? 0),
        toDevice: response.to_device.length,
        deviceLists: listsChanged,
        keys,
      }),
    );
  }
  const maxPos = Math.max(pos, toDevicePos ?? 0);
  // First, so subscribers reading the store for the messages below may read up to maxPos.
  publish.unshift(() => bus.publish('stream.advanced', { pos: maxPos }));
  return { pos: maxPos, newEvents: inserted.size, rooms: blocks.length, toDevice: response.to_device.length };
}

/** MSC4186's fixed bump types: what makes a room jump up the list (not reactions, edits of state, ...). */
export const BUMP_EVENT_TYPES = new Set([
  'm.room.create',
  'm.room.message',
  'm.room.encrypted',
  'm.sticker',
  'm.call.invite',
  'm.poll.start',
  'm.beacon_info',
]);

function roomUpsert(roomId: string, room: RoomBlock['room'], newNid: (e: RoomEvent) => number | undefined, statePos: number): RoomUpsert {
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

async function applyRedactions(
  tx: Parameters<typeof eventForRedaction>[0],
  blocks: RoomBlock[],
  newTimelineNids: Set<number>,
  nidOf: (id: string) => number | undefined,
) {
  const redactions = blocks.flatMap(({ roomId, room }) =>
    room.timeline.events
      .filter((e) => e.type === 'm.room.redaction' && newTimelineNids.has(nidOf(e.event_id) as number))
      .map((redaction) => ({ roomId, redaction })),
  );
  if (redactions.length === 0) return;
  const versions = await roomVersions(tx, [...new Set(redactions.map((r) => r.roomId))]);
  for (const { roomId, redaction } of redactions) {
    const targetId = redactionTarget(redaction);
    const target = targetId ? await eventForRedaction(tx, targetId) : undefined;
    // A redaction only applies within its own room; one for an event we never saw is moot.
    if (!target || target.redacted || target.roomId !== roomId) continue;
    const redacted = redactEvent(JSON.parse(target.json), versions.get(roomId) ?? '1', redaction);
    await storeRedacted(tx, target.nid, JSON.stringify(redacted));
  }
}

/** The polling user's own memberships; returns the rooms whose membership changed. */
async function storeMemberships(
  tx: Parameters<typeof currentMemberships>[0],
  userId: string,
  response: SyncResponse,
  blocks: RoomBlock[],
  nidOf: (id: string) => number | undefined,
  pos: number,
): Promise<string[]> {
  const { join, leave, invite, knock } = response.rooms;
  const ids = [...Object.keys(join), ...Object.keys(leave), ...Object.keys(invite), ...Object.keys(knock)];
  if (ids.length === 0) return [];
  const before = await currentMemberships(tx, userId, ids);
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
  for (const [roomId, room] of Object.entries(invite)) {
    if (before.get(roomId) !== 'invite')
      updates.push({ userId, roomId, membership: 'invite', pos, inviteState: JSON.stringify(room.invite_state), kicked: false });
  }
  for (const [roomId, room] of Object.entries(knock)) {
    if (before.get(roomId) !== 'knock')
      updates.push({ userId, roomId, membership: 'knock', pos, inviteState: JSON.stringify(room.knock_state), kicked: false });
  }
  await upsertMemberships(tx, updates);
  return updates.map((u) => u.roomId);
}

async function storeRoomCounts(tx: Parameters<typeof updateRoomCounts>[0], userId: string, response: SyncResponse, pos: number) {
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
  await updateRoomCounts(tx, updates);
  return updates.map((u) => u.roomId);
}

function accountDataRows(userId: string, response: SyncResponse, pos: number): AccountDataRow[] {
  const rows: AccountDataRow[] = response.account_data.map((e) => ({ userId, roomId: '', type: e.type, json: JSON.stringify(e), pos }));
  for (const [roomId, room] of Object.entries(response.rooms.join)) {
    for (const e of room.account_data) rows.push({ userId, roomId, type: e.type, json: JSON.stringify(e), pos });
  }
  return rows;
}

/** m.receipt content: { eventId: { receiptType: { userId: { ts, thread_id? } } } } */
function receiptRows(response: SyncResponse, pos: number): ReceiptRow[] {
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
