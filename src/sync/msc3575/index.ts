// MSC3575 (the Go proxy's sliding sync) as the engine asks it: sticky request parameters and
// room subscriptions, lists in their own sorts with ops against what the client holds, the
// calculated names and `timestamp` (rooms.ts), and rooms that re-enter the client's windows
// sent from scratch. Its per-user memory (names, sort orders) is in user-memory.ts, the shared
// bump events in bump-cache.ts.
import type { RoomMetaCache } from '../../cache/room-meta-cache.js';
import type { UserCache } from '../../cache/user-cache.js';
import type { Pool } from '../../store/db.js';
import type { Connection, RoomSent } from '../connections.js';
import { matchesFilters } from '../lists.js';
import type { EffectiveConfig, RoomRules, Scope, SyncProtocol, Windows } from '../protocol.js';
import { compileRequiredState, type StateConfig } from '../required-state.js';
import type { RoomPlan } from '../room-builder.js';
import type { SyncRequest, SyncResponse } from '../types.js';
import { BumpCache } from './bump-cache.js';
import { computeListOps, isListable, type ListMemory } from './lists.js';
import { ensureNames } from './names.js';
import { msc3575Rooms } from './rooms.js';
import { sortedRooms } from './sort.js';
import { applySticky, type StickyState } from './sticky.js';
import { UserMemories } from './user-memory.js';

/** MSC3575 connections are kept apart from MSC4186 ones with the same conn_id. */
const CONN_PREFIX = '\u0001msc3575:';
/** Most to-device messages per response, as its clients ask for (and the Go proxy's default). */
const TO_DEVICE_MAX = 100;

export interface Msc3575 extends SyncProtocol {
  /** Rooms no cached user holds any more: their bump entries go. */
  forget(roomIds: Iterable<string>): void;
}

export function createMsc3575(pool: Pool, metas: RoomMetaCache): Msc3575 {
  const bumps = new BumpCache(pool, metas);
  const memories = new UserMemories();

  /** Each list in its own sort, ops against what the client holds, remembered per list. */
  async function windows(conn: Connection, user: UserCache, req: SyncRequest, upTo: number): Promise<Windows> {
    const memory = memories.of(user);
    const candidates = user.order.filter((id) => isListable(id, user, metas));
    const needsNames = [...req.lists.values()].some((l) => l.sort?.includes('by_name') || l.filters?.roomNameLike !== undefined);
    if (needsNames) await ensureNames({ pool, user, metas, names: memory.names }, candidates);
    const nameOf = (id: string) => memory.names.get(id)?.name;
    // Keyed by client-chosen list names: no prototype, so `toString` or `__proto__` are names like any other.
    const lists: SyncResponse['lists'] = Object.create(null);
    const listRooms = new Map<string, string[]>();
    const remembered: Record<string, ListMemory> = Object.create(null);
    const before = conn.ext.lists as Record<string, ListMemory> | undefined;
    let changed = false;
    for (const [name, list] of req.lists) {
      const sort = list.sort ?? ['by_recency'];
      const bumpTypes = list.bumpEventTypes ?? [];
      const bump = bumpTypes.length ? await bumps.ensure(bumpTypes, candidates, upTo) : undefined;
      const ordered = sortedRooms(sort, bumpTypes, candidates, { user, memory, metas, bump });
      const filtered = list.filters ? ordered.filter((id) => matchesFilters(id, list.filters, user, metas, nameOf)) : ordered;
      const window = computeListOps(list, filtered, before && Object.hasOwn(before, name) ? before[name] : undefined);
      lists[name] = window.result;
      listRooms.set(name, window.roomIds);
      remembered[name] = window.memory;
      changed ||= window.changed;
    }
    return { lists, listRooms, memory: { lists: remembered }, changed };
  }

  /** `timestamp`: the latest bump event (of the first list's bump_event_types that holds the room). */
  async function timestamps(plans: readonly RoomPlan[], configs: ReadonlyMap<string, EffectiveConfig>, upTo: number) {
    const byTypes = new Map<string, { types: string[]; roomIds: string[] }>();
    for (const p of plans) {
      const types = configs.get(p.roomId)?.bumpEventTypes ?? [];
      const k = types.join('\0');
      const g = byTypes.get(k) ?? { types, roomIds: [] };
      byTypes.set(k, g);
      g.roomIds.push(p.roomId);
    }
    const out = new Map<string, number>();
    for (const g of byTypes.values()) {
      const bump = await bumps.ensure(g.types, g.roomIds, upTo);
      for (const id of g.roomIds) {
        const ts = bump(id)?.ts;
        if (ts) out.set(id, ts);
      }
    }
    return out;
  }

  return {
    name: 'msc3575',
    connectionId: (connId) => `${CONN_PREFIX}${connId}`,
    effectiveRequest(conn, req) {
      if (!req.sticky) return { req, memory: {} };
      const merged = applySticky(conn.ext.sticky as StickyState | undefined, req.sticky, TO_DEVICE_MAX);
      return { req: { ...req, lists: merged.lists, extensions: merged.extensions }, memory: { sticky: merged.state } };
    },
    // Subscriptions stay until unsubscribed.
    subscriptions(held, req) {
      const subs = new Map(held ?? []);
      for (const [roomId, cfg] of req.roomSubscriptions) subs.set(roomId, cfg);
      for (const roomId of req.unsubscribeRooms) subs.delete(roomId);
      return [...subs];
    },
    incremental: false,
    windows,
    scope: (conn, user, previousConfig) => scope(conn, user, previousConfig),
    async roomRules(user, plans, configs, upTo): Promise<RoomRules> {
      const stamps = await timestamps(plans, configs, upTo);
      const { names } = memories.of(user);
      await ensureNames(
        { pool, user, metas, names },
        plans.map((p) => p.roomId),
      );
      return msc3575Rooms(names, stamps);
    },
    forget: (roomIds) => bumps.forget(roomIds),
  };
}

/**
 * A room that left every window because the user left it still gets its last events (the
 * leave), as it was configured then; a joined room that re-enters the client's windows is sent
 * from scratch, where MSC4186 sends the delta.
 */
function scope(conn: Connection, user: UserCache, previousConfig: (key: string) => StateConfig | undefined): Scope {
  // Every room the client held in a window or a subscription after the confirmed response.
  const held = new Set<string>();
  for (const m of Object.values((conn.ext.lists ?? {}) as Record<string, ListMemory>))
    for (const part of m.view.ids) for (const id of part) held.add(id);
  for (const [id] of conn.ext.subs ?? []) held.add(id);
  const from = conn.stream;
  return {
    *extraRooms(configs) {
      for (const id of held) {
        const room = user.rooms.get(id);
        const newlyLeft =
          !configs.has(id) && room !== undefined && room.membership !== 'join' && room.membershipPos > from && conn.rooms.has(id);
        if (newlyLeft) yield [id, lastConfig(conn.rooms.get(id) as RoomSent, previousConfig)];
      }
    },
    reentered: (roomId, room) => !held.has(roomId) && room.membership === 'join',
  };
}

function lastConfig(sent: RoomSent, previousConfig: (key: string) => StateConfig | undefined): EffectiveConfig {
  const state = previousConfig(sent.rs) ?? compileRequiredState([], '');
  return { timelineLimit: sent.tl, state, key: sent.rs };
}
