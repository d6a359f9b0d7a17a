// Who is typing in each room: ephemeral, so memory only, fed by the bus. Each change gets a
// serial so connections can tell whether they have sent the latest list.
import type { Bus } from '../bus/bus.js';

export interface Typing {
  userIds: string[];
  serial: number;
}

export class TypingCache {
  #rooms = new Map<string, Typing>();
  #serial = 0;
  #listeners = new Set<(roomId: string) => void>();

  constructor(bus: Bus) {
    bus.subscribe('room.typing', ({ roomId, userIds }) => {
      const before = this.#rooms.get(roomId);
      const sorted = [...userIds].sort();
      if (before ? before.userIds.join('\0') === sorted.join('\0') : !sorted.length) return;
      // Only rooms where someone types are kept (bounded memory): a connection that last sent
      // a serial sees none now and sends the empty list, as it would for a newer serial.
      if (sorted.length) this.#rooms.set(roomId, { userIds: sorted, serial: ++this.#serial });
      else this.#rooms.delete(roomId);
      for (const l of this.#listeners) l(roomId);
    });
  }

  /** Called right after a room's typers changed. */
  onChange(listener: (roomId: string) => void): void {
    this.#listeners.add(listener);
  }

  get(roomId: string): Typing | undefined {
    return this.#rooms.get(roomId);
  }
}
