// The sliding sync engine: one request in, one response out, whatever the wire protocol.
// Compute first; return at once when there is data, no pos, or timeout 0; otherwise wait for
// bus activity relevant to this user and recompute, until data or the timeout.

import type { Bus } from '../bus/bus.js';
import type { BumpCache } from '../cache/bump-cache.js';
import type { RoomMetaCache } from '../cache/room-meta-cache.js';
import type { RoomStates } from '../cache/room-states.js';
import type { RoomTimelines } from '../cache/room-timelines.js';
import type { StreamTracker } from '../cache/stream-tracker.js';
import type { UserCache, UserCaches } from '../cache/user-cache.js';
import type { VisibilityHistories } from '../cache/visibility-histories.js';
import { superseded, unknownPos, unknownToken } from '../matrix-error.js';
import type { Pool } from '../store/db.js';
import type { Logger } from '../telemetry/logger.js';
import type { Connection, ConnectionManager, ExtensionPositions, RoomSent } from './connections.js';
import { Dispatcher, type WakeReason } from './dispatcher.js';
import type { Extensions } from './extensions/index.js';
import { type ResponseMemo, responseShape, roomsToCheck, usableMemo } from './incremental.js';
import { computeList, computeListOps, isListable, isListable3575, type ListMemory, matchesFilters } from './lists.js';
import { ensureNames } from './names.js';
import {
  compileRequiredState,
  deserializeStateConfig,
  type StateConfig,
  serializeStateConfig,
  stateConfigGrew,
  stateConfigKey,
  unionStateConfigs,
} from './required-state.js';
import { type BuildContext, buildRooms, type RoomPlan } from './room-builder.js';
import { sortedRooms } from './sort.js';
import { applySticky, type StickyState } from './sticky.js';
import type { RoomConfig, SyncRequest, SyncResponse } from './types.js';
import { WakePacer } from './wake-pacer.js';

/** MSC3575 connections are kept apart from MSC4186 ones with the same conn_id. */
const MSC3575_CONN_PREFIX = '\u0001msc3575:';
/** Most to-device messages per response, as both protocols' clients ask for (and the Go proxy's default). */
const TO_DEVICE_MAX = 100;

export interface Device {
  userId: string;
  deviceId: string;
}

/** Filled in by sync() for metrics and the access log: time spent long-poll waiting, in ms. */
export interface SyncTiming {
  waitMs: number;
}

export interface EngineDeps {
  pool: Pool;
  bus: Bus;
  logger: Logger;
  users: UserCaches;
  metas: RoomMetaCache;
  stream: StreamTracker;
  connections: ConnectionManager;
  extensions: Extensions;
  bumps: BumpCache;
  /** Shared in-memory reads for live deltas (absent: from the store). */
  histories?: VisibilityHistories;
  timelines?: RoomTimelines;
  states?: RoomStates;
  /**
   * Called each time a request starts waiting for news (its latest computation had nothing to
   * send): tests use it to act exactly when a long-poll is parked, instead of sleeping.
   */
  onWait?: (device: Device, connId: string) => void;
  /** Exact prev_batch tokens from the homeserver (see poller/exact-prev-batch.ts); absent: the nearest stored one. */
  exactPrevBatch?: (device: Device, roomId: string, event: { nid: number; eventId: string }) => Promise<string | undefined>;
}

interface Computed {
  response: Omit<SyncResponse, 'pos'>;
  sent: Map<string, RoomSent>;
  ext: ExtensionPositions;
  stream: number;
  hasData: boolean;
  /** Rooms with something to send (the far-behind rule counts them). */
  roomsToSend: number;
  /** MSC4186: what the next response needs to be computed incrementally. */
  memo?: ResponseMemo;
}

interface EffectiveConfig {
  timelineLimit: number;
  state: StateConfig;
  /** stateConfigKey(state): rooms remember their config by it. */
  key: string;
  includeHeroes?: boolean;
  /** MSC3575: the bump_event_types of the (first) list the room is in, for `timestamp`. */
  bumpEventTypes?: string[];
}

/** A room in several lists and subscriptions gets the union of their configs. */
function mergeConfigs(a: EffectiveConfig, b: EffectiveConfig): EffectiveConfig {
  const merged = { ...a, includeHeroes: a.includeHeroes || b.includeHeroes, bumpEventTypes: a.bumpEventTypes ?? b.bumpEventTypes };
  if (a.key === b.key) return { ...merged, timelineLimit: Math.max(a.timelineLimit, b.timelineLimit) };
  const state = unionStateConfigs(a.state, b.state);
  return { ...merged, timelineLimit: Math.max(a.timelineLimit, b.timelineLimit), state, key: stateConfigKey(state) };
}

/** The lists of a response, the rooms in their windows, and what the connection remembers of them. */
interface Windows {
  lists: SyncResponse['lists'];
  listRooms: Map<string, string[]>;
  memory: Pick<ExtensionPositions, 'lists'>;
  /** MSC3575: some list has ops or a new count (that alone answers a long-poll). */
  changed: boolean;
}

/** Why work stopped: a newer request on the connection (a Matrix error), or the client's own abort. */
function stopReason(signal: AbortSignal, abortedByNewer: AbortSignal): unknown {
  return abortedByNewer.aborted ? superseded() : (signal.reason ?? new Error('aborted'));
}

/** Deserialises each remembered config at most once per computation. */
function memoConfigs(stored: Record<string, string[][]>): (key: string) => StateConfig | undefined {
  const cache = new Map<string, StateConfig>();
  return (key) => {
    const hit = cache.get(key);
    if (hit) return hit;
    const entries = stored[key];
    if (!entries) return undefined;
    const cfg = deserializeStateConfig(entries);
    cache.set(key, cfg);
    return cfg;
  };
}

export class SyncEngine {
  /** Aborted on shutdown: waiting long-polls end as at their timeout, so clients resume elsewhere. */
  readonly #stopping = new AbortController();
  readonly #dispatcher: Dispatcher;
  readonly #pacer = new WakePacer();

  constructor(private readonly deps: EngineDeps) {
    this.#dispatcher = new Dispatcher(deps.bus, (roomId) => deps.users.usersOf(roomId));
  }

  /** Routes bus messages to waiting requests (the user caches keep the users who wait in memory). */
  get dispatcher(): Dispatcher {
    return this.#dispatcher;
  }

  /** Shutdown: every long-poll answers now with what it has, and none starts waiting. */
  stopWaiting(): void {
    this.#stopping.abort();
  }

  async sync(device: Device, request: SyncRequest, signal: AbortSignal, timing?: SyncTiming): Promise<SyncResponse> {
    // The protocols' connections never mix: one's pos is unknown to the other.
    const connId = request.protocol === 'msc3575' ? `${MSC3575_CONN_PREFIX}${request.connId}` : request.connId;
    const key = { ...device, connId };
    // One request per connection at a time: a newer one (the client gave up on the old
    // long-poll, or retried) aborts the older, which then commits nothing. Resolving the pos
    // and taking over the connection are one step per connection key (see exclusive()), so
    // racing requests are served one after the other, each as its pos deserves.
    const abort = new AbortController();
    const done = Promise.withResolvers<void>();
    const { conn, previous } = await this.deps.connections.exclusive(key, async () => {
      const previous = this.deps.connections.peek(key)?.inFlight;
      const conn = await this.deps.connections.resolve(key, request.pos);
      previous?.abort.abort();
      conn.inFlight = { abort, done: done.promise };
      return { conn, previous };
    });
    try {
      await previous?.done;
      const { req, sticky } = this.#withSticky(conn, request);
      const linked = AbortSignal.any([signal, abort.signal]);
      return await this.#run(conn, device, req, sticky, linked, abort.signal, timing);
    } finally {
      done.resolve();
      if (conn.inFlight?.abort === abort) conn.inFlight = undefined;
    }
  }

  async #run(
    conn: Connection,
    device: Device,
    req: SyncRequest,
    sticky: StickyState | undefined,
    signal: AbortSignal,
    abortedByNewer: AbortSignal,
    timing?: SyncTiming,
  ): Promise<SyncResponse> {
    this.#applySubscriptions(conn, req);
    // Watch before computing: a message ingested while we compute must still wake the wait.
    const activity = this.#watch(device, req);
    try {
      let computed = await this.#compute(conn, device, req);
      // A client back after a long absence with a huge catch-up is better served starting
      // over with a small window (Synapse's rule).
      if (req.pos !== undefined && this.deps.connections.tooFarBehind(conn, computed.roomsToSend)) {
        await this.deps.connections.expire(conn);
        throw unknownPos();
      }
      if (sticky) computed.ext.sticky = sticky;
      const deadline = Date.now() + req.timeoutMs;
      const stopping = this.#stopping.signal;
      while (!computed.hasData && req.pos !== undefined && Date.now() < deadline && !stopping.aborted) {
        const waitStart = performance.now();
        this.deps.onWait?.(device, req.connId);
        const woke = await activity.next(deadline - Date.now(), AbortSignal.any([signal, stopping]));
        if (timing) timing.waitMs += performance.now() - waitStart;
        if (signal.aborted) throw stopReason(signal, abortedByNewer);
        if (woke === 'expired') throw unknownToken(false);
        computed = await this.#compute(conn, device, req);
      }
      if (signal.aborted) throw stopReason(signal, abortedByNewer);
      return await this.#respond(conn, computed);
    } finally {
      activity.dispose();
    }
  }

  async #respond(conn: Connection, computed: Computed): Promise<SyncResponse> {
    const pos = await this.deps.connections.commit(
      conn,
      computed.stream,
      computed.sent,
      { ...computed.ext, subs: conn.ext.subs },
      computed.memo,
    );
    return { pos, ...computed.response };
  }

  /** MSC3575: the request's changes applied to the confirmed sticky parameters. */
  #withSticky(conn: Connection, req: SyncRequest): { req: SyncRequest; sticky: StickyState | undefined } {
    if (!req.sticky) return { req, sticky: undefined };
    const merged = applySticky(conn.ext.sticky, req.sticky, TO_DEVICE_MAX);
    return { req: { ...req, lists: merged.lists, extensions: merged.extensions }, sticky: merged.state };
  }

  /**
   * MSC4186 room subscriptions are those of the request carrying them, as in Synapse: rust-sdk
   * sends its whole set every time and ends one by leaving it out (a room left out keeps its
   * connection memory, so a re-subscription gets a delta). MSC3575's stay until unsubscribed.
   */
  #applySubscriptions(conn: Connection, req: SyncRequest) {
    const subs = new Map(req.protocol === 'msc3575' ? (conn.ext.subs ?? []) : []);
    for (const [roomId, cfg] of req.roomSubscriptions) subs.set(roomId, cfg);
    for (const roomId of req.unsubscribeRooms) subs.delete(roomId);
    conn.ext.subs = [...subs];
  }

  async #compute(conn: Connection, device: Device, req: SyncRequest): Promise<Computed> {
    // The change log position before any cache is read: whatever is logged later is checked
    // again by the next response.
    const cached = this.deps.users.peek(device.userId);
    const seq = cached?.changeSeq ?? 0;
    const upTo = this.deps.stream.current;
    const user = await this.deps.users.get(device.userId);
    const from = conn.stream;
    const msc3575 = req.protocol === 'msc3575';

    // Configs are compiled once per list, not per room: a window may hold thousands of rooms.
    const compile = (cfg: RoomConfig, bumpEventTypes?: string[]): EffectiveConfig => {
      const state = compileRequiredState(cfg.requiredState, device.userId, cfg.requiredStateExclude);
      return { timelineLimit: cfg.timelineLimit, state, key: stateConfigKey(state), includeHeroes: cfg.includeHeroes, bumpEventTypes };
    };
    const configs = new Map<string, EffectiveConfig>();
    const addConfig = (roomId: string, cfg: EffectiveConfig) => {
      const prev = configs.get(roomId);
      configs.set(roomId, prev ? mergeConfigs(prev, cfg) : cfg);
    };
    const addOldRooms = (roomId: string, cfg: RoomConfig) => {
      if (!cfg.includeOldRooms) return;
      const old = compile({ ...cfg.includeOldRooms, includeHeroes: cfg.includeHeroes });
      for (const pred of this.#predecessors(user, roomId)) addConfig(pred, old);
    };

    const windows = msc3575 ? await this.#lists3575(conn, user, req, upTo) : this.#lists4186(conn, user, req);
    // MSC4186: only rooms that may differ from what the connection holds are looked at
    // (`check`; undefined: every room), see incremental.ts.
    let check: Set<string> | undefined;
    let memo: ResponseMemo | undefined;
    if (!msc3575) {
      const shape = responseShape(req, conn.ext.subs);
      const base = usableMemo(conn.memo, user, shape, req);
      const diff = roomsToCheck(base, user, windows.listRooms);
      check = diff.check;
      memo = { user, seq: cached === user ? seq : 0, shape, windows: diff.windows, touched: new Map() };
    }
    for (const [name, list] of req.lists) {
      const cfg = compile(list, list.bumpEventTypes);
      for (const id of windows.listRooms.get(name) ?? []) {
        if (check && !check.has(id)) continue;
        addConfig(id, cfg);
        addOldRooms(id, list);
      }
    }
    for (const [roomId, sub] of conn.ext.subs ?? []) {
      if (check && !check.has(roomId)) continue;
      if (!user.rooms.has(roomId)) continue;
      addConfig(roomId, compile(sub));
      addOldRooms(roomId, sub);
    }
    const previousConfig = memoConfigs(conn.ext.configs ?? {});
    // MSC3575: a room that left every window because the user left it still gets its last
    // events (the leave), as it was configured then.
    const inScopeBefore = msc3575 ? this.#inScopeBefore(conn) : undefined;
    if (inScopeBefore)
      for (const roomId of this.#newlyLeft(inScopeBefore, conn, user, configs, from))
        addConfig(roomId, this.#lastConfig(conn, roomId, previousConfig));

    const plans: RoomPlan[] = [];
    for (const [roomId, cfg] of configs) {
      const plan = this.#plan(conn, user, roomId, cfg, previousConfig, inScopeBefore);
      if (plan) plans.push(plan);
    }
    const ctx: BuildContext = {
      pool: this.deps.pool,
      userId: device.userId,
      deviceId: device.deviceId,
      user,
      metas: this.deps.metas,
      upTo,
      from,
      protocol: req.protocol,
      timestamps: msc3575 ? await this.#timestamps(plans, configs, upTo) : new Map(),
      histories: this.deps.histories,
      timelines: this.deps.timelines,
      states: this.deps.states,
      exactPrevBatch:
        this.deps.exactPrevBatch && ((roomId, event) => this.deps.exactPrevBatch?.(device, roomId, event) ?? Promise.resolve(undefined)),
    };
    if (msc3575)
      await ensureNames(
        { pool: this.deps.pool, user, metas: this.deps.metas },
        plans.map((p) => p.roomId),
      );
    // The extensions run alongside the room building: only receipts wait for the built rooms.
    const builtRooms = buildRooms(ctx, plans).then((built) => {
      const rooms: SyncResponse['rooms'] = {};
      const sent = new Map<string, RoomSent>();
      for (const [roomId, b] of built) {
        const room = user.rooms.get(roomId);
        sent.set(roomId, { ...b.sent, nc: room?.notificationCount, hc: room?.highlightCount });
        if (b.result) rooms[roomId] = b.result;
      }
      return { rooms, sent };
    });
    const [{ rooms, sent }, ext] = await Promise.all([
      builtRooms,
      this.deps.extensions.compute({
        pool: this.deps.pool,
        device,
        user,
        metas: this.deps.metas,
        request: req.extensions,
        positions: conn.ext,
        roomsSent: conn.rooms,
        initial: req.pos === undefined,
        from,
        upTo,
        listRooms: windows.listRooms,
        subscribedRooms: (conn.ext.subs ?? []).map(([id]) => id).filter((id) => user.rooms.has(id)),
        sentRooms: builtRooms.then((b) => b.rooms),
        check,
        listRoomSets: memo && new Map([...memo.windows].map(([name, w]) => [name, w.set])),
      }),
    ]);
    // Extension positions per room live in the same room memory as the room's own.
    for (const [roomId, update] of ext.rooms) {
      const base = sent.get(roomId) ?? conn.rooms.get(roomId);
      if (base) sent.set(roomId, { ...base, ...update });
    }
    const usedConfigs = { ...conn.ext.configs };
    for (const cfg of configs.values()) if (!usedConfigs[cfg.key]) usedConfigs[cfg.key] = serializeStateConfig(cfg.state);
    if (memo) memo.touched = sent;
    return {
      response: { lists: windows.lists, rooms, extensions: ext.data },
      sent,
      ext: { ...ext.positions, configs: usedConfigs, ...windows.memory },
      stream: upTo,
      hasData: Object.keys(rooms).length > 0 || ext.wakes || windows.changed,
      roomsToSend: plans.length,
      memo,
    };
  }

  /** MSC4186: recency order, one SYNC op per range, nothing remembered. */
  #lists4186(conn: Connection, user: UserCache, req: SyncRequest): Windows {
    // Only rooms the user left themself can drop out; without any, the order is used as it is
    // (computeList copies what it keeps).
    const candidates = user.selfLeft.size ? user.order.filter((id) => isListable(id, user, conn.stream)) : user.order;
    const lists: SyncResponse['lists'] = Object.create(null);
    const listRooms = new Map<string, string[]>();
    for (const [name, list] of req.lists) {
      const window = computeList(list, candidates, user, this.deps.metas);
      lists[name] = window.result;
      listRooms.set(name, window.roomIds);
    }
    return { lists, listRooms, memory: {}, changed: false };
  }

  /** MSC3575: each list in its own sort, ops against what the client holds, remembered per list. */
  async #lists3575(conn: Connection, user: UserCache, req: SyncRequest, upTo: number): Promise<Windows> {
    const { metas, pool } = this.deps;
    const candidates = user.order.filter((id) => isListable3575(id, user, metas));
    const needsNames = [...req.lists.values()].some((l) => l.sort?.includes('by_name') || l.filters?.roomNameLike !== undefined);
    if (needsNames) await ensureNames({ pool, user, metas }, candidates);
    const nameOf = (id: string) => user.names.get(id)?.name;
    // Keyed by client-chosen list names: no prototype, so `toString` or `__proto__` are names like any other.
    const lists: SyncResponse['lists'] = Object.create(null);
    const listRooms = new Map<string, string[]>();
    const memory: Record<string, ListMemory> = Object.create(null);
    const remembered = conn.ext.lists;
    let changed = false;
    for (const [name, list] of req.lists) {
      const sort = list.sort ?? ['by_recency'];
      const bumpTypes = list.bumpEventTypes ?? [];
      const bump = bumpTypes.length ? await this.deps.bumps.ensure(bumpTypes, candidates, upTo) : undefined;
      const ordered = sortedRooms(sort, bumpTypes, candidates, { user, metas, bump });
      const filtered = list.filters ? ordered.filter((id) => matchesFilters(id, list.filters, user, metas, nameOf)) : ordered;
      const window = computeListOps(list, filtered, remembered && Object.hasOwn(remembered, name) ? remembered[name] : undefined);
      lists[name] = window.result;
      listRooms.set(name, window.roomIds);
      memory[name] = window.memory;
      changed ||= window.changed;
    }
    return { lists, listRooms, memory: { lists: memory }, changed };
  }

  /** Predecessor rooms (by m.room.create) the user is joined to, nearest first. */
  #predecessors(user: UserCache, roomId: string): string[] {
    const out: string[] = [];
    let pred = this.deps.metas.get(roomId)?.predecessor;
    while (pred && !out.includes(pred) && user.rooms.get(pred)?.membership === 'join' && out.length < 10) {
      out.push(pred);
      pred = this.deps.metas.get(pred)?.predecessor;
    }
    return out;
  }

  /** MSC3575: every room the client held in a window or a subscription after the confirmed response. */
  #inScopeBefore(conn: Connection): Set<string> {
    const ids = new Set<string>();
    for (const m of Object.values(conn.ext.lists ?? {})) for (const part of m.view.ids) for (const id of part) ids.add(id);
    for (const [id] of conn.ext.subs ?? []) ids.add(id);
    return ids;
  }

  /** Rooms the client held that the user has left since, and that are in no window now. */
  #newlyLeft(held: Set<string>, conn: Connection, user: UserCache, configs: Map<string, EffectiveConfig>, from: number): string[] {
    return [...held].filter((id) => {
      const room = user.rooms.get(id);
      return !configs.has(id) && room !== undefined && room.membership !== 'join' && room.membershipPos > from && conn.rooms.has(id);
    });
  }

  #lastConfig(conn: Connection, roomId: string, previousConfig: (key: string) => StateConfig | undefined): EffectiveConfig {
    const sent = conn.rooms.get(roomId) as RoomSent;
    const state = previousConfig(sent.rs) ?? compileRequiredState([], '');
    return { timelineLimit: sent.tl, state, key: sent.rs };
  }

  /** MSC3575 `timestamp`: the latest bump event (of the first list's bump_event_types that holds the room). */
  async #timestamps(plans: RoomPlan[], configs: Map<string, EffectiveConfig>, upTo: number): Promise<Map<string, number>> {
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
      const bump = await this.deps.bumps.ensure(g.types, g.roomIds, upTo);
      for (const id of g.roomIds) {
        const ts = bump(id)?.ts;
        if (ts) out.set(id, ts);
      }
    }
    return out;
  }

  /** Whether (and how) a room in scope is sent; undefined when the client is up to date. */
  #plan(
    conn: Connection,
    user: UserCache,
    roomId: string,
    cfg: EffectiveConfig,
    previousConfig: (key: string) => StateConfig | undefined,
    inScopeBefore: Set<string> | undefined,
  ): RoomPlan | undefined {
    const room = user.rooms.get(roomId);
    if (!room) return undefined;
    const sent = conn.rooms.get(roomId);
    // Never sent, or newly joined (e.g. after an invite): from scratch. MSC3575 also sends a
    // room that re-enters the client's windows from scratch, where MSC4186 sends the delta.
    const reentered = inScopeBefore !== undefined && !inScopeBefore.has(roomId) && room.membership === 'join';
    const initial = !sent || (room.membership === 'join' && sent.m !== 'join') || reentered;
    let expandTimeline = false;
    let expandState = false;
    if (!initial) {
      // Checked per room in the window on every response: nothing is allocated for a room
      // the client is up to date on.
      expandTimeline = cfg.timelineLimit > sent.tl;
      if (sent.rs !== cfg.key) {
        const before = previousConfig(sent.rs);
        expandState = before === undefined || stateConfigGrew(before, cfg.state);
      }
      const meta = this.deps.metas.get(roomId);
      const joined = room.membership === 'join';
      const latest = Math.max(meta?.latestNid ?? 0, meta?.statePos ?? 0);
      const newData = (joined ? latest : Math.min(latest, room.membershipPos)) > sent.pos || (!joined && sent.pos < room.membershipPos);
      const countsChanged =
        room.notificationCount !== sent.nc || room.highlightCount !== sent.hc || user.dmRooms.has(roomId) !== Boolean(sent.dm);
      const membershipChanged = room.membership !== sent.m;
      if (!(newData || countsChanged || membershipChanged || expandTimeline || expandState)) return undefined;
    }
    return {
      roomId,
      timelineLimit: cfg.timelineLimit,
      state: cfg.state,
      stateKey: cfg.key,
      sent,
      initial,
      expandTimeline,
      expandState,
      includeHeroes: cfg.includeHeroes ?? false,
    };
  }

  /**
   * Collects the wakes of this request from now on (see dispatcher.ts). `next()` resolves at
   * once if one arrived since the last call (e.g. during a computation), else on the next one,
   * or after `ms`.
   */
  #watch(device: Device, req: SyncRequest) {
    let pending: WakeReason | undefined;
    let wake: ((why: WakeReason) => void) | undefined;
    const unregister = this.#dispatcher.register({
      userId: device.userId,
      deviceId: device.deviceId,
      wants: {
        accountData: req.extensions.accountData !== undefined,
        receipts: req.extensions.receipts !== undefined,
        typing: req.extensions.typing !== undefined,
        deviceData: req.extensions.toDevice !== undefined || req.extensions.e2ee !== undefined,
      },
      wake: (why) => {
        if (pending !== 'expired') pending = why;
        // A turn later at most, a few at a time (see wake-pacer.ts).
        if (wake) this.#pacer.defer(() => wake?.(why));
      },
    });
    return {
      next: (ms: number, signal: AbortSignal): Promise<WakeReason | 'timeout'> => {
        if (pending) {
          const why = pending;
          pending = undefined;
          return Promise.resolve(why);
        }
        return new Promise((resolve) => {
          const finish = (why: WakeReason | 'timeout') => {
            clearTimeout(timer);
            signal.removeEventListener('abort', onAbort);
            wake = undefined;
            pending = undefined;
            resolve(why);
          };
          const onAbort = () => finish('timeout');
          const timer = setTimeout(() => finish('timeout'), Math.max(0, ms));
          signal.addEventListener('abort', onAbort, { once: true });
          wake = finish;
        });
      },
      dispose: unregister,
    };
  }
}
