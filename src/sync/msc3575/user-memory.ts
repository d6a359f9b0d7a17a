// What MSC3575 remembers per user beside the shared user cache: calculated names (see names.ts)
// and an order per sort in use (see sort.ts). It lives exactly as long as the user's cache
// object: keyed weakly by it, it goes when UserCaches forgets an idle user, and a user loaded
// again starts afresh, as the cache does.

import type { SortedRooms } from '../../cache/sorted-rooms.js';
import type { UserCache } from '../../cache/user-cache.js';
import type { Hero } from '../heroes.js';

/** Calculated names, each with the inputs it was computed from. */
export type NameMemory = Map<string, { stamp: string; name: string; heroes: Hero[] }>;

export interface UserMemory {
  names: NameMemory;
  /** Room orders by a key naming the sort (sortKeyOf). */
  orders: Map<string, SortedRooms>;
}

export class UserMemories {
  #byUser = new WeakMap<UserCache, UserMemory>();

  of(user: UserCache): UserMemory {
    let memory = this.#byUser.get(user);
    if (!memory) {
      memory = { names: new Map(), orders: new Map() };
      this.#byUser.set(user, memory);
    }
    return memory;
  }
}
