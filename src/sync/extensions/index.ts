// Extensions: extra streams in the same response, shared by MSC4186 and MSC3575. Each module
// computes its part from the same context and returns its data plus the positions to
// remember; the engine merges per-room positions into the connection's room memory.
import type { AccountDataPositions } from '../../cache/account-data-positions.js';
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
  /** Where users' global account data last changed (absent: always asked of the store). */
  accountData: AccountDataPositions | undefined;
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
  /** Room results of this response (rooms sent from scratch get receipts for their timeline), once built. */
  sentRooms: Record<string, RoomResult> | Promise<Record<string, RoomResult>>;
  /**
   * Rooms that may differ from what the connection holds (see sync/incremental.ts); the others
   * are up to date for every extension too. Undefined: any room may.
   */
  check: Set<string> | undefined;
  /** Each list's window as a set, when the engine has them (saves building scope sets). */
  listRoomSets: Map<string, ReadonlySet<string>> | undefined;
  scopeCache: Map<string, Scope>;
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
  return scoped(ctx, scope).ids;
}

/** The rooms in scope that may have something new for an extension (roomsInScope's order). */
export function roomsToExamine(
  ctx: ExtensionContext,
  scope: { lists: string[] | undefined; rooms: string[] | undefined },
): readonly string[] {
  const ids = scoped(ctx, scope).ids;
  const check = ctx.check;
  return check ? ids.filter((id) => check.has(id)) : ids;
}

/** roomsInScope as a set too (built once per scope, on first use). */
export function roomsInScopeSet(
  ctx: ExtensionContext,
  scope: { lists: string[] | undefined; rooms: string[] | undefined },
): ReadonlySet<string> {
  const s = scoped(ctx, scope);
  s.set ??= new Set(s.ids);
  return s.set;
}

function scoped(ctx: ExtensionContext, scope: { lists: string[] | undefined; rooms: string[] | undefined }): Scope {
  // Extensions usually share a scope; a window can hold thousands of rooms, so compute it once.
  const allLists = scope.lists === undefined || scope.lists.includes('*');
  const allRooms = scope.rooms === undefined || scope.rooms.includes('*');
  const memoKey = JSON.stringify([allLists ? '*' : scope.lists, allRooms ? '*' : scope.rooms]);
  const cached = ctx.scopeCache.get(memoKey);
  if (cached) return cached;
  const named = [...ctx.listRooms].filter(([name]) => allLists || scope.lists?.includes(name));
  const lists = named.map(([, ids]) => ids);
  const extra = allRooms ? ctx.subscribedRooms : scope.rooms;
  let result: Scope;
  if (lists.length === 1 && (extra?.length ?? 0) === 0) {
    // One list's window (each room once) and nothing else: no copy.
    result = { ids: lists[0] as string[], set: ctx.listRoomSets?.get((named[0] as [string, string[]])[0]) };
  } else {
    const out = new Set<string>();
    for (const ids of lists) for (const id of ids) out.add(id);
    if (allRooms) {
      for (const id of ctx.subscribedRooms) out.add(id);
    } else {
      const inAnyScope = new Set([...[...ctx.listRooms.values()].flat(), ...ctx.subscribedRooms]);
      for (const id of scope.rooms ?? []) if (inAnyScope.has(id)) out.add(id);
    }
    result = { ids: [...out], set: out };
  }
  ctx.scopeCache.set(memoKey, result);
  return result;
}

interface Scope {
  ids: string[];
  set: ReadonlySet<string> | undefined;
}

const MODULES: Record<string, (ctx: ExtensionContext) => Promise<ExtensionOutput | undefined>> = {
  to_device: toDeviceExtension,
  e2ee: e2eeExtension,
  account_data: accountDataExtension,
  receipts: receiptsExtension,
  typing: typingExtension,
};

export class Extensions {
  constructor(
    private readonly typing: TypingCache,
    private readonly accountData?: AccountDataPositions,
  ) {}

  async compute(ctx: Omit<ExtensionContext, 'typing' | 'scopeCache' | 'accountData'>): Promise<ExtensionResult> {
    const full: ExtensionContext = { ...ctx, typing: this.typing, accountData: this.accountData, scopeCache: new Map() };
    const result: ExtensionResult = { data: {}, positions: { ...ctx.positions }, rooms: new Map(), wakes: false };
    // Independent of each other: their queries run concurrently, results merge in a fixed order.
    const outputs = await Promise.all(Object.values(MODULES).map((compute) => compute(full)));
    for (const [i, name] of Object.keys(MODULES).entries()) {
      const out = outputs[i];
      if (!out) continue;
      if (out.data !== undefined) result.data[name] = out.data;
      result.wakes ||= out.wakes;
      Object.assign(result.positions, out.positions);
      for (const [roomId, update] of out.rooms ?? []) result.rooms.set(roomId, { ...result.rooms.get(roomId), ...update });
    }
    return result;
  }
}
