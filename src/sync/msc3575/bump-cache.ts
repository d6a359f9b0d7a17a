// MSC3575 `bump_event_types`: per set of event types, each room's latest timeline event of
// one of those types (position and timestamp). Rooms are shared, so one entry serves every user
// and list asking for the same types; an entry is looked up again only after the room has
// newer events than it was computed at. An empty set means any event.
import type { RoomMetaCache } from '../../cache/room-meta-cache.js';
import type { Pool } from '../../store/db.js';
import { latestEventsOfTypes } from '../../store/room-reads.js';

export interface Bump {
  nid: number;
  ts: number;
}

interface Entry extends Bump {
  /** The room's latest event position when this entry was computed. */
  checked: number;
}

export class BumpCache {
  #byTypes = new Map<string, Map<string, Entry>>();

  constructor(
    private readonly pool: Pool,
    private readonly metas: RoomMetaCache,
  ) {}

  /** Brings the entries of `roomIds` up to date; returns a lookup for them. */
  async ensure(types: readonly string[], roomIds: readonly string[], upTo: number): Promise<(roomId: string) => Bump | undefined> {
    const key = [...types].sort().join('\0');
    const entries = this.#byTypes.get(key) ?? new Map<string, Entry>();
    this.#byTypes.set(key, entries);
    const latest = (id: string) => Math.min(this.metas.get(id)?.latestNid ?? 0, upTo);
    const stale = roomIds.filter((id) => (entries.get(id)?.checked ?? -1) < latest(id));
    if (stale.length) {
      const found = new Map((await latestEventsOfTypes(this.pool, stale, [...types], upTo)).map((r) => [r.roomId, r]));
      for (const id of stale) {
        const row = found.get(id);
        entries.set(id, { nid: row?.nid ?? 0, ts: row?.ts ?? 0, checked: latest(id) });
      }
    }
    return (id) => {
      const e = entries.get(id);
      return e && e.nid > 0 ? e : undefined;
    };
  }

  /** Drops the rooms' entries (rooms no cached user holds any more). */
  forget(roomIds: Iterable<string>): void {
    const ids = [...roomIds];
    for (const entries of this.#byTypes.values()) for (const id of ids) entries.delete(id);
  }

  get size(): number {
    let n = 0;
    for (const m of this.#byTypes.values()) n += m.size;
    return n;
  }
}
