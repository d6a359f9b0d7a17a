// Extensions: extra streams in the same response, shared by MSC4186 and MSC3575. Each module
// computes its part from the same context and returns its data plus the positions to
// remember; the engine merges per-room positions into the connection's room memory.
import type { RoomMetaCache } from '../../cache/room-meta-cache.js';
import type { TypingCache } from '../../cache/typing-cache.js';
import type { UserCache } from '../../cache/user-cache.js';
import type { Pool } from '../../store/db.js';
import type { ExtensionPositions, RoomSent } from '../connections.js';
import type { ExtensionsRequest, RoomResult } from '../types.js';
import { accountDataExtension } from './account-data.js';
import { e2eeExtension } from './e2ee.js';
import { receiptsExtension } from './receipts.js';
import { toDeviceExtension } from './to-device.js';
import { typingExtension } from './typing.js';

export interface ExtensionContext {
  pool: Pool;
  typing: TypingCache;
  device: { userId: string; deviceId: string };
  user: UserCache;
  metas: RoomMetaCache;
  request: ExtensionsRequest;
  /** Confirmed connection-wide positions. */
  positions: ExtensionPositions;
  /** What the connection has sent per room (confirmed). */
  roomsSent: Map<string, RoomSent>;
  /** The request had no pos. */
  initial: boolean;
  from: number;
  upTo: number;
  listRooms: Map<string, string[]>;
  subscribedRooms: string[];
  /** Room results of this response (rooms sent from scratch get receipts for their timeline). */
  sentRooms: Record<string, RoomResult>;
  scopeCache: Map<string, string[]>;
}

export interface ExtensionOutput {
  /** undefined: nothing to say (the key is left out of the response). */
  data: unknown;
  /** Whether this data alone should end a long-poll. */
  wakes: boolean;
  positions?: Partial<ExtensionPositions>;
  rooms?: Map<string, Partial<RoomSent>>;
}

export interface ExtensionResult {
  data: Record<string, unknown>;
  positions: ExtensionPositions;
  rooms: Map<string, Partial<RoomSent>>;
  wakes: boolean;
}

/**
 * Rooms in scope of a per-room extension. Absent lists or rooms mean all ("*"); [] means none.
 * Handles lists with zero, one or several ranges (Synapse only copes with exactly one).
 */
export function roomsInScope(ctx: ExtensionContext, scope: { lists: string[] | undefined; rooms: string[] | undefined }): string[] {
  // Extensions usually share a scope; a window can hold thousands of rooms, so compute it once.
  const memoKey = JSON.stringify([scope.lists, scope.rooms]);
  const cached = ctx.scopeCache.get(memoKey);
  if (cached) return cached;
  const out = new Set<string>();
  const allLists = scope.lists === undefined || scope.lists.includes('*');
  for (const [name, ids] of ctx.listRooms) if (allLists || scope.lists?.includes(name)) for (const id of ids) out.add(id);
  if (scope.rooms === undefined || scope.rooms.includes('*')) {
    for (const id of ctx.subscribedRooms) out.add(id);
  } else {
    const inAnyScope = new Set([...[...ctx.listRooms.values()].flat(), ...ctx.subscribedRooms]);
    for (const id of scope.rooms) if (inAnyScope.has(id)) out.add(id);
  }
  const result = [...out];
  ctx.scopeCache.set(memoKey, result);
  return result;
}

const MODULES: Record<string, (ctx: ExtensionContext) => Promise<ExtensionOutput | undefined>> = {
  to_device: toDeviceExtension,
  e2ee: e2eeExtension,
  account_data: accountDataExtension,
  receipts: receiptsExtension,
  typing: typingExtension,
};

export class Extensions {
  constructor(private readonly typing: TypingCache) {}

  async compute(ctx: Omit<ExtensionContext, 'typing' | 'scopeCache'>): Promise<ExtensionResult> {
    const full: ExtensionContext = { ...ctx, typing: this.typing, scopeCache: new Map() };
    const result: ExtensionResult = { data: {}, positions: { ...ctx.positions }, rooms: new Map(), wakes: false };
    for (const [name, compute] of Object.entries(MODULES)) {
      const out = await compute(full);
      if (!out) continue;
      if (out.data !== undefined) result.data[name] = out.data;
      result.wakes ||= out.wakes;
      Object.assign(result.positions, out.positions);
      for (const [roomId, update] of out.rooms ?? []) result.rooms.set(roomId, { ...result.rooms.get(roomId), ...update });
    }
    return result;
  }
}
