// History before a room's stored timeline, as the engine asks for it and the poller's backfill
// answers (shared vocabulary, so the two layers agree on one type without importing each other).

/** A room whose stored timeline starts at `gap` (with its token, if any) and is `missing` visible events short. */
export interface HistoryWant {
  roomId: string;
  gap: { eventId: string; prevBatch: string | undefined };
  missing: number;
}

/**
 * `grown`: rooms whose stored timeline grew; `complete`: rooms whose history the user may see
 * is all stored (the homeserver has nothing older for them, though it may for others).
 */
export interface HistoryAnswer {
  grown: Set<string>;
  complete: Set<string>;
}
