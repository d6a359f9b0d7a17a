// Where each user's global account data last changed, from the bus: a connection that has
// delivered it up to a position past that knows it unchanged without a query (every waiting
// connection of a fan-out asks). Bounded: past `max` users it forgets them all and answers
// "unknown" for positions before the reset, so memory tracks users with recent changes.
import type { Bus } from '../bus/bus.js';

export class AccountDataPositions {
  #latest = new Map<string, number>();
  /** Changes committed after this position are all in #latest (or were forgotten by a reset). */
  #since: number;
  #top: number;

  constructor(
    bus: Bus,
    /** The committed stream position when the bus subscription starts. */
    initial: number,
    private readonly max = 100_000,
  ) {
    this.#since = initial;
    this.#top = initial;
    bus.subscribe('stream.advanced', ({ pos }) => {
      if (pos > this.#top) this.#top = pos;
    });
    bus.subscribe('user.account_data', ({ userId, pos }) => {
      if (pos > this.#top) this.#top = pos;
      if (this.#latest.size >= this.max && !this.#latest.has(userId)) {
        this.#latest.clear();
        this.#since = this.#top;
      }
      this.#latest.set(userId, Math.max(pos, this.#latest.get(userId) ?? 0));
    });
  }

  /** True when the user's global account data is known unchanged after `pos`; false when it changed or is not known. */
  unchangedSince(userId: string, pos: number): boolean {
    return pos >= this.#since && (this.#latest.get(userId) ?? 0) <= pos;
  }
}
