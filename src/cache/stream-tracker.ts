// The highest stream position whose ingest transaction has committed. Responses are computed
// up to this position and never past it: reading the sequence directly could include
// positions of a transaction still in flight, which would then be skipped forever.
import type { Bus } from '../bus/bus.js';

export class StreamTracker {
  #pos: number;

  constructor(bus: Bus, initial: number) {
    this.#pos = initial;
    bus.subscribe('stream.advanced', ({ pos }) => {
      if (pos > this.#pos) this.#pos = pos;
    });
  }

  get current(): number {
    return this.#pos;
  }
}
