// Repeats stored together. When a message lands in a room shared by 1,000 users, 1,000 pollers
// bring it; the first copy stores it, the other 999 only advance their device's `since` and
// store the user's unread counts, receipts and key counts. One by one, each of those took its
// own transaction of about eight statements (lock, position, memberships, counts, keys, since,
// BEGIN/COMMIT), one after the other, and the pollers fell behind the messages. Here the
// repeats queued meanwhile share one transaction with one statement of each kind for all of
// them; what each stores, and the bus messages each sends, are what its own ingest would have.
import type { Bus } from '../bus/bus.js';
import type { Queryable } from '../store/db.js';
import {
  advanceSinceOf,
  type DeviceRef,
  deviceKey,
  lockIngest,
  reservePositions,
  type SinceMoved,
  updateKeyCountsOf,
} from '../store/device-inbox-table.js';
import type { KnownEvent } from '../store/events-table.js';
import { upsertReceipts } from '../store/receipts-table.js';
import { upsertRooms } from '../store/room-state-table.js';
import { currentMembershipsOf, type Membership, updateRoomCounts, upsertMemberships } from '../store/user-rooms-table.js';
import type { SyncResponse } from '../upstream/sync-response.js';
import type { PollerViews } from './poller-views.js';
import {
  anchorProofs,
  changesRoom,
  gapFollowers,
  membershipUpdates,
  mergeByKey,
  receiptRows,
  roomBlocks,
  roomCountUpdates,
  roomUpsert,
  typingOf,
} from './response-rows.js';
import { planEvents, type RoomBlock } from './room-events.js';

/** A repeat that the plain path can store: every event stored and in the timeline, nothing to place or heal. */
export interface PlainRepeat {
  device: DeviceRef;
  response: SyncResponse;
  /** The `since` it was fetched from (see IngestOptions.since). */
  since: string | null | undefined;
  blocks: RoomBlock[];
  /** Where each room's chunk left the poller (recorded in its view once committed). */
  ends: Map<string, number | 'tip'>;
  nidOf: (eventId: string) => number | undefined;
}

/**
 * `response` as a plain repeat, or undefined when it needs the full ingest: an event not
 * remembered as stored (`known` holds what is), or out of the timeline (it may be promoted), a
 * state block (it may change current state), a transaction id to keep, a gap mark to heal.
 */
export function plainRepeat(
  device: DeviceRef,
  response: SyncResponse,
  since: string | null | undefined,
  known: Map<string, KnownEvent>,
  views: PollerViews,
): PlainRepeat | undefined {
  const blocks = roomBlocks(response);
  for (const { room } of blocks) {
    if (room.state.length || !room.timeline.events.every((e) => known.get(e.event_id)?.inTimeline)) return undefined;
  }
  const plan = planEvents(blocks, known, response.next_batch);
  if (plan.inserts.length || plan.promote.length || plan.txnIds.length || plan.gapsAfter.length) return undefined;
  if (gapFollowers(blocks, known, new Set()).length || anchorProofs(views, device, blocks, known).length) return undefined;
  return { device, response, since, blocks, ends: plan.ends, nidOf: (id) => known.get(id)?.nid };
}

export interface RepeatsOutcome {
  /** Per repeat, in order: the position it took, or the SinceMoved it gets (nothing of it stored). */
  results: ({ pos: number } | SinceMoved)[];
  /** Bus messages, to send in the transaction's order. */
  publish: (() => void)[];
  /** Memory to update once committed. */
  remember: (() => void)[];
}

/**
 * Stores plain repeats of distinct devices in `tx`, in their order: each device's `since` first
 * (those whose stored `since` moved are left out whole), then one position each, and their
 * memberships, unread counts, receipts and key counts, one statement per kind for all of them.
 */
export async function storeRepeats(tx: Queryable, bus: Bus, views: PollerViews, repeats: PlainRepeat[]): Promise<RepeatsOutcome> {
  await lockIngest(tx, { keyedOnly: true });
  const moved = await advanceSinceOf(
    tx,
    repeats.map((r) => ({ ...r.device, since: r.response.next_batch, from: r.since })),
  );
  const stored = repeats.filter((r) => !moved.has(deviceKey(r.device)));
  const first = stored.length ? await reservePositions(tx, stored.length) : 0;
  const posOf = new Map(stored.map((r, i) => [r, first + i]));
  const membershipChanged = await storeMemberships(tx, stored, posOf);
  const counts = stored.map((r) => roomCountUpdates(r.device.userId, r.response, posOf.get(r) as number));
  await updateRoomCounts(
    tx,
    mergeByKey(counts.flat(), (c) => `${c.userId}\u0000${c.roomId}`),
  );
  const rooms = stored.flatMap((r) => r.blocks.map(({ roomId, room }) => roomUpsert(roomId, room, () => undefined, 0)));
  await upsertRooms(
    tx,
    mergeByKey(rooms.filter(changesRoom), (r) => r.roomId),
  );
  const receipts = stored.map((r) => receiptRows(r.response, posOf.get(r) as number));
  await upsertReceipts(tx, receipts.flat());
  const keys = await updateKeyCountsOf(
    tx,
    stored.map((r) => ({
      ...r.device,
      otkCounts: r.response.device_one_time_keys_count && JSON.stringify(r.response.device_one_time_keys_count),
      fallbackKeyTypes: r.response.device_unused_fallback_key_types && JSON.stringify(r.response.device_unused_fallback_key_types),
      pos: posOf.get(r) as number,
    })),
  );

  const publish: (() => void)[] = [];
  if (stored.length) publish.push(() => bus.publish('stream.advanced', { pos: first + stored.length - 1 }));
  stored.forEach((r, i) => {
    const pos = first + i;
    for (const { roomId, room } of r.blocks) {
      const userIds = typingOf(room);
      if (userIds) publish.push(() => bus.publish('room.typing', { roomId, userIds }));
    }
    for (const roomId of new Set(receipts[i]?.map((row) => row.roomId))) publish.push(() => bus.publish('room.receipts', { roomId, pos }));
    const userRooms = new Set([...(membershipChanged.get(r) ?? []), ...(counts[i] ?? []).map((c) => c.roomId)]);
    const { userId } = r.device;
    if (userRooms.size) publish.push(() => bus.publish('user.rooms_changed', { userId, roomIds: [...userRooms], pos }));
    if (keys.has(deviceKey(r.device)))
      publish.push(() => bus.publish('device.data', { ...r.device, pos, toDevice: 0, deviceLists: false, keys: true }));
  });
  const remember = stored.map((r) => () => {
    const lastNid = new Map(r.blocks.map(({ roomId, room }) => [roomId, r.nidOf(room.timeline.events.at(-1)?.event_id ?? '') ?? 0]));
    views.record(
      r.device,
      r.ends,
      () => 0,
      (roomId) => lastNid.get(roomId) ?? 0,
    );
  });
  const results = repeats.map((r) => moved.get(deviceKey(r.device)) ?? { pos: posOf.get(r) as number });
  return { results, publish, remember };
}

/** The users' own memberships of the repeats' rooms (one read for all); per repeat, the rooms whose membership changed. */
async function storeMemberships(tx: Queryable, repeats: PlainRepeat[], posOf: Map<PlainRepeat, number>) {
  const stored = await currentMembershipsOf(
    tx,
    repeats.flatMap((r) => r.blocks.map(({ roomId }) => ({ userId: r.device.userId, roomId }))),
  );
  const changed = new Map<PlainRepeat, string[]>();
  const updates = repeats.flatMap((r) => {
    const { userId } = r.device;
    const before = stored.get(userId) ?? new Map<string, Membership>();
    const mine = membershipUpdates(userId, r.response, r.blocks, r.nidOf, new Map(), posOf.get(r) as number, before);
    // A later repeat of the same user (another device) sees this one's, as one after the other would.
    for (const u of mine) before.set(u.roomId, u.membership);
    stored.set(userId, before);
    changed.set(
      r,
      mine.map((u) => u.roomId),
    );
    return mine;
  });
  await upsertMemberships(
    tx,
    mergeByKey(updates, (u) => `${u.userId}\u0000${u.roomId}`),
  );
  return changed;
}
