// History from the homeserver's /messages for a room whose stored timeline starts at a gap:
// stored once for every reader, below every stored event (see migrations/0004), filling the
// gap. Nothing is published: these events are history, never news to an open connection.
import { moveStartGap, placeStateEvents, recordHistoricState, reserveBackfillPositions, timelineStart } from '../store/backfill-table.js';
import type { Queryable } from '../store/db.js';
import { type DeviceRef, lockIngest } from '../store/device-inbox-table.js';
import { findEvents, insertEvents, insertTransactionIds, type KnownEvent, type NewEvent } from '../store/events-table.js';
import type { RoomEvent } from '../upstream/sync-response.js';
import { storedJson } from './room-events.js';

export interface HistoryChunk {
  roomId: string;
  /** The room's oldest stored timeline event, marked as following a gap, that the chunk ends just before. */
  gapEventId: string;
  /** Newest first, as /messages with dir=b returns them. */
  events: RoomEvent[];
  /** The token to paginate further back; absent at the start of the room. */
  end: string | undefined;
}

export type HistoryOutcome =
  | {
      stored: true;
      inserted: number;
      placed: number;
      known: [string, KnownEvent][];
      /** The room's oldest stored timeline event now, still following a gap; undefined at the room's start. */
      gapEventId: string | undefined;
    }
  /**
   * `moved`: the gap is no longer where the chunk was fetched from (filled meanwhile);
   * `overlap`: the chunk reaches stored timeline events; `hidden`: nothing in it the user may see.
   */
  | { stored: false; reason: 'moved' | 'overlap' | 'hidden' };

/** In one transaction, under the ingest lock (positions are taken and events deduplicated as ingest does). */
export async function storeHistory(tx: Queryable, device: DeviceRef, chunk: HistoryChunk): Promise<HistoryOutcome> {
  await lockIngest(tx);
  const start = await timelineStart(tx, chunk.roomId);
  if (!start || start.eventId !== chunk.gapEventId || !start.gapBefore) return { stored: false, reason: 'moved' };
  const seen = new Set<string>();
  // Oldest first, each event once.
  const events = chunk.events.filter((e) => !seen.has(e.event_id) && Boolean(seen.add(e.event_id))).reverse();
  const known = await findEvents(
    tx,
    events.map((e) => e.event_id),
  );
  if ([...known.values()].some((k) => k.inTimeline)) return { stored: false, reason: 'overlap' };
  // Nothing this user may see before the gap: the gap stays (its token is everyone's).
  if (events.length === 0) return { stored: false, reason: 'hidden' };
  // The room's start only when its create event is reached: an absent `end` may also mean that
  // this user may see nothing older, which says nothing about other users.
  const oldest = events[0] as RoomEvent;
  const atStart = oldest.type === 'm.room.create' && oldest.state_key === '';
  const highest = await reserveBackfillPositions(tx, events.length);
  const lowest = highest - events.length + 1;
  const moves: { from: number; to: number; json: string }[] = [];
  const historic: { roomId: string; type: string; stateKey: string; nid: number }[] = [];
  const txnIds: { eventId: string; userId: string; deviceId: string; txnId: string }[] = [];
  const cache: [string, KnownEvent][] = [];
  // Runs of new events between known ones take consecutive positions: one insert per run.
  let run: NewEvent[] = [];
  let runStart = lowest;
  const flush = async () => {
    if (run.length) await insertEvents(tx, run, runStart);
    run = [];
  };
  for (const [i, event] of events.entries()) {
    const nid = lowest + i;
    const first = i === 0;
    if (event.state_key !== undefined) historic.push({ roomId: chunk.roomId, type: event.type, stateKey: event.state_key, nid });
    cache.push([event.event_id, { nid, inTimeline: true, gapBefore: first && !atStart }]);
    const { json, txnId } = storedJson(event);
    const stored = known.get(event.event_id);
    if (stored) {
      await flush();
      // The timeline's copy: a state block may have left out what it carries (unsigned.prev_content).
      moves.push({ from: stored.nid, to: nid, json });
      continue;
    }
    if (run.length === 0) runStart = nid;
    if (txnId && event.sender === device.userId) txnIds.push({ eventId: event.event_id, ...device, txnId });
    run.push({
      eventId: event.event_id,
      roomId: chunk.roomId,
      type: event.type,
      stateKey: event.state_key,
      sender: event.sender,
      originServerTs: event.origin_server_ts,
      inTimeline: true,
      prevBatch: first && !atStart ? chunk.end : undefined,
      chunkEndToken: undefined,
      gapBefore: first && !atStart,
      json,
    });
  }
  await flush();
  await placeStateEvents(tx, moves);
  await recordHistoricState(tx, historic);
  await moveStartGap(tx, start.nid, lowest, atStart ? undefined : (chunk.end ?? null));
  await insertTransactionIds(tx, txnIds);
  return {
    stored: true,
    inserted: events.length - moves.length,
    placed: moves.length,
    known: cache,
    gapEventId: atStart ? undefined : oldest.event_id,
  };
}
