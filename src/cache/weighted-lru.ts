// A least-recently-used map bounded by what its entries hold, not only by how many there are:
// the room caches weigh a room by its members, so one room of 5,000 members and a thousand
// rooms of five are both held, and the memory a cache may take does not depend on which rooms
// are busy. An entry heavier than the whole budget is not held at all (the caller reads it
// from the store each time instead).

export class WeightedLru<K, V> {
  #entries = new Map<K, { value: V; weight: number }>();
  #weight = 0;

  constructor(
    private readonly maxWeight: number,
    private readonly maxEntries = Number.POSITIVE_INFINITY,
  ) {}

  /** The value, now the most recently used; undefined when not held. */
  get(key: K): V | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    return entry.value;
  }

  /**
   * Holds `value` as the most recently used, dropping the least recently used others while the
   * budget is exceeded. Returns false (and holds nothing) when `weight` alone exceeds it.
   */
  set(key: K, value: V, weight: number): boolean {
    this.delete(key);
    if (!this.fits(weight)) return false;
    this.#entries.set(key, { value, weight });
    this.#weight += weight;
    for (const [oldest, entry] of this.#entries) {
      if (this.#weight <= this.maxWeight && this.#entries.size <= this.maxEntries) break;
      this.#entries.delete(oldest);
      this.#weight -= entry.weight;
    }
    return true;
  }

  /** Whether an entry of this weight can be held at all. */
  fits(weight: number): boolean {
    return weight <= this.maxWeight;
  }

  /** Whether `key` holds exactly `value` (a load finishing late must not drop its successor). */
  holds(key: K, value: V): boolean {
    return this.#entries.get(key)?.value === value;
  }

  delete(key: K): void {
    const entry = this.#entries.get(key);
    if (!entry) return;
    this.#entries.delete(key);
    this.#weight -= entry.weight;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The sum of the held entries' weights. */
  get weight(): number {
    return this.#weight;
  }
}
