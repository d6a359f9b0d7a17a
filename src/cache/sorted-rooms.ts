// A room order kept sorted by a key, one room at a time: a room whose key changes is moved by
// binary search, never by sorting the whole list again. Keys are tuples compared in order
// (numbers and strings), and the room id breaks ties so the order is total and stable.

export type SortKey = readonly (number | string)[];

function compareKeys(a: SortKey, b: SortKey): number {
  // The common key is one number (recency): compared without the loop.
  if (a.length === 1 && b.length === 1) {
    const x = a[0] as number | string;
    const y = b[0] as number | string;
    return x === y ? 0 : x < y ? -1 : 1;
  }
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    if (x === y) continue;
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    return x < y ? -1 : 1;
  }
  return 0;
}

const sameKey = (a: SortKey, b: SortKey) => a.length === b.length && a.every((x, i) => x === b[i]);

/** A room's key now; undefined for a room that is not in the order. */
export type KeyOf = (roomId: string) => SortKey | undefined;

export class SortedRooms {
  #order: string[] = [];
  /** #order's keys, index for index: a search reads keys without a map look-up per step. */
  #orderKeys: SortKey[] = [];
  #keys = new Map<string, SortKey>();

  /** `keyOf` is the default; callers whose keys depend on per-call context pass their own. */
  constructor(private readonly keyOf: KeyOf = () => undefined) {}

  get order(): readonly string[] {
    return this.#order;
  }

  #compare(a: string, ka: SortKey, b: string, kb: SortKey): number {
    return compareKeys(ka, kb) || (a < b ? -1 : a > b ? 1 : 0);
  }

  /** Index of the first room that sorts at or after (roomId, key). */
  #search(roomId: string, key: SortKey): number {
    let lo = 0;
    let hi = this.#order.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#compare(this.#order[mid] as string, this.#orderKeys[mid] as SortKey, roomId, key) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  #remove(roomId: string) {
    const key = this.#keys.get(roomId);
    if (key === undefined) return;
    const at = this.#search(roomId, key);
    if (this.#order[at] === roomId) {
      this.#order.splice(at, 1);
      this.#orderKeys.splice(at, 1);
    }
    this.#keys.delete(roomId);
  }

  /** Moves one room to where its current key puts it (or out, when it has none). */
  update(roomId: string, keyOf: KeyOf = this.keyOf): void {
    const key = keyOf(roomId);
    const old = this.#keys.get(roomId);
    if (old && key && sameKey(old, key)) return;
    this.#remove(roomId);
    if (!key) return;
    this.#keys.set(roomId, key);
    const at = this.#search(roomId, key);
    this.#order.splice(at, 0, roomId);
    this.#orderKeys.splice(at, 0, key);
  }

  /**
   * Makes the order hold exactly `roomIds` under their current keys. Keys are recomputed for
   * every room (cheap), but only rooms whose key changed move; a first fill sorts once.
   */
  refresh(roomIds: readonly string[], keyOf: KeyOf = this.keyOf): void {
    if (this.#order.length === 0) {
      this.#fill(roomIds, keyOf);
      return;
    }
    const wanted = new Set(roomIds);
    for (const id of [...this.#keys.keys()]) if (!wanted.has(id)) this.#remove(id);
    for (const id of roomIds) this.update(id, keyOf);
  }

  #fill(roomIds: readonly string[], keyOf: KeyOf) {
    for (const id of roomIds) {
      const key = keyOf(id);
      if (key) this.#keys.set(id, key);
    }
    this.#order = [...this.#keys.keys()].sort((a, b) => this.#compare(a, this.#keys.get(a) as SortKey, b, this.#keys.get(b) as SortKey));
    this.#orderKeys = this.#order.map((id) => this.#keys.get(id) as SortKey);
  }
}
