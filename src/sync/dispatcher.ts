// Routes bus messages to the long-polls waiting on them (as the Go proxy's dispatcher does).
// Waiters are registered per user; a room message reaches the users who have the room through
// the user caches' room → users index, a user or device message reaches that user's waiters
// only. Delivery costs what it affects, never a scan of everyone waiting, and a wake is a flag
// and a resolved promise: the recomputation runs later, outside the bus delivery.
import type { Bus } from '../bus/bus.js';

export type WakeReason = 'woke' | 'expired';

/** What a waiting request wants to hear beyond its rooms and memberships. */
export interface WaitInterest {
  accountData: boolean;
  receipts: boolean;
  typing: boolean;
  /** To-device messages, device lists and key counts of its own device. */
  deviceData: boolean;
}

export interface Waiter {
  readonly userId: string;
  readonly deviceId: string;
  readonly wants: WaitInterest;
  wake(why: WakeReason): void;
}

export class Dispatcher {
  #byUser = new Map<string, Set<Waiter>>();

  /** `usersOf(roomId)`: the users whose cache holds the room (a superset is harmless: a spurious wake recomputes and waits again). */
  constructor(bus: Bus, usersOf: (roomId: string) => Iterable<string>) {
    const room = (roomId: string, concerns: (w: Waiter) => boolean) => {
      for (const userId of usersOf(roomId)) this.#user(userId, concerns, 'woke');
    };
    bus.subscribe('room.changed', (m) => room(m.roomId, () => true));
    bus.subscribe('room.receipts', (m) => room(m.roomId, (w) => w.wants.receipts));
    bus.subscribe('room.typing', (m) => room(m.roomId, (w) => w.wants.typing));
    bus.subscribe('user.rooms_changed', (m) => this.#user(m.userId, () => true, 'woke'));
    bus.subscribe('user.account_data', (m) => this.#user(m.userId, (w) => w.wants.accountData, 'woke'));
    bus.subscribe('device.data', (m) => this.#user(m.userId, (w) => w.deviceId === m.deviceId && w.wants.deviceData, 'woke'));
    bus.subscribe('device.token_expired', (m) => this.#user(m.userId, (w) => w.deviceId === m.deviceId, 'expired'));
  }

  /** Starts delivering to `waiter`; returns the function that stops it. */
  register(waiter: Waiter): () => void {
    const set = this.#byUser.get(waiter.userId) ?? new Set();
    this.#byUser.set(waiter.userId, set);
    set.add(waiter);
    return () => {
      set.delete(waiter);
      if (!set.size && this.#byUser.get(waiter.userId) === set) this.#byUser.delete(waiter.userId);
    };
  }

  /** Whether any request of the user is registered (their caches must stay in memory). */
  hasWaiters(userId: string): boolean {
    return this.#byUser.has(userId);
  }

  /** Waiters registered (a gauge and the benchmark's check). */
  get size(): number {
    let n = 0;
    for (const set of this.#byUser.values()) n += set.size;
    return n;
  }

  #user(userId: string, concerns: (w: Waiter) => boolean, why: WakeReason) {
    const set = this.#byUser.get(userId);
    if (!set) return;
    for (const w of set) if (concerns(w)) w.wake(why);
  }
}
