// The sliding sync engine: one request in, one response out, whatever the wire protocol.
// Compute first; return at once when there is data, no pos, or timeout 0; otherwise wait for
// bus activity relevant to this user and recompute, until data or the timeout.

import type { Bus } from '../bus/bus.js';
import type { RoomMetaCache } from '../cache/room-meta-cache.js';
import type { RoomStates } from '../cache/room-states.js';
import type { RoomTimelines } from '../cache/room-timelines.js';
import type { StreamTracker } from '../cache/stream-tracker.js';
import type { UserCache, UserCaches } from '../cache/user-cache.js';
import type { VisibilityHistories } from '../cache/visibility-histories.js';
import { superseded, unknownPos, unknownToken } from '../matrix-error.js';
import type { Pool } from '../store/db.js';
import type { Logger } from '../telemetry/logger.js';
import type { HistoryAnswer } from '../timeline-history.js';
import { type Connection, type ConnectionManager, ConnectionMoved, type ExtensionPositions, type RoomSent } from './connections.js';
import { Dispatcher, type WakeReason } from './dispatcher.js';
import type { Extensions } from './extensions/index.js';
import { type ResponseMemo, responseShape, roomsToCheck, usableMemo } from './incremental.js';
import type { HistorySource, PrevBatchSource } from './ports.js';
import type { EffectiveConfig, Scope, SyncProtocol } from './protocol.js';
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
import type { Protocol, RoomConfig, SyncRequest, SyncResponse } from './types.js';
import { WakePacer } from './wake-pacer.js';

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
  /** Each protocol's rules (sync/msc4186/, sync/msc3575/), one chosen per request. */
  protocols: Record<Protocol, SyncProtocol>;
  /** Shared in-memory reads for live deltas (absent: from the store). */
  histories?: VisibilityHistories;
  timelines?: RoomTimelines;
  states?: RoomStates;
  /**
   * Called each time a request starts waiting for news (its latest computation had nothing to
   * send): tests use it to act exactly when a long-poll is parked, instead of sleeping.
   */
  onWait?: (device: Device, connId: string) => void;
  /** Exact prev_batch tokens from the homeserver (a port, see ports.ts); absent: the nearest stored one. */
  prevBatches?: PrevBatchSource;
  /** History before rooms' stored timelines, fetched with the device's token (a port, see ports.ts); absent: what is stored. */
  history?: HistorySource;
}

const NO_HISTORY: HistoryAnswer = { grown: new Set(), complete: new Set() };

interface Computed {
  response: Omit<SyncResponse, 'pos'>;
  sent: Map<string, RoomSent>;
  ext: ExtensionPositions;
  stream: number;
  hasData: boolean;
  /** Rooms with something to send (the far-behind rule counts them). */
  roomsToSend: number;
  /** What the next response needs to be computed incrementally (protocols that allow it). */
  memo?: ResponseMemo;
}

/**
 * What one request's computations share: a long-poll computes on arrival and again on each
 * wake with the same request, and in a fan-out the wake's computation is what everyone waits
 * for, so the configs compiled and the response shape are kept from the first computation.
 */
interface RequestMemo {
  compiled: WeakMap<RoomConfig, EffectiveConfig>;
  shape?: { subs: unknown; value: string };
}
const requestMemos = new WeakMap<SyncRequest, RequestMemo>();

function requestMemo(req: SyncRequest): RequestMemo {
  let m = requestMemos.get(req);
  if (!m) {
    m = { compiled: new WeakMap() };
    requestMemos.set(req, m);
  }
  return m;
}

/** A room in several lists and subscriptions gets the union of their configs. */
function mergeConfigs(a: EffectiveConfig, b: EffectiveConfig): EffectiveConfig {
  const merged = { ...a, includeHeroes: a.includeHeroes || b.includeHeroes, bumpEventTypes: a.bumpEventTypes ?? b.bumpEventTypes };
  if (a.key === b.key) return { ...merged, timelineLimit: Math.max(a.timelineLimit, b.timelineLimit) };
  const state = unionStateConfigs(a.state, b.state);
  return { ...merged, timelineLimit: Math.max(a.timelineLimit, b.timelineLimit), state, key: stateConfigKey(state) };
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
    try {
      return await this.#sync(device, request, signal, timing);
    } catch (err) {
      // Another process's request on this connection recorded its response first: one whose
      // client still listens answers as a retry of its pos now would (from the row, at once).
      if (!(err instanceof ConnectionMoved) || signal.aborted) throw err;
      return await this.#sync(device, { ...request, timeoutMs: 0 }, signal, timing);
    }
  }

  async #sync(device: Device, request: SyncRequest, signal: AbortSignal, timing?: SyncTiming): Promise<SyncResponse> {
    const protocol = this.deps.protocols[request.protocol];
    // The protocols' connections never mix: one's pos is unknown to the other.
    const key = { ...device, connId: protocol.connectionId(request.connId) };
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
      const { req, memory } = protocol.effectiveRequest(conn, request);
      const linked = AbortSignal.any([signal, abort.signal]);
      return await this.#run(protocol, conn, device, req, memory, linked, abort.signal, timing);
    } finally {
      done.resolve();
      if (conn.inFlight?.abort === abort) conn.inFlight = undefined;
    }
  }

  async #run(
    protocol: SyncProtocol,
    conn: Connection,
    device: Device,
    req: SyncRequest,
    memory: Partial<ExtensionPositions>,
    signal: AbortSignal,
    abortedByNewer: AbortSignal,
    timing?: SyncTiming,
  ): Promise<SyncResponse> {
    conn.ext.subs = protocol.subscriptions(conn.ext.subs, req);
    // Watch before computing: a message ingested while we compute must still wake the wait.
    const activity = this.#watch(device, req);
    try {
      let computed = await this.#compute(protocol, conn, device, req);
      // A client back after a long absence with a huge catch-up is better served starting
      // over with a small window (Synapse's rule).
      if (req.pos !== undefined && this.deps.connections.tooFarBehind(conn, computed.roomsToSend)) {
        await this.deps.connections.expire(conn);
        throw unknownPos();
      }
      const deadline = Date.now() + req.timeoutMs;
      const stopping = this.#stopping.signal;
      while (!computed.hasData && req.pos !== undefined && Date.now() < deadline && !stopping.aborted) {
        const waitStart = performance.now();
        this.deps.onWait?.(device, req.connId);
        const woke = await activity.next(deadline - Date.now(), [signal, stopping]);
        if (timing) timing.waitMs += performance.now() - waitStart;
        if (signal.aborted) throw stopReason(signal, abortedByNewer);
        if (woke === 'expired') throw unknownToken(false);
        computed = await this.#compute(protocol, conn, device, req);
      }
      if (signal.aborted) throw stopReason(signal, abortedByNewer);
      return await this.#respond(conn, computed, memory);
    } finally {
      activity.dispose();
    }
  }

  /** `memory`: what the request itself leaves in the connection (MSC3575: its sticky parameters). */
  async #respond(conn: Connection, computed: Computed, memory: Partial<ExtensionPositions>): Promise<SyncResponse> {
    const pos = await this.deps.connections.commit(
      conn,
      computed.stream,
      computed.sent,
      { ...computed.ext, ...memory, subs: conn.ext.subs },
      computed.memo,
    );
    return { pos, ...computed.response };
  }

  async #compute(protocol: SyncProtocol, conn: Connection, device: Device, req: SyncRequest): Promise<Computed> {
    // The change log position before any cache is read: whatever is logged later is checked
    // again by the next response.
    const cached = this.deps.users.peek(device.userId);
    let seq = cached?.changeSeq ?? 0;
    let upTo = this.deps.stream.current;
    const user = await this.deps.users.get(device.userId);
    if (cached !== user) {
      // Loaded by get(): what the load logged is all in the cache, so both are read again, in
      // the same order, once it is there (the next response then checks what is logged from
      // here, not every room the load logged).
      seq = user.changeSeq;
      upTo = this.deps.stream.current;
    }
    const from = conn.stream;

    // Configs are compiled once per list, not per room (a window may hold thousands of rooms),
    // and once per request (see RequestMemo). The configs are the request's own objects (or the
    // connection's subscriptions, fixed for the request), only ever read.
    const reqMemo = requestMemo(req);
    const compile = (cfg: RoomConfig, bumpEventTypes?: string[]): EffectiveConfig => {
      const hit = reqMemo.compiled.get(cfg);
      if (hit && hit.bumpEventTypes === bumpEventTypes) return hit;
      const state = compileRequiredState(cfg.requiredState, device.userId, cfg.requiredStateExclude);
      const compiled = {
        timelineLimit: cfg.timelineLimit,
        state,
        key: stateConfigKey(state),
        includeHeroes: cfg.includeHeroes,
        bumpEventTypes,
      };
      reqMemo.compiled.set(cfg, compiled);
      return compiled;
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

    const windows = await protocol.windows(conn, user, req, upTo);
    // Where the protocol allows it, only rooms that may differ from what the connection holds
    // are looked at (`check`; undefined: every room), see incremental.ts.
    let check: Set<string> | undefined;
    let memo: ResponseMemo | undefined;
    if (protocol.incremental) {
      if (!reqMemo.shape || reqMemo.shape.subs !== conn.ext.subs)
        reqMemo.shape = { subs: conn.ext.subs, value: responseShape(req, conn.ext.subs) };
      const shape = reqMemo.shape.value;
      const base = usableMemo(conn.memo, user, shape, req);
      const diff = roomsToCheck(base, user, windows.listRooms);
      check = diff.check;
      memo = { user, seq, shape, windows: diff.windows, touched: new Map() };
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
    const scope = protocol.scope(conn, user, previousConfig);
    for (const [roomId, cfg] of scope.extraRooms(configs)) addConfig(roomId, cfg);

    const plans: RoomPlan[] = [];
    for (const [roomId, cfg] of configs) {
      const plan = this.#plan(conn, user, roomId, cfg, previousConfig, scope);
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
      rules: await protocol.roomRules(user, plans, configs, upTo),
      history: this.deps.history && { fetch: (wants) => this.deps.history?.fetch(device, wants) ?? Promise.resolve(NO_HISTORY) },
      histories: this.deps.histories,
      timelines: this.deps.timelines,
      states: this.deps.states,
      exactPrevBatch:
        this.deps.prevBatches &&
        ((roomId, event) => this.deps.prevBatches?.exactPrevBatch(device, roomId, event) ?? Promise.resolve(undefined)),
    };
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
    // Only the configs this response adds: the pending record is written for every answer (a
    // fan-out writes a thousand), and confirming merges them into the connection's.
    let newConfigs: Record<string, string[][]> | undefined;
    for (const cfg of configs.values()) {
      if (conn.ext.configs?.[cfg.key] || newConfigs?.[cfg.key]) continue;
      newConfigs ??= {};
      newConfigs[cfg.key] = serializeStateConfig(cfg.state);
    }
    if (memo) memo.touched = sent;
    const { configs: _confirmed, ...positions } = ext.positions;
    return {
      response: { lists: windows.lists, rooms, extensions: ext.data },
      sent,
      ext: { ...positions, ...(newConfigs && { configs: newConfigs }), ...windows.memory },
      stream: upTo,
      hasData: Object.keys(rooms).length > 0 || ext.wakes || windows.changed,
      roomsToSend: plans.length,
      memo,
    };
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

  /** Whether (and how) a room in scope is sent; undefined when the client is up to date. */
  #plan(
    conn: Connection,
    user: UserCache,
    roomId: string,
    cfg: EffectiveConfig,
    previousConfig: (key: string) => StateConfig | undefined,
    scope: Scope,
  ): RoomPlan | undefined {
    const room = user.rooms.get(roomId);
    if (!room) return undefined;
    const sent = conn.rooms.get(roomId);
    // Never sent, or newly joined (e.g. after an invite): from scratch; or as the protocol says
    // of a room coming back into view.
    const initial = !sent || (room.membership === 'join' && sent.m !== 'join') || scope.reentered(roomId, room);
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
      // Several signals rather than one AbortSignal.any: a composite signal per wait is costly
      // when a thousand waits end at once.
      next: (ms: number, signals: AbortSignal[]): Promise<WakeReason | 'timeout'> => {
        if (pending) {
          const why = pending;
          pending = undefined;
          return Promise.resolve(why);
        }
        if (signals.some((s) => s.aborted)) return Promise.resolve('timeout');
        return new Promise((resolve) => {
          const finish = (why: WakeReason | 'timeout') => {
            clearTimeout(timer);
            for (const s of signals) s.removeEventListener('abort', onAbort);
            wake = undefined;
            pending = undefined;
            resolve(why);
          };
          const onAbort = () => finish('timeout');
          const timer = setTimeout(() => finish('timeout'), Math.max(0, ms));
          for (const s of signals) s.addEventListener('abort', onAbort, { once: true });
          wake = finish;
        });
      },
      dispose: unregister,
    };
  }
}
