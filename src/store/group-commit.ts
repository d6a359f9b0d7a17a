// Group commit: writes (or reads) that arrive while batches are in flight go together in the next one.
// A lone write runs at once (no added delay); when a thousand long-polls are answered at once,
// their position writes take a few statements instead of a thousand, and each caller still
// hears of its own write only after the statement carrying it returned. A few batches run at
// once: with one at a time, answers computed faster than the database writes them queued
// behind one large batch after another, and the last waited for all of them.

export interface Keyed {
  /** Writes with the same key never share a batch nor run at once (a later one goes in a batch after). */
  readonly key: number;
}

interface Queued<T, R> {
  item: T;
  resolve: (r: R | undefined) => void;
  reject: (e: unknown) => void;
}

export class GroupCommit<T extends Keyed, R> {
  #queue: Queued<T, R>[] = [];
  #inFlight = 0;
  /** Keys of the items in the batches in flight. */
  #busyKeys = new Set<number>();
  #scheduled = false;

  /** `write(items)` stores a batch (distinct keys) and returns each stored item's result by key. */
  constructor(
    private readonly write: (items: T[]) => Promise<Map<number, R>>,
    private readonly maxBatch = 500,
    private readonly maxInFlight = 4,
  ) {}

  /** Resolves with the item's result once its batch is written (undefined: the write found nothing for it). */
  submit(item: T): Promise<R | undefined> {
    const done = Promise.withResolvers<R | undefined>();
    this.#queue.push({ item, resolve: done.resolve, reject: done.reject });
    if (this.#inFlight === 0) this.#start();
    else if (this.#inFlight < this.maxInFlight && !this.#scheduled) {
      // Another batch may start, but only once this turn's submissions have joined it (answers
      // computed in one turn of the event loop share a statement).
      this.#scheduled = true;
      setImmediate(() => {
        this.#scheduled = false;
        this.#start();
      });
    }
    return done.promise;
  }

  /** Starts as many batches as slots and distinct keys allow. */
  #start(): void {
    while (this.#inFlight < this.maxInFlight && this.#queue.length) {
      const batch: Queued<T, R>[] = [];
      const rest: Queued<T, R>[] = [];
      const keys = new Set<number>();
      for (const entry of this.#queue) {
        const key = entry.item.key;
        if (batch.length < this.maxBatch && !keys.has(key) && !this.#busyKeys.has(key)) {
          keys.add(key);
          batch.push(entry);
        } else rest.push(entry);
      }
      this.#queue = rest;
      if (!batch.length) return;
      void this.#run(batch, keys);
    }
  }

  async #run(batch: Queued<T, R>[], keys: Set<number>): Promise<void> {
    this.#inFlight++;
    for (const k of keys) this.#busyKeys.add(k);
    try {
      const results = await this.write(batch.map((e) => e.item));
      for (const e of batch) e.resolve(results.get(e.item.key));
    } catch (err) {
      for (const e of batch) e.reject(err);
    } finally {
      for (const k of keys) this.#busyKeys.delete(k);
      this.#inFlight--;
      this.#start();
    }
  }
}
