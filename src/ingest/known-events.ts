// The events stored lately, in memory: when 200 users' pollers bring the same event, all but the
// first recognise it here, before queueing for the database or writing anything. Bounded (least
// recently used out), and filled only after a commit, so what it holds is stored. Pruning may
// delete an event it still holds; such an event is then treated as known, which is what pruning
// wants (it is older than every connection's position).
import type { KnownEvent } from '../store/events-table.js';

export class KnownEvents {
  readonly #max: number;
  readonly #events = new Map<string, KnownEvent>();

  constructor(max: number) {
    this.#max = max;
  }

  get(eventId: string): KnownEvent | undefined {
    const known = this.#events.get(eventId);
    if (known) {
      // Map order is insertion order: re-inserting marks it as recently used.
      this.#events.delete(eventId);
      this.#events.set(eventId, known);
    }
    return known;
  }

  set(eventId: string, known: KnownEvent): void {
    this.#events.delete(eventId);
    this.#events.set(eventId, known);
    if (this.#events.size > this.#max + this.#slack) this.#evict();
  }

  // Evicting the oldest entry one set at a time is quadratic: V8's Map leaves a deleted entry as a
  // hole until it rehashes, and each `keys().next()` walks over every hole before the first live
  // key (30 µs a set once full, 2 s of a 10,000-room initial sync's ingest). Up to `#slack` entries
  // over the bound are let in, then the oldest go in one walk.
  get #slack(): number {
    return Math.ceil(this.#max / 16);
  }

  #evict(): void {
    let excess = this.#events.size - this.#max;
    for (const eventId of this.#events.keys()) {
      if (excess-- <= 0) break;
      this.#events.delete(eventId);
    }
  }

  get size(): number {
    return this.#events.size;
  }
}
