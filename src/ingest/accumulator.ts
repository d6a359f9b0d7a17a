// The accumulator: one v2 /sync response for one device becomes stored facts in ONE
// transaction, together with the device's new `since`. Either all of it is stored and the
// homeserver's position advances, or none of it is and the same response is fetched again.
// After commit, the bus hears what changed (ids and positions only).
import type { Bus, Envelope } from '../bus/bus.js';
import { type AccountDataRow, upsertAccountData } from '../store/account-data-table.js';
import { isStatementError, type Pool, serialTransactions, type withTransaction } from '../store/db.js';
import {
  advanceSince,
  type DeviceRef,
  deviceKey,
  insertToDevice,
  lockIngest,
  nextPosition,
  reservePositions,
  SinceMoved,
  updateKeyCounts,
  upsertDeviceListChanges,
} from '../store/device-inbox-table.js';
import {
  eventsForRedaction,
  findEvents,
  healGaps,
  healGapsAfterAnchors,
  insertEvents,
  insertTransactionIds,
  type KnownEvent,
  markGapsAfter,
  markInTimeline,
  storeRedacted,
} from '../store/events-table.js';
import type { PlannerStatistics } from '../store/planner-statistics.js';
import { upsertReceipts } from '../store/receipts-table.js';
import {
  applyStateChanges,
  currentStateOf,
  type RoomUpsert,
  roomTips,
  roomVersions,
  stateKeyOf,
  upsertRooms,
} from '../store/room-state-table.js';
import { currentMemberships, forgetRoom, updateRoomCounts, upsertMemberships } from '../store/user-rooms-table.js';
import type { Logger } from '../telemetry/logger.js';
import { secondsSince } from '../telemetry/metrics.js';
import type { Telemetry } from '../telemetry/telemetry.js';
import type { RoomEvent, SyncResponse } from '../upstream/sync-response.js';
import { type HistoryChunk, type HistoryOutcome, storeHistory } from './backfill.js';
import { createIngestQueue, onlyRepeats } from './ingest-queue.js';
import { KnownEvents } from './known-events.js';
import { interleaveArrivals, membershipArrivals } from './membership-arrivals.js';
import { PollerViews } from './poller-views.js';
import { redactEvent, redactionTarget } from './redact.js';
import { type PlainRepeat, plainRepeat, storeRepeats } from './repeats.js';
import {
  anchorProofs,
  changesRoom,
  eventIdsOf,
  gapFollowers,
  membershipRoomIds,
  membershipUpdates,
  receiptRows,
  roomBlocks,
  roomCountUpdates,
  roomUpsert,
  typingOf,
} from './response-rows.js';
import { planEvents, planStateChanges, type RoomBlock } from './room-events.js';

export interface IngestSummary {
  /** The highest position this response took (0 when it stored nothing positional). */
  pos: number;
  newEvents: number;
  rooms: number;
  toDevice: number;
}

export interface IngestOptions {
  /** The device's initial sync (no `since`). */
  initial?: boolean;
  /** The response leaves rooms out by filter (a to-device-only first sync): the device's stream has a gap. */
  roomsOmitted?: boolean;
  /**
   * The `since` the response was fetched from (null: none). Given, the response is stored only
   * if the device's stored `since` is still that (else SinceMoved): the arbiter between pollers.
   */
  since?: string | null;
}

export interface Accumulator {
  ingest(device: DeviceRef, response: SyncResponse, opts?: IngestOptions): Promise<IngestSummary>;
  /** The device's poller skipped a response it could not use: whatever it brings next may follow a hole. */
  skipped(device: DeviceRef): void;
  /**
   * The user forgot a room upstream: its row goes (if the user is out of it), as an ingest
   * would change it, under its own position, announced once committed. Returns whether it went.
   */
  forget(userId: string, roomId: string): Promise<boolean>;
  /** Stores history fetched before a room's stored timeline (see backfill.ts), in turn with ingests. */
  storeHistory(device: DeviceRef, chunk: HistoryChunk): Promise<HistoryOutcome>;
}

type Published = () => void;
type Transaction = Parameters<Parameters<typeof withTransaction>[1]>[0];

export interface AccumulatorOptions {
  /**
   * A response with more events than this is stored in several transactions of about this
   * many events each (whole rooms), so a big initial sync holds other users' live events for
   * one such transaction at a time, not for all of it. The device's `since`, its to-device
   * messages and everything not about rooms go in the last one. Default 1,000: about 50 ms of
   * database work a part on the development machine (2,000 doubled the wait of a live event
   * queued behind one for a few percent less total time).
   */
  chunkEvents?: number;
  /** Events remembered as stored (for duplicates brought by many pollers). */
  knownEvents?: number;
  /**
   * Repeats stored together at most (see repeats.ts); news queued meanwhile waits for one such
   * transaction at most. Default 100: in the load bench (1,000 pollers bringing one message)
   * 25-100 cost the same per repeat and answered the long-polls sooner than 250 did, whose
   * transactions of up to 90 ms held the commits of the answers' positions behind their WAL.
   */
  repeatBatch?: number;
  /** Told how many events each response stored, to keep the planner's statistics in step. */
  statistics?: Pick<PlannerStatistics, 'stored'>;
}

export function createAccumulator(
  deps: {
    pool: Pool;
    bus: Bus;
    logger: Logger;
    telemetry?: Pick<Telemetry, 'metrics' | 'tracer'>;
  } & AccumulatorOptions,
): Accumulator {
  const chunkEvents = deps.chunkEvents ?? 1_000;
  const ctx: IngestContext = { bus: deps.bus, known: new KnownEvents(deps.knownEvents ?? 100_000), views: new PollerViews() };
  // Ingest transactions run one at a time (positions must commit in order, see stream-tracker),
  // queued here rather than on a database lock, so a waiting ingest holds no pool connection;
  // news before repeats of stored events (see ingest-queue.ts).
  const transactions = serialTransactions(deps.pool);
  // The transaction's bus messages are recorded as its publish steps run: a bus across processes
  // sends them inside the transaction, so the other processes hear of them on commit. After the
  // commit, still in turn, the memory is updated (the next ingest sees this one's events and
  // anchors) and the messages go out, in commit order.
  const transact = async <T>(work: (tx: Transaction, recorder: Bus, publish: Published[], remember: Published[]) => Promise<T>) => {
    const messages: Envelope[] = [];
    const recorder: Bus = { publish: (topic, message) => messages.push({ topic, message } as Envelope), subscribe: () => () => false };
    const publish: Published[] = [];
    const remember: Published[] = [];
    const started = performance.now();
    const result = await transactions.run(async (tx) => {
      const r = await work(tx, recorder, publish, remember);
      for (const p of publish) p();
      await deps.bus.sendInTransaction?.(tx, messages);
      return r;
    });
    const done = performance.now();
    for (const p of remember) p();
    if (deps.bus.deliverLocal) deps.bus.deliverLocal(messages);
    else for (const m of messages) deps.bus.publish(m.topic, m.message as never);
    deps.telemetry?.metrics.ingestDuration.observe((done - started) / 1000);
    deps.telemetry?.metrics.busLag.observe(secondsSince(done));
    return result;
  };
  // Events many pollers bring are recognised here, in memory, when a response's turn comes (so
  // also those that the responses queued before it stored), before any database work.
  const cachedOf = (response: SyncResponse) => {
    const cached = new Map<string, KnownEvent>();
    for (const id of eventIdsOf(response)) {
      const known = ctx.known.get(id);
      if (known) cached.set(id, known);
    }
    return cached;
  };
  const chunkInTurn = (device: DeviceRef, response: SyncResponse, last: boolean, initial: boolean, since: string | null | undefined) => {
    const cached = cachedOf(response);
    return transact((tx, recorder, publish, remember) =>
      ingestInTransaction(tx, { ...ctx, bus: recorder }, device, response, cached, { last, initial, since }, publish, remember),
    );
  };
  const storeBatch = async (batch: (PlainRepeat & { settle: Settle })[]): Promise<void> => {
    if (batch.length === 0) return;
    try {
      const { results } = await transact(async (tx, recorder, publish, remember) => {
        const outcome = await storeRepeats(tx, recorder, ctx.views, batch);
        publish.push(...outcome.publish);
        remember.push(...outcome.remember);
        return outcome;
      });
      batch.forEach((r, i) => {
        const result = results[i] as { pos: number } | SinceMoved;
        if (result instanceof SinceMoved) r.settle.reject(result);
        else r.settle.resolve({ pos: result.pos, newEvents: 0, rooms: r.blocks.length, toDevice: 0 });
      });
    } catch (err) {
      // Nothing of the batch is stored. A statement that failed for one repeat's own data must
      // not fail the others with it, as it did not when each had its own transaction: they are
      // stored again one at a time. A lost connection fails them all (their pollers retry).
      if (batch.length === 1 || !isStatementError(err)) for (const r of batch) r.settle.reject(err);
      else for (const r of batch) await storeBatch([r]);
    }
  };
  // Repeats taken from the queue together: runs of plain ones (one device each) are stored in one
  // transaction; any other goes through the full ingest on its own, in its place in the order.
  const storeQueuedRepeats = async (items: QueuedRepeat[]) => {
    let batch: (PlainRepeat & { settle: Settle })[] = [];
    const flush = async () => {
      await storeBatch(batch);
      batch = [];
    };
    for (const item of items) {
      // (A device's responses come one at a time; were one to come twice, the second waits for the first's commit.)
      if (batch.some((r) => deviceKey(r.device) === deviceKey(item.device))) await flush();
      const plain = plainRepeat(item.device, item.response, item.since, cachedOf(item.response), ctx.views);
      if (plain) {
        batch.push({ ...plain, settle: item.settle });
        continue;
      }
      await flush();
      await chunkInTurn(item.device, item.response, true, false, item.since).then(item.settle.resolve, item.settle.reject);
    }
    await flush();
  };
  const queue = createIngestQueue<QueuedRepeat>({
    onIdle: () => transactions.release(),
    repeats: storeQueuedRepeats,
    batch: deps.repeatBatch ?? 100,
  });
  const serially = <T>(fn: () => Promise<T>): Promise<T> => queue.run(fn);
  const store = async (device: DeviceRef, response: SyncResponse, opts: IngestOptions | undefined) => {
    const chunks = splitResponse(response, chunkEvents);
    // A response may become a repeat while it waits: the copies that 1,000 pollers bring at once
    // are all news until the first of them is stored. Checked again when its turn comes, it
    // then goes behind the queued news, with the repeats.
    const mayRepeat = chunks.length === 1 && !opts?.initial && !opts?.roomsOmitted;
    const repeats = () => mayRepeat && onlyRepeats(response, ctx.known, device.userId);
    const asRepeat = () =>
      new Promise<IngestSummary>((resolve, reject) => queue.repeat({ device, response, since: opts?.since, settle: { resolve, reject } }));
    if (repeats()) return asRepeat();
    const total: IngestSummary = { pos: 0, newEvents: 0, rooms: 0, toDevice: 0 };
    for (let i = 0; i < chunks.length; i++) {
      const last = i === chunks.length - 1;
      const chunk = chunks[i] as SyncResponse;
      const summary = await serially(async () =>
        repeats() ? undefined : chunkInTurn(device, chunk, last, opts?.initial ?? false, opts?.since),
      );
      if (summary === undefined) return asRepeat();
      total.pos = Math.max(total.pos, summary.pos);
      total.newEvents += summary.newEvents;
      total.rooms += summary.rooms;
      total.toDevice += summary.toDevice;
    }
    if (opts?.roomsOmitted) ctx.views.blind(device);
    if (total.newEvents) deps.statistics?.stored(total.newEvents);
    return total;
  };
  const tracer = deps.telemetry?.tracer;
  return {
    ingest(device, response, opts) {
      if (!tracer?.enabled) return store(device, response, opts);
      return tracer.run('ingest', { user_id: device.userId, device_id: device.deviceId }, async (span) => {
        const summary = await store(device, response, opts);
        span.setAttributes({ rooms: summary.rooms, new_events: summary.newEvents, to_device: summary.toDevice, pos: summary.pos });
        return summary;
      });
    },
    skipped(device) {
      ctx.views.blind(device);
      deps.telemetry?.metrics.skippedResponses.inc();
    },
    forget(userId, roomId) {
      return serially(async () => {
        const pos = await transactions.run(async (tx) => {
          await lockIngest(tx);
          return (await forgetRoom(tx, userId, roomId)) ? nextPosition(tx) : undefined;
        });
        if (pos === undefined) return false;
        deps.bus.publish('stream.advanced', { pos });
        deps.bus.publish('user.rooms_changed', { userId, roomIds: [roomId], pos });
        return true;
      });
    },
    storeHistory(device, chunk) {
      return serially(async () => {
        const outcome = await transactions.run((tx) => storeHistory(tx, device, chunk));
        // Moved events have new positions: what the memory held of them (here, and in the
        // read side's copies of the room's timeline, state and visibility) is stale.
        if (outcome.stored) {
          for (const [id, known] of outcome.known) ctx.known.set(id, known);
          deps.bus.publish('room.rewritten', { roomIds: [chunk.roomId] });
        }
        return outcome;
      });
    },
  };
}

interface Settle {
  resolve: (summary: IngestSummary) => void;
  reject: (err: unknown) => void;
}

interface QueuedRepeat {
  device: DeviceRef;
  response: SyncResponse;
  since: string | null | undefined;
  settle: Settle;
}

interface IngestContext {
  bus: Bus;
  known: KnownEvents;
  views: PollerViews;
}

/**
 * Splits a response into parts of about `maxEvents` events (whole rooms, oldest rooms first so
 * positions keep following recency); all but the last carry only rooms, and the last carries
 * the rest of the response (invites, account data, to-device messages, device data).
 */
function splitResponse(response: SyncResponse, maxEvents: number): SyncResponse[] {
  const blocks = roomBlocks(response);
  const size = (b: RoomBlock) => b.room.state.length + b.room.timeline.events.length;
  if (blocks.reduce((n, b) => n + size(b), 0) <= maxEvents) return [response];
  const parts: RoomBlock[][] = [[]];
  let inPart = 0;
  for (const block of blocks) {
    if (inPart > 0 && inPart + size(block) > maxEvents) {
      parts.push([]);
      inPart = 0;
    }
    (parts[parts.length - 1] as RoomBlock[]).push(block);
    inPart += size(block);
  }
  const roomsOf = (part: RoomBlock[], kind: 'join' | 'leave') =>
    Object.fromEntries(part.filter((b) => b.roomId in response.rooms[kind]).map((b) => [b.roomId, b.room]));
  return parts.map((part, i) => {
    const rooms = { ...response.rooms, join: roomsOf(part, 'join'), leave: roomsOf(part, 'leave') };
    if (i === parts.length - 1) return { ...response, rooms };
    return {
      next_batch: response.next_batch,
      rooms: { join: rooms.join, leave: rooms.leave, invite: {}, knock: {} },
      account_data: [],
      to_device: [],
    } as SyncResponse;
  });
}

async function ingestInTransaction(
  tx: Transaction,
  ctx: IngestContext,
  device: DeviceRef,
  response: SyncResponse,
  cached: Map<string, KnownEvent>,
  { last, initial, since }: { last: boolean; initial: boolean; since?: string | null },
  publish: Published[],
  /** Memory to update once committed (what the next ingests recognise). */
  remember: Published[],
): Promise<IngestSummary> {
  const bus = ctx.bus;
  const blocks = roomBlocks(response);
  const uncached: string[] = [];
  for (const { room } of blocks) {
    for (const e of room.state) if (!cached.has(e.event_id)) uncached.push(e.event_id);
    const timeline = room.timeline.events;
    for (let i = 0; i < timeline.length; i++) {
      const id = (timeline[i] as RoomEvent).event_id;
      if (!cached.has(id)) uncached.push(id);
    }
  }
  // Events: dedup against the store (what the memory did not know), insert the new ones in the
  // homeserver's order. One query after the other: pg deprecates overlapping queries on one
  // client (pg 9 will refuse them). Every read here is by key (see lockIngest).
  await lockIngest(tx, { keyedOnly: true });
  const knownBefore = new Map([...cached, ...(await findEvents(tx, uncached))]);
  const isNew = (e: RoomEvent) => !knownBefore.has(e.event_id);
  // Where this poller stands in the rooms it brings new events for (and the rooms' tips).
  const placed = blocks.filter((b) => b.room.timeline.events.some((e) => !knownBefore.get(e.event_id)?.inTimeline)).map((b) => b.roomId);
  const stored = await roomTips(tx, placed);
  // A room not stored yet has no tip: anything continues it.
  const tips = new Map(placed.map((roomId) => [roomId, stored.get(roomId) ?? { nid: 0, ts: 0 }]));
  const placements = ctx.views.placements(device, tips, initial);
  const plan = planEvents(blocks, knownBefore, response.next_batch, placements);
  // Current state is read before the events are written, which do not touch it; only for rooms
  // whose state this response may change.
  const current = await currentStateOf(
    tx,
    blocks
      .filter((b) => b.room.state.length || b.room.timeline.events.some((e) => e.state_key !== undefined && isNew(e)))
      .map((b) => b.roomId),
  );
  // One position for the state blocks (before every timeline), then one per new event and one
  // per invite or knock, these placed among the events by time (membership-arrivals.ts).
  const arrivals = membershipArrivals(response, device.userId);
  const needsStatePos = plan.inserts.length > 0 || arrivals.length > 0 || blocks.some((b) => b.room.state.length);
  const stateBlockPos = needsStatePos ? await reservePositions(tx, 1 + plan.inserts.length + arrivals.length) : 0;
  const { eventNids, arrivalPos } = interleaveArrivals(plan.inserts, arrivals, stateBlockPos + 1);
  await markGapsAfter(tx, plan.gapsAfter);
  const inserted = await insertEvents(tx, plan.inserts, eventNids);
  const nidOf = (id: string) => inserted.get(id) ?? knownBefore.get(id)?.nid;
  // Every event after the first of a chunk follows its predecessor directly: no gap before it
  // when that predecessor is in the stored timeline; nor has the first, when it directly
  // follows the last stored event this poller brought.
  const inTimeline = new Set([...plan.inserts.filter((e) => e.inTimeline).map((e) => e.eventId), ...plan.promote.map((p) => p.eventId)]);
  const followers = gapFollowers(blocks, knownBefore, inTimeline);
  await healGaps(tx, followers);
  const proofs = anchorProofs(ctx.views, device, blocks, knownBefore);
  await healGapsAfterAnchors(tx, proofs);
  const promoted = plan.promote.map((p) => nidOf(p.eventId) as number);
  // Stored events changed in place (cached copies must go): said of every room of the chunk.
  const redacts = plan.inserts.some((e) => e.type === 'm.room.redaction');
  if (plan.gapsAfter.length || followers.length || proofs.length || promoted.length || redacts) {
    const roomIds = blocks.map((b) => b.roomId);
    publish.push(() => bus.publish('room.rewritten', { roomIds }));
  }
  await markInTimeline(
    tx,
    promoted,
    new Map(plan.promote.filter((p) => p.prevBatch).map((p) => [nidOf(p.eventId) as number, p.prevBatch as string])),
  );
  // Transaction ids the sending device's poller brought, for new and already-stored events alike.
  await insertTransactionIds(
    tx,
    plan.txnIds.map((t) => ({ ...t, ...device })),
  );

  // Rooms and their current state.
  // Events that joined the timeline now: new ones, and known ones promoted into it (which
  // count as new for the room's latest event, bump and subscribers).
  const insertedInTimeline = plan.inserts.filter((e) => e.inTimeline).map((e) => inserted.get(e.eventId) as number);
  const newTimelineNids = new Set([...insertedInTimeline, ...promoted]);
  // State changes only from events new to the store: a promoted one was applied when stored.
  const stateChanges = planStateChanges(blocks, knownBefore, nidOf, current, stateKeyOf, new Set(insertedInTimeline)).map((c) => ({
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
  // A room this response changes nothing of (a duplicate many pollers bring) is not rewritten.
  await upsertRooms(tx, roomRows.filter(changesRoom));
  await applyStateChanges(tx, stateChanges);
  // Every new redaction applies, in the timeline or not (a late poller's too).
  await applyRedactions(tx, blocks, new Set(inserted.values()), nidOf);
  remember.push(() => {
    for (const e of plan.inserts) {
      const nid = inserted.get(e.eventId) as number;
      ctx.known.set(e.eventId, { nid, inTimeline: newTimelineNids.has(nid), gapBefore: e.gapBefore });
    }
    for (const p of plan.promote) ctx.known.set(p.eventId, { nid: nidOf(p.eventId) as number, inTimeline: true, gapBefore: undefined });
    const tipAfter = new Map(roomRows.map((r) => [r.roomId, Math.max(r.latestNid, tips.get(r.roomId)?.nid ?? 0)]));
    const lastEvents = new Map(blocks.map(({ roomId, room }) => [roomId, nidOf(room.timeline.events.at(-1)?.event_id ?? '') ?? 0]));
    ctx.views.record(
      device,
      plan.ends,
      (roomId) => tipAfter.get(roomId) ?? 0,
      (roomId) => lastEvents.get(roomId) ?? 0,
    );
  });
  // Everything else of this response takes one position after all its events.
  const pos = await nextPosition(tx);
  const membershipChanged = await storeMemberships(tx, device.userId, response, blocks, nidOf, arrivalPos, pos);
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
  if (last) await advanceSince(tx, device, response.next_batch, since);

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
    const userIds = typingOf(room);
    if (userIds) publish.push(() => bus.publish('room.typing', { roomId, userIds }));
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

async function applyRedactions(
  tx: Parameters<typeof eventsForRedaction>[0],
  blocks: RoomBlock[],
  newNids: Set<number>,
  nidOf: (id: string) => number | undefined,
) {
  const redactions = blocks.flatMap(({ roomId, room }) =>
    room.timeline.events
      .filter((e) => e.type === 'm.room.redaction' && newNids.has(nidOf(e.event_id) as number))
      .map((redaction) => ({ roomId, redaction, targetId: redactionTarget(redaction) })),
  );
  if (redactions.length === 0) return;
  const targets = await eventsForRedaction(tx, [...new Set(redactions.flatMap((r) => (r.targetId ? [r.targetId] : [])))]);
  const versions = await roomVersions(tx, [...new Set(redactions.map((r) => r.roomId))]);
  const redacted = new Map<number, string>();
  for (const { roomId, redaction, targetId } of redactions) {
    const target = targetId ? targets.get(targetId) : undefined;
    // A redaction only applies within its own room; one for an event we never saw is moot.
    if (!target || target.redacted || redacted.has(target.nid) || target.roomId !== roomId) continue;
    redacted.set(target.nid, JSON.stringify(redactEvent(JSON.parse(target.json), versions.get(roomId) ?? '1', redaction)));
  }
  await storeRedacted(
    tx,
    [...redacted].map(([nid, json]) => ({ nid, json })),
  );
}

/** The polling user's own memberships; returns the rooms whose membership changed. */
async function storeMemberships(
  tx: Parameters<typeof currentMemberships>[0],
  userId: string,
  response: SyncResponse,
  blocks: RoomBlock[],
  nidOf: (id: string) => number | undefined,
  /** Positions of the invites and knocks. */
  arrivalPos: Map<string, number>,
  pos: number,
): Promise<string[]> {
  const ids = membershipRoomIds(response);
  if (ids.length === 0) return [];
  const before = await currentMemberships(tx, userId, ids);
  const updates = membershipUpdates(userId, response, blocks, nidOf, arrivalPos, pos, before);
  await upsertMemberships(tx, updates);
  return updates.map((u) => u.roomId);
}

async function storeRoomCounts(tx: Parameters<typeof updateRoomCounts>[0], userId: string, response: SyncResponse, pos: number) {
  const updates = roomCountUpdates(userId, response, pos);
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
