// Group commit: writes that arrive while one batch is in flight go together in the next one.
// A lone write runs at once (no added delay); when a thousand long-polls are answered at once,
// their position writes take a few round trips instead of a thousand, and each caller still
// hears of its own write only after the statement carrying it returned.

export interface Keyed {
  /** Writes with the same key never share a batch (a later one goes in the batch after). */
  readonly key: number;
}

interface Queued<T, R> {
  item: T;
  resolve: (r: R | undefined) => void;
  reject: (e: unknown) => void;
}

export class GroupCommit<T extends Keyed, R> {
  #queue: Queued<T, R>[] = [];
  #running = false;

  /** `write(items)` stores a batch (distinct keys) and returns each stored item's result by key. */
  constructor(
    private readonly write: (items: T[]) => Promise<Map<number, R>>,
    private readonly maxBatch = 500,
  ) {}

  /** Resolves with the item's result once its batch is written (undefined: the write found nothing for it). */
  submit(item: T): Promise<R | undefined> {
    const done = Promise.withResolvers<R | undefined>();
    this.#queue.push({ item, resolve: done.resolve, reject: done.reject });
    if (!this.#running) void this.#drain();
    return done.promise;
  }

  async #drain(): Promise<void> {
    this.#running = true;
    try {
      while (this.#queue.length) {
        const batch: Queued<T, R>[] = [];
        const rest: Queued<T, R>[] = [];
        const keys = new Set<number>();
        for (const entry of this.#queue) {
          if (batch.length < this.maxBatch && !keys.has(entry.item.key)) {
            keys.add(entry.item.key);
            batch.push(entry);
          } else rest.push(entry);
        }
        this.#queue = rest;
        try {
          const results = await this.write(batch.map((e) => e.item));
          for (const e of batch) e.resolve(results.get(e.item.key));
        } catch (err) {
          for (const e of batch) e.reject(err);
        }
      }
    } finally {
      this.#running = false;
    }
  }
}
