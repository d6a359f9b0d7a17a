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
}

/**
 * Timeline rules:
 * - events already stored are not stored again (dedup by id);
 * - a new event that comes before an event we already have in this chunk is older than our
 *   timeline (another poller got further first): it is stored, but kept out of the timeline,
 *   because giving it a position after newer events would scramble the order;
 * - the first event of a `limited` chunk marks a gap, and carries the chunk's prev_batch.
 */
export function planEvents(blocks: RoomBlock[], known: Map<string, KnownEvent>, nextBatch?: string): EventPlan {
  const plan: EventPlan = { inserts: [], promote: [], txnIds: [] };
  const seen = new Set<string>();
  const withTxnId = new Set<string>();
  const noteTxnId = (event: RoomEvent) => {
    const txnId = event.unsigned?.transaction_id;
    if (typeof txnId !== 'string' || withTxnId.has(event.event_id)) return;
    withTxnId.add(event.event_id);
    plan.txnIds.push({ eventId: event.event_id, txnId });
  };
  const add = (roomId: string, event: RoomEvent, inTimeline: boolean, prevBatch: string | undefined, gapBefore: boolean) => {
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
      chunkEndToken: prevBatch === undefined ? undefined : nextBatch,
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
    let lastKnown = -1;
    timeline.forEach((e, i) => {
      if (known.get(e.event_id)?.inTimeline) lastKnown = i;
    });
    timeline.forEach((event, i) => {
      noteTxnId(event);
      const prevBatch = i === 0 ? room.timeline.prevBatch : undefined;
      const existing = known.get(event.event_id);
      if (existing) {
        if (!existing.inTimeline && i > lastKnown) plan.promote.push({ eventId: event.event_id, prevBatch });
        return;
      }
      const inTimeline = i > lastKnown;
      // Nothing precedes a room's create event, whatever `limited` says.
      const gap = inTimeline && i === 0 && room.timeline.limited && event.type !== 'm.room.create';
      add(roomId, event, inTimeline, prevBatch, gap);
    });
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
