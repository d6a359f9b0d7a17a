// Deciding, without I/O, what a v2 response's room blocks mean for the event store: which
// events are new, which of them belong to the visible timeline, where gaps are, and which
// state changes they make. Kept pure so the rules are unit-testable on their own.
import type { KnownEvent, NewEvent } from '../store/events-table.js';
import type { JoinedRoomSync, RoomEvent } from '../upstream/sync-response.js';

export interface RoomBlock {
  roomId: string;
  room: JoinedRoomSync;
}

/**
 * The stored JSON of an event: as received, minus what belongs to one viewer or one moment.
 * Events are shared by every user who sees them, so `unsigned` loses `transaction_id` (the
 * sending device's, kept apart), `membership` (MSC4115: the viewer's membership at the event)
 * and `age` (true only when it was sent: clients compute local timestamps from it).
 */
export function storedJson(event: RoomEvent): { json: string; txnId: string | undefined } {
  if (!event.unsigned) return { json: JSON.stringify(event), txnId: undefined };
  const { transaction_id: txnId, membership: _m, age: _a, ...unsigned } = event.unsigned;
  const { unsigned: _u, ...rest } = event;
  const json = JSON.stringify(Object.keys(unsigned).length ? { ...rest, unsigned } : rest);
  return { json, txnId: typeof txnId === 'string' ? txnId : undefined };
}

export interface EventPlan {
  /** Events to insert, in the order their positions must follow. */
  inserts: NewEvent[];
  /** Known events that only ever came from state blocks and now appear in a timeline. */
  promote: { eventId: string; prevBatch: string | undefined }[];
  /**
   * Transaction ids the response carried (only the sending device's poller sees them), on new
   * and already stored events alike: another device's poller may have stored the event first.
   */
  txnIds: { eventId: string; txnId: string }[];
  /**
   * Holes this response proves in a stored timeline: the first timeline event of `roomId` after
   * position `afterNid` has events missing before it (they came late, and were kept out of the
   * timeline), so it must be marked as a gap.
   */
  gapsAfter: { roomId: string; afterNid: number }[];
  /**
   * Where each room's chunk left the poller: at the stored timeline's tip (which then includes
   * whatever this response appends), or at an older stored event's position.
   */
  ends: Map<string, number | 'tip'>;
}

/** Where the poller's view of a room stands against the stored timeline (see PollerViews). */
export interface RoomPlacement {
  /** Position of the room's latest stored timeline event (0: none). */
  tip: number;
  /** Its origin_server_ts. */
  tipTs: number;
  /**
   * Position of the latest stored timeline event this poller has seen in the room; undefined
   * when it has not seen any since it started or since a gap in its own stream.
   */
  anchor: number | undefined;
  /** The poller's own stream has a gap (to-device-only start, skipped response). */
  blind: boolean;
  /** This is the poller's initial sync. */
  initial: boolean;
}

/** No knowledge of where the poller stands: new events continue the stored timeline. */
const CONTINUES: RoomPlacement = { tip: 0, tipTs: 0, anchor: undefined, blind: false, initial: false };

/**
 * Timeline rules, one room chunk at a time, walking it in order:
 * - events already stored are not stored again (dedup by id);
 * - new events join the timeline only while the chunk continues the stored timeline's tip:
 *   from its start when the poller last saw the tip (or nothing is known about it), and after a
 *   known event only when that event is the tip;
 * - new events that a chunk places before stored ones (the poller lags behind another, or
 *   comes after a known event that is not the tip, or a `limited` chunk's events are older
 *   than the tip's timestamp) are stored out of the timeline, because a
 *   position after newer events would scramble the order; the stored event after the hole is
 *   marked as a gap, so clients reach them through its prev_batch (never a silent hole);
 * - the first event of a `limited` chunk, or of the first chunk after a gap in the poller's own
 *   stream, marks a gap and carries the chunk's prev_batch.
 */
export function planEvents(
  blocks: RoomBlock[],
  known: Map<string, KnownEvent>,
  nextBatch?: string,
  placements?: Map<string, RoomPlacement>,
): EventPlan {
  const plan: EventPlan = { inserts: [], promote: [], txnIds: [], gapsAfter: [], ends: new Map() };
  const seen = new Set<string>();
  const withTxnId = new Set<string>();
  const noteTxnId = (event: RoomEvent) => {
    const txnId = event.unsigned?.transaction_id;
    if (typeof txnId !== 'string' || withTxnId.has(event.event_id)) return;
    withTxnId.add(event.event_id);
    plan.txnIds.push({ eventId: event.event_id, txnId });
  };
  const add = (
    roomId: string,
    event: RoomEvent,
    inTimeline: boolean,
    prevBatch: string | undefined,
    gapBefore: boolean,
    chunkEnd = false,
  ) => {
    if (seen.has(event.event_id)) return;
    seen.add(event.event_id);
    const { json } = storedJson(event);
    plan.inserts.push({
      eventId: event.event_id,
      roomId,
      type: event.type,
      stateKey: event.state_key,
      sender: event.sender,
      originServerTs: event.origin_server_ts,
      inTimeline,
      prevBatch,
      chunkEndToken: chunkEnd ? nextBatch : undefined,
      gapBefore,
      json,
    });
  };

  for (const { roomId, room } of blocks) {
    for (const event of room.state) {
      noteTxnId(event);
      if (!known.has(event.event_id)) add(roomId, event, false, undefined, false);
    }
    const timeline = room.timeline.events;
    const place = placements?.get(roomId) ?? CONTINUES;
    // The first event this chunk adds to the timeline keeps the chunk's end token: paginating
    // back from it covers every event the chunk added.
    let firstAdded = true;
    let lastKnown = -1;
    timeline.forEach((e, i) => {
      if (known.get(e.event_id)?.inTimeline) lastKnown = i;
    });
    // Behind: the poller saw an older stored event last than the tip, or its chunk follows no
    // anchor (limited, an initial sync's, the first after a gap in its stream); and the chunk
    // is older than the tip by the timestamps. (A poller may never see the tip: its user
    // ignores the sender, say. Its newer events then still continue the timeline.)
    const unanchored = room.timeline.limited || (place.anchor === undefined && (place.initial || place.blind));
    const lastTs = timeline.at(-1)?.origin_server_ts ?? 0;
    const behind = lastTs < place.tipTs && (unanchored || (place.anchor !== undefined && place.anchor < place.tip));
    // Whether the chunk, at this point, continues the stored timeline's tip.
    let appending = !behind;
    // The stored event the chunk last showed (for the gap after it), when not the tip.
    // (0 when the poller saw no stored event of the room: the hole is somewhere before the tip.)
    let after = behind ? (place.anchor ?? 0) : undefined;
    // The latest timeline event the chunk showed ('tip': one it added).
    let end: number | 'tip' | undefined;
    const hole = (afterNid: number | undefined) => {
      if (afterNid !== undefined && !plan.gapsAfter.some((g) => g.roomId === roomId && g.afterNid === afterNid))
        plan.gapsAfter.push({ roomId, afterNid });
    };
    timeline.forEach((event, i) => {
      noteTxnId(event);
      const prevBatch = i === 0 ? room.timeline.prevBatch : undefined;
      const existing = known.get(event.event_id);
      if (existing) {
        // Already stored: never stored again, only placed.
        if (existing.inTimeline) {
          // (A chunk ending newer than the tip continues it: the poller does not see the
          // events in between, as above.)
          appending = existing.nid >= place.tip || lastTs >= place.tipTs;
          after = appending ? undefined : existing.nid;
          end = existing.nid;
        } else if (appending && i > lastKnown) {
          plan.promote.push({ eventId: event.event_id, prevBatch });
          end = existing.nid;
        }
        return;
      }
      const inTimeline = appending && i > lastKnown;
      if (!inTimeline) {
        // Missing from the stored timeline: before the stored event that follows the last one
        // the chunk showed, or (while the chunk continues the tip) before the known event
        // that this chunk shows after it.
        const next = timeline.slice(i + 1).find((e) => known.get(e.event_id)?.inTimeline);
        hole(appending && next ? (known.get(next.event_id) as KnownEvent).nid - 1 : after);
      }
      // Nothing precedes a room's create event, whatever `limited` says.
      const unsure = room.timeline.limited || (place.blind && place.anchor === undefined);
      const gap = inTimeline && i === 0 && unsure && event.type !== 'm.room.create';
      add(roomId, event, inTimeline, prevBatch, gap, inTimeline && firstAdded);
      if (inTimeline) {
        firstAdded = false;
        end = 'tip';
      }
    });
    if (!appending) plan.ends.set(roomId, after as number);
    else if (end !== undefined) plan.ends.set(roomId, end);
  }
  return plan;
}

export interface PlannedStateChange {
  roomId: string;
  type: string;
  stateKey: string;
  eventNid: number;
  /** false: takes effect at the state block's position (before the timeline). */
  atEvent: boolean;
  membership: string | undefined;
}

/**
 * State rules: a state-block entry changes current state unless it names an event we already
 * had that is older than the current one (a poller lagging behind another tells us old news;
 * applying it would roll state back). Timeline state events change state at their own position,
 * but only when new and in the timeline.
 */
export function planStateChanges(
  blocks: RoomBlock[],
  knownBefore: Map<string, KnownEvent>,
  nidOf: (eventId: string) => number | undefined,
  current: Map<string, number>,
  keyOf: (roomId: string, type: string, stateKey: string) => string,
  newTimelineNids: Set<number>,
): PlannedStateChange[] {
  const changes: PlannedStateChange[] = [];
  const apply = (roomId: string, event: RoomEvent, atEvent: boolean) => {
    const nid = nidOf(event.event_id);
    if (nid === undefined || event.state_key === undefined) return;
    const key = keyOf(roomId, event.type, event.state_key);
    const cur = current.get(key);
    if (cur === nid) return;
    if (!atEvent && cur !== undefined && knownBefore.has(event.event_id) && nid < cur) return;
    current.set(key, nid);
    const membership =
      event.type === 'm.room.member' && typeof event.content.membership === 'string' ? event.content.membership : undefined;
    changes.push({ roomId, type: event.type, stateKey: event.state_key, eventNid: nid, atEvent, membership });
  };
  for (const { roomId, room } of blocks) {
    for (const event of room.state) apply(roomId, event, false);
    for (const event of room.timeline.events) {
      const nid = nidOf(event.event_id);
      if (event.state_key !== undefined && nid !== undefined && newTimelineNids.has(nid)) apply(roomId, event, true);
    }
  }
  return changes;
}
