// MSC3575 sticky request parameters. A client sends each list's and extension's parameters
// once and afterwards only what changes (matrix-js-sdk 37 sends just `ranges`, and extensions'
// `enabled` only on its first request), so the connection remembers them. The remembered state
// is committed with the response like the rest of the connection's memory: a retried `pos`
// applies its changes to what was confirmed, never to a response the client did not get.
import type {
  ExtensionDelta,
  ExtensionName,
  ExtensionsRequest,
  ListDelta,
  ListFilters,
  ListRequest,
  RoomConfig,
  SortBy,
  StickyDelta,
} from '../types.js';

/** A list as remembered: every field resolved. */
export interface StickyList {
  ranges: [number, number][] | undefined;
  sort: SortBy[];
  requiredState: [string, string][];
  timelineLimit: number;
  filters: ListFilters | undefined;
  bumpEventTypes: string[];
  includeHeroes: boolean;
  includeOldRooms: RoomConfig['includeOldRooms'];
  slowGetAllRooms: boolean;
}

export interface StickyState {
  lists: Record<string, StickyList>;
  extensions: Partial<Record<ExtensionName, ExtensionDelta>>;
}

const NEW_LIST: StickyList = {
  ranges: undefined,
  sort: ['by_recency'],
  requiredState: [],
  timelineLimit: 0,
  filters: undefined,
  bumpEventTypes: [],
  includeHeroes: false,
  includeOldRooms: undefined,
  slowGetAllRooms: false,
};

/** Copies the fields a delta sets; `undefined` never overwrites. */
function overlay<T extends object>(base: T, delta: Partial<T>): T {
  const out = { ...base };
  for (const [k, v] of Object.entries(delta)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}

function mergeList(prev: StickyList | undefined, delta: ListDelta): StickyList {
  const { deleted: _, timelineLimit, ...rest } = delta;
  const merged = overlay(prev ?? NEW_LIST, rest);
  // timeline_limit 0 means "unchanged" in MSC3575.
  if (timelineLimit) merged.timelineLimit = timelineLimit;
  return merged;
}

function toListRequest(l: StickyList): ListRequest {
  return {
    // slow_get_all_rooms, or no ranges at all: the whole list.
    ranges: l.slowGetAllRooms ? undefined : l.ranges,
    filters: l.filters,
    sort: l.sort,
    bumpEventTypes: l.bumpEventTypes,
    timelineLimit: l.timelineLimit,
    requiredState: l.requiredState,
    includeHeroes: l.includeHeroes,
    includeOldRooms: l.includeOldRooms,
  };
}

function toExtensions(ext: StickyState['extensions'], toDeviceMax: number): ExtensionsRequest {
  const out: ExtensionsRequest = {};
  const scope = (e: ExtensionDelta) => ({ lists: e.lists, rooms: e.rooms });
  const { to_device, e2ee, account_data, receipts, typing } = ext;
  if (to_device?.enabled) out.toDevice = { limit: Math.min(to_device.limit ?? toDeviceMax, toDeviceMax), since: to_device.since };
  if (e2ee?.enabled) out.e2ee = {};
  if (account_data?.enabled) out.accountData = scope(account_data);
  if (receipts?.enabled) out.receipts = scope(receipts);
  if (typing?.enabled) out.typing = scope(typing);
  return out;
}

/** Applies a request's changes to the remembered parameters; returns both the new state and the effective request. */
export function applySticky(
  prev: StickyState | undefined,
  delta: StickyDelta,
  toDeviceMax: number,
): { state: StickyState; lists: Map<string, ListRequest>; extensions: ExtensionsRequest } {
  // Keyed by client-chosen names: no prototype, so `toString` or `__proto__` are lists like any other.
  const lists: Record<string, StickyList> = Object.assign(Object.create(null), prev?.lists);
  for (const [name, d] of delta.lists) {
    if (d.deleted) delete lists[name];
    else lists[name] = mergeList(lists[name], d);
  }
  const extensions: StickyState['extensions'] = { ...prev?.extensions };
  for (const [name, d] of Object.entries(delta.extensions) as [ExtensionName, ExtensionDelta][]) {
    extensions[name] = overlay(extensions[name] ?? {}, d);
  }
  const state = { lists, extensions };
  return {
    state,
    lists: new Map(Object.entries(lists).map(([name, l]) => [name, toListRequest(l)])),
    extensions: toExtensions(extensions, toDeviceMax),
  };
}
