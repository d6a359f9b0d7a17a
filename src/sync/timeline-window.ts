// Which stored events a room's timeline serves. It never reaches across a gap (events known to
// be missing before a stored one): it starts at the newest gap within its limit and says
// `limited`, so paginating back from its prev_batch reaches exactly the missing events. A
// timeline stitched across a gap would hide them from the client for good.

/**
 * `rows`: the room's latest events, newest first, one more than `limit` when older ones exist.
 * Returns the events to serve, oldest first.
 */
export function timelineWindow<T extends { gapBefore: boolean }>(rows: T[], limit: number): { events: T[]; limited: boolean } {
  const fitting = rows.slice(0, limit);
  const gapAt = fitting.findIndex((r) => r.gapBefore);
  const events = (gapAt < 0 ? fitting : fitting.slice(0, gapAt + 1)).reverse();
  return { events, limited: rows.length > limit || gapAt >= 0 };
}
