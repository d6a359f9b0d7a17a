// The seam between the engine and the two protocols. The engine (engine.ts, room-builder.ts,
// connections.ts, extensions/) does what both share: connections and positions, candidate
// rooms and configs, room building, extensions, long-poll waiting. Where MSC4186 and MSC3575
// differ it asks the request's protocol, one object per protocol (sync/msc4186/, sync/msc3575/),
// chosen once per request; nothing outside those folders tells the protocols apart.
import type { RoomMeta } from '../cache/room-meta-cache.js';
import type { UserCache, UserRoom } from '../cache/user-cache.js';
import type { Connection, ExtensionPositions, RoomSent } from './connections.js';
import type { StateConfig } from './required-state.js';
import type { BuildContext, RoomPlan } from './room-builder.js';
import type { Protocol, RoomConfig, RoomResult, SyncRequest, SyncResponse } from './types.js';

/** A room's config for one response: the union of the lists' and subscriptions' that hold it. */
export interface EffectiveConfig {
  timelineLimit: number;
  state: StateConfig;
  /** stateConfigKey(state): rooms remember their config by it. */
  key: string;
  includeHeroes?: boolean;
  /** The bump_event_types of the (first) list the room is in (MSC3575 `timestamp`). */
  bumpEventTypes?: string[];
}

/** The lists of a response, the rooms in their windows, and what the connection remembers of them. */
export interface Windows {
  lists: SyncResponse['lists'];
  listRooms: Map<string, string[]>;
  /** The protocol's own memory of the lists, committed with the response. */
  memory: Partial<ExtensionPositions>;
  /** Some list changed in a way that alone answers a long-poll (MSC3575 ops or a new count). */
  changed: boolean;
}

/** Which rooms a response considers beyond its windows and subscriptions, and how. */
export interface Scope {
  /** Rooms in no window that still get sent, with the config they get. */
  extraRooms(configs: ReadonlyMap<string, EffectiveConfig>): Iterable<[string, EffectiveConfig]>;
  /** Whether a room the connection has sent before goes out from scratch again. */
  reentered(roomId: string, room: UserRoom): boolean;
}

/** A joined or left room being built: its metadata goes into `result`, and what was sent into `sent`. */
export interface RoomInBuild {
  plan: RoomPlan;
  room: UserRoom;
  meta: RoomMeta | undefined;
  result: RoomResult;
  sent: RoomSent;
  fromScratch: boolean;
}

/** How a protocol fills in a room's metadata; the engine builds timeline and state. */
export interface RoomRules {
  /** Fields of an invited or knocked room besides its stripped state. */
  invite(ctx: BuildContext, plan: RoomPlan, room: UserRoom, result: RoomResult): void;
  /** Name, avatar, heroes, counts, DM flag and recency, from scratch or as changes since `plan.sent`. */
  metadata(ctx: BuildContext, room: RoomInBuild): Promise<void>;
}

export interface SyncProtocol {
  readonly name: Protocol;
  /** The key a client's conn_id is kept under: the protocols' connections never mix. */
  connectionId(connId: string): string;
  /**
   * The request as it applies to this connection (MSC3575: its sticky changes merged into what
   * was confirmed), and what of it the connection remembers.
   */
  effectiveRequest(conn: Connection, req: SyncRequest): { req: SyncRequest; memory: Partial<ExtensionPositions> };
  /** The room subscriptions in force after this request, given those held before it. */
  subscriptions(held: readonly [string, RoomConfig][] | undefined, req: SyncRequest): [string, RoomConfig][];
  /**
   * Whether a response may check only the rooms that changed since the last (incremental.ts):
   * true when nothing but the user's change log and the windows decides what a room gets.
   */
  readonly incremental: boolean;
  /** The lists' windows over the user's rooms now. */
  windows(conn: Connection, user: UserCache, req: SyncRequest, upTo: number): Promise<Windows>;
  /** This response's scope rules; `previousConfig` reads a config the connection remembers. */
  scope(conn: Connection, user: UserCache, previousConfig: (key: string) => StateConfig | undefined): Scope;
  /** Prepares what the rooms being sent need (names, timestamps) and returns the rules that use it. */
  roomRules(user: UserCache, plans: readonly RoomPlan[], configs: ReadonlyMap<string, EffectiveConfig>, upTo: number): Promise<RoomRules>;
}
