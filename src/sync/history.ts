// Timelines as deep as asked: a room sent from scratch whose stored timeline starts at a gap
// (history from before the proxy's first contact) with fewer visible events than asked gets
// the missing ones fetched, through this port, before its timeline is read again. A gap in the
// middle of the stored timeline is left as it is: the timeline stops there, `limited`, with
// the exact token to paginate from.
import type { TimelineRow } from '../store/room-reads.js';
import type { HistoryAnswer, HistoryWant } from '../timeline-history.js';
import { timelineWindow } from './timeline-window.js';

/**
 * Fetches history before rooms' stored timelines and stores it for everyone (implemented in
 * poller/backfill.ts), for the requesting user. Resolves within its own time budget; rooms
 * not grown by then are served from what is stored.
 */
export interface TimelineHistory {
  fetch(wants: HistoryWant[]): Promise<HistoryAnswer>;
}

/**
 * `rows`: the room's latest visible events, newest first (one more than `limit` when older ones
 * exist). Undefined when they fill the timeline, or when what stops it is not a gap before the
 * oldest of them (the room's start, or a gap with stored events older than it). A gap without
 * a token (the homeserver had nothing older for whoever fetched last) is still asked about:
 * the answer may be that this user's history is complete.
 */
export function historyWanted(roomId: string, rows: TimelineRow[], limit: number): HistoryWant | undefined {
  const { events } = timelineWindow(rows, limit);
  const oldest = rows.at(-1);
  if (events.length >= limit || !oldest?.gapBefore || events[0] !== oldest) return undefined;
  return { roomId, gap: { eventId: oldest.eventId, prevBatch: oldest.prevBatch ?? undefined }, missing: limit - events.length };
}
