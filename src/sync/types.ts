// The engine's protocol-neutral request and response. http/ adapts MSC4186 (and later MSC3575)
// wire shapes to these.
//
// Glossary:
// - pos: names a connection position; the client echoes the last one it processed.
// - list: a filtered, recency-ordered view of the user's rooms; `ranges` pick windows of it.
// - room subscription: a room the client asks for directly, whatever the lists say.
// - required_state: [type, state_key] pairs of state to return (with *, $ME, $LAZY).
// - extension: an extra stream in the same response (to_device, e2ee, account_data, ...).
// - stream position: our global position (store/); a connection remembers, per room, the
//   position it has sent that room up to.
import type { RawJson } from './json.js';

export interface RoomConfig {
  timelineLimit: number;
  requiredState: [string, string][];
}

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
}

export interface ListRequest extends RoomConfig {
  /** Inclusive ranges; undefined = the whole list. */
  ranges: [number, number][] | undefined;
  filters: ListFilters | undefined;
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
  connId: string;
  pos: string | undefined;
  timeoutMs: number;
  lists: Map<string, ListRequest>;
  roomSubscriptions: Map<string, RoomConfig>;
  unsubscribeRooms: string[];
  extensions: ExtensionsRequest;
}

export interface ListResult {
  count: number;
  ops: { op: 'SYNC'; range: [number, number]; room_ids: string[] }[];
}

/** A room result with fields named as on the MSC4186 wire; events are raw JSON. */
export interface RoomResult {
  initial?: true;
  name?: string;
  avatar?: string;
  heroes?: { user_id: string; displayname?: string; avatar_url?: string }[];
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
  bump_stamp?: number;
  invite_state?: RawJson;
  unstable_expanded_timeline?: true;
}

export interface SyncResponse {
  pos: string;
  lists: Record<string, ListResult>;
  rooms: Record<string, RoomResult>;
  extensions: Record<string, unknown>;
}
