// Ports: what sync/ needs from layers it may not import. A response is built from memory and
// the store's read functions; the few things that need the homeserver (and write what it
// answers to the store) are asked through an interface declared here, implemented below
// sync/ by a module that never imports it (TypeScript checks the shape where src/proxy.ts
// wires the two), and optional: without it, the engine serves what it has.

import type { HistoryAnswer, HistoryWant } from '../timeline-history.js';

/**
 * The homeserver's exact pagination token from just before an event no v2 chunk started at,
 * asked with the device's own token and kept for every later response (poller/exact-prev-batch.ts).
 */
export interface PrevBatchSource {
  exactPrevBatch(
    device: { userId: string; deviceId: string },
    roomId: string,
    event: { nid: number; eventId: string },
  ): Promise<string | undefined>;
}

/**
 * History before rooms' stored timelines, fetched from the homeserver with the device's own
 * token and stored once for everyone (poller/backfill.ts); what each room grew by is then read
 * from the store like any other event.
 */
export interface HistorySource {
  fetch(device: { userId: string; deviceId: string }, wants: HistoryWant[]): Promise<HistoryAnswer>;
}
