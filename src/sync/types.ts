// The engine's protocol-neutral request and response. http/ adapts the MSC4186 and MSC3575
// wire shapes to and from these; `protocol` names the module of rules in which the two differ
// (sync/msc4186/, sync/msc3575/: connection keys, sticky parameters, list ops and sorts, room
// names, what a room re-entering a window gets, per-room metadata), chosen once per request.
//
// Glossary:
// - pos: names a connection position; the client echoes the last one it processed.
// - list: a filtered, ordered view of the user's rooms (by recency unless `sort` says otherwise);
//   `ranges` pick windows of it.
// - room subscription: a room the client asks for directly, whatever the lists say.
// - required_state: [type, state_key] pairs of state to return (with *, $ME, $LAZY).
// - extension: an extra stream in the same response (to_device, e2ee, account_data, ...).
// - stream position: our global position (store/); a connection remembers, per room, the
//   position it has sent that room up to.
import type { Hero } from './heroes.js';
import type { RawJson } from './json.js';

export type Protocol = 'msc4186' | 'msc3575';

export interface RoomConfig {
  timelineLimit: number;
  requiredState: [string, string][];
  /** Taken out of `requiredState` (the object form's `exclude`), same (type, key) shape. */
  requiredStateExclude?: [string, string][];
  /** MSC3575: send heroes (when the name is calculated). MSC4186 sends them for every unnamed room. */
  includeHeroes?: boolean;
  /** MSC3575: also send the predecessors (by tombstone) the user is joined to, with this config. */
  includeOldRooms?: { timelineLimit: number; requiredState: [string, string][] };
}

/** MSC3575 sort comparators, applied in order. */
export type SortBy = 'by_recency' | 'by_name' | 'by_notification_level' | 'by_notification_count' | 'by_highlight_count';

export interface ListFilters {
  isDm?: boolean;
  isEncrypted?: boolean;
  isInvite?: boolean;
  roomTypes?: (string | null)[];
  notRoomTypes?: (string | null)[];
  spaces?: string[];
  roomNameLike?: string;
  tags?: string[];
  notTags?: string[];
  /** MSC3575 (deprecated there): the room has a tombstone. */
  isTombstoned?: boolean;
}

export interface ListRequest extends RoomConfig {
  /** Inclusive ranges; undefined = the whole list. */
  ranges: [number, number][] | undefined;
  filters: ListFilters | undefined;
  /** MSC3575 sort; undefined = the fixed recency order of MSC4186. */
  sort?: SortBy[];
  /** MSC3575: the event types that count as activity for by_recency and `timestamp`; empty = all. */
  bumpEventTypes?: string[];
}

/** Extension requests as the engine sees them; absent = not requested this time. */
export interface ExtensionsRequest {
  toDevice?: { limit: number; since: string | undefined };
  e2ee?: Record<string, never>;
  accountData?: { lists: string[] | undefined; rooms: string[] | undefined };
  receipts?: { lists: string[] | undefined; rooms: string[] | undefined };
  typing?: { lists: string[] | undefined; rooms: string[] | undefined };
}

export interface SyncRequest {
  protocol: Protocol;
  connId: string;
  pos: string | undefined;
  timeoutMs: number;
  lists: Map<string, ListRequest>;
  roomSubscriptions: Map<string, RoomConfig>;
  unsubscribeRooms: string[];
  extensions: ExtensionsRequest;
  /**
   * MSC3575 sticky parameters: this request's changes to the lists and extensions the
   * connection remembers. When set, `lists` and `extensions` are computed from it.
   */
  sticky?: StickyDelta;
}

/** One list's changes: an absent field keeps its previous value. */
export interface ListDelta {
  ranges?: [number, number][];
  sort?: SortBy[];
  requiredState?: [string, string][];
  /** 0 keeps the previous value (MSC3575 cannot reset it to 0). */
  timelineLimit?: number;
  filters?: ListFilters;
  bumpEventTypes?: string[];
  includeHeroes?: boolean;
  includeOldRooms?: RoomConfig['includeOldRooms'];
  slowGetAllRooms?: boolean;
  deleted?: boolean;
}

/** One extension's changes; `since` is the to-device acknowledgement, `limit` its page size. */
export interface ExtensionDelta {
  enabled?: boolean;
  lists?: string[];
  rooms?: string[];
  limit?: number;
  since?: string;
}

export interface StickyDelta {
  lists: Map<string, ListDelta>;
  extensions: Partial<Record<ExtensionName, ExtensionDelta>>;
}

export type ExtensionName = 'to_device' | 'e2ee' | 'account_data' | 'receipts' | 'typing';

/** List operations as both wires carry them: MSC4186 sends only SYNC, MSC3575 all four (see msc3575/list-ops.ts). */
export type ListOp =
  | { op: 'SYNC'; range: [number, number]; room_ids: string[] }
  | { op: 'INVALIDATE'; range: [number, number] }
  | { op: 'DELETE'; index: number }
  | { op: 'INSERT'; index: number; room_id: string };

export interface ListResult {
  count: number;
  ops: ListOp[];
}

/**
 * A room result, the same for both protocols; http/ writes each protocol's wire shape from it.
 * Fields both wires carry alike keep their wire names (so the adapters pass them through); the
 * rest are named for what they are, and each protocol module fills those it sends.
 */
export interface RoomResult {
  initial?: true;
  name?: string;
  /** null: the avatar was removed (sent as a change). */
  avatar?: string | null;
  heroes?: Hero[];
  is_dm?: true;
  joined_count?: number;
  invited_count?: number;
  notification_count?: number;
  highlight_count?: number;
  required_state?: RawJson[];
  timeline?: RawJson[];
  limited?: boolean;
  prev_batch?: string;
  num_live?: number;
  invite_state?: RawJson;
  unstable_expanded_timeline?: true;
  /** Where the room stands in recency: a stream position (MSC4186 `bump_stamp`). */
  bumpPos?: number;
  /** origin_server_ts of the latest bump event, never before the user's join (MSC3575 `timestamp`). */
  bumpTs?: number;
}

export interface SyncResponse {
  pos: string;
  lists: Record<string, ListResult>;
  rooms: Record<string, RoomResult>;
  extensions: Record<string, unknown>;
}
