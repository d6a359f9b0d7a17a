// Many waiting requests woken by one event (a room shared by a thousand users) recompute from
// memory without awaiting any I/O, so run back to back they would hold the event loop for all
// of them. They are let go a few per turn of the event loop instead: each batch's computations
// run (as microtasks) before the next turn, and timers, sockets and ingest get in between.
export class WakePacer {
  #queue: (() => void)[] = [];
  #scheduled = false;

  constructor(private readonly perTurn = 16) {}

  /** Runs `wake` in a later turn, after at most the wakes queued before it. */
  defer(wake: () => void): void {
    this.#queue.push(wake);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(this.#drain);
  }

  #drain = (): void => {
    const batch = this.#queue.splice(0, this.perTurn);
    for (const wake of batch) wake();
    if (this.#queue.length) setImmediate(this.#drain);
    else this.#scheduled = false;
  };
}
