// The sliding sync engine: one request in, one response out, whatever the wire protocol.
// Compute first; return at once when there is data, no pos, or timeout 0; otherwise wait for
// bus activity relevant to this user and recompute, until data or the timeout.

import type { Bus } from '../bus/bus.js';
import type { RoomMetaCache } from '../cache/room-meta-cache.js';
import type { StreamTracker } from '../cache/stream-tracker.js';
import type { UserCache, UserCaches } from '../cache/user-cache.js';
import { superseded, unknownToken } from '../matrix-error.js';
import type { Pool } from '../store/db.js';
import type { Logger } from '../telemetry/logger.js';
import type { Connection, ConnectionManager, ExtensionPositions, RoomSent } from './connections.js';
import type { Extensions } from './extensions/index.js';
import { computeList, isListable } from './lists.js';
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
import type { RoomConfig, SyncRequest, SyncResponse } from './types.js';

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
}

interface Computed {
  response: Omit<SyncResponse, 'pos'>;
  sent: Map<string, RoomSent>;
  ext: ExtensionPositions;
  stream: number;
  hasData: boolean;
}

interface EffectiveConfig {
  timelineLimit: number;
  state: StateConfig;
  /** stateConfigKey(state): rooms remember their config by it. */
  key: string;
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
  constructor(private readonly deps: EngineDeps) {}

  async sync(device: Device, req: SyncRequest, signal: AbortSignal, timing?: SyncTiming): Promise<SyncResponse> {
    const key = { ...device, connId: req.connId };
    const conn = await this.deps.connections.resolve(key, req.pos);
    // One request per connection at a time: a newer one (the client gave up on the old
    // long-poll) aborts the older, which then commits nothing.
    const previous = conn.inFlight;
    previous?.abort.abort();
    await previous?.done.catch(() => undefined);
    const abort = new AbortController();
    const linked = AbortSignal.any([signal, abort.signal]);
    const work = this.#run(conn, device, req, linked, abort.signal, timing);
    conn.inFlight = { abort, done: work };
    try {
      return await work;
    } finally {
      if (conn.inFlight?.abort === abort) conn.inFlight = undefined;
    }
  }

  async #run(
    conn: Connection,
    device: Device,
    req: SyncRequest,
    signal: AbortSignal,
    abortedByNewer: AbortSignal,
    timing?: SyncTiming,
  ): Promise<SyncResponse> {
    this.#applySubscriptions(conn, req);
    // Watch before computing: a message ingested while we compute must still wake the wait.
    const activity = this.#watch(device, req);
    try {
      let computed = await this.#compute(conn, device, req);
      const deadline = Date.now() + req.timeoutMs;
      while (!computed.hasData && req.pos !== undefined && Date.now() < deadline) {
        const waitStart = performance.now();
        const woke = await activity.next(deadline - Date.now(), signal);
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
    const pos = await this.deps.connections.commit(conn, computed.stream, computed.sent, { ...computed.ext, subs: conn.ext.subs });
    return { pos, ...computed.response };
  }

  /** Room subscriptions are sticky until unsubscribed (js-sdk sends them once; rust-sdk every time). */
  #applySubscriptions(conn: Connection, req: SyncRequest) {
    const subs = new Map(conn.ext.subs ?? []);
    for (const [roomId, cfg] of req.roomSubscriptions) subs.set(roomId, cfg);
    for (const roomId of req.unsubscribeRooms) subs.delete(roomId);
    conn.ext.subs = [...subs];
  }

  async #compute(conn: Connection, device: Device, req: SyncRequest): Promise<Computed> {
    const upTo = this.deps.stream.current;
    const user = await this.deps.users.get(device.userId);
    const from = conn.stream;
    const candidates = user.order.filter((id) => isListable(id, user, from));

    // Configs are compiled once per list, not per room: a window may hold thousands of rooms.
    const compile = (cfg: RoomConfig): EffectiveConfig => {
      const state = compileRequiredState(cfg.requiredState, device.userId);
      return { timelineLimit: cfg.timelineLimit, state, key: stateConfigKey(state) };
    };
    const configs = new Map<string, EffectiveConfig>();
    const addConfig = (roomId: string, cfg: EffectiveConfig) => {
      const prev = configs.get(roomId);
      if (!prev || prev.key === cfg.key) {
        configs.set(roomId, prev && prev.timelineLimit >= cfg.timelineLimit ? prev : cfg);
        return;
      }
      const state = unionStateConfigs(prev.state, cfg.state);
      configs.set(roomId, { timelineLimit: Math.max(prev.timelineLimit, cfg.timelineLimit), state, key: stateConfigKey(state) });
    };
    const lists: SyncResponse['lists'] = {};
    const listRooms = new Map<string, string[]>();
    for (const [name, list] of req.lists) {
      const window = computeList(list, candidates, user, this.deps.metas);
      lists[name] = window.result;
      listRooms.set(name, window.roomIds);
      const cfg = compile(list);
      for (const id of window.roomIds) addConfig(id, cfg);
    }
    for (const [roomId, sub] of conn.ext.subs ?? []) if (user.rooms.has(roomId)) addConfig(roomId, compile(sub));

    const previousConfig = memoConfigs(conn.ext.configs ?? {});
    const plans: RoomPlan[] = [];
    for (const [roomId, cfg] of configs) {
      const plan = this.#plan(conn, user, roomId, cfg, previousConfig);
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
    };
    const built = await buildRooms(ctx, plans);
    const rooms: SyncResponse['rooms'] = {};
    const sent = new Map<string, RoomSent>();
    for (const [roomId, b] of built) {
      const room = user.rooms.get(roomId);
      sent.set(roomId, { ...b.sent, nc: room?.notificationCount, hc: room?.highlightCount });
      if (b.result) rooms[roomId] = b.result;
    }
    const ext = await this.deps.extensions.compute({
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
      listRooms,
      subscribedRooms: (conn.ext.subs ?? []).map(([id]) => id).filter((id) => user.rooms.has(id)),
      sentRooms: rooms,
    });
    // Extension positions per room live in the same room memory as the room's own.
    for (const [roomId, update] of ext.rooms) {
      const base = sent.get(roomId) ?? conn.rooms.get(roomId);
      if (base) sent.set(roomId, { ...base, ...update });
    }
    const usedConfigs = { ...conn.ext.configs };
    for (const cfg of configs.values()) if (!usedConfigs[cfg.key]) usedConfigs[cfg.key] = serializeStateConfig(cfg.state);
    return {
      response: { lists, rooms, extensions: ext.data },
      sent,
      ext: { ...ext.positions, configs: usedConfigs },
      stream: upTo,
      hasData: Object.keys(rooms).length > 0 || ext.wakes,
    };
  }

  /** Whether (and how) a room in scope is sent; undefined when the client is up to date. */
  #plan(
    conn: Connection,
    user: UserCache,
    roomId: string,
    cfg: EffectiveConfig,
    previousConfig: (key: string) => StateConfig | undefined,
  ): RoomPlan | undefined {
    const room = user.rooms.get(roomId);
    if (!room) return undefined;
    const sent = conn.rooms.get(roomId);
    const meta = this.deps.metas.get(roomId);
    // Never sent, or newly joined (e.g. after an invite): from scratch.
    const initial = !sent || (room.membership === 'join' && sent.m !== 'join');
    const plan: RoomPlan = {
      roomId,
      timelineLimit: cfg.timelineLimit,
      state: cfg.state,
      stateKey: cfg.key,
      sent,
      initial,
      expandTimeline: false,
      expandState: false,
    };
    if (initial) return plan;
    plan.expandTimeline = cfg.timelineLimit > sent.tl;
    if (sent.rs !== cfg.key) {
      const before = previousConfig(sent.rs);
      plan.expandState = before === undefined || stateConfigGrew(before, cfg.state);
    }
    const upTo = room.membership === 'join' ? Number.POSITIVE_INFINITY : room.membershipPos;
    const newData =
      Math.min(Math.max(meta?.latestNid ?? 0, meta?.statePos ?? 0), upTo) > sent.pos ||
      (room.membership !== 'join' && sent.pos < room.membershipPos);
    const countsChanged =
      room.notificationCount !== sent.nc || room.highlightCount !== sent.hc || user.dmRooms.has(roomId) !== Boolean(sent.dm);
    const membershipChanged = room.membership !== sent.m;
    return newData || countsChanged || membershipChanged || plan.expandTimeline || plan.expandState ? plan : undefined;
  }

  /**
   * Collects bus messages relevant to this request from now on. `next()` resolves at once if
   * one arrived since the last call (e.g. during a computation), else on the next one, or after `ms`.
   */
  #watch(device: Device, req: SyncRequest) {
    const { bus, users } = this.deps;
    let pending: 'woke' | 'expired' | undefined;
    let wake: ((why: 'woke' | 'expired') => void) | undefined;
    const signalWake = (why: 'woke' | 'expired') => {
      if (pending !== 'expired') pending = why;
      wake?.(why);
    };
    const inRooms = (roomId: string) => users.peek(device.userId)?.rooms.has(roomId) ?? false;
    const mine = (m: { userId: string; deviceId: string }) => m.userId === device.userId && m.deviceId === device.deviceId;
    const wantsDeviceData = req.extensions.toDevice !== undefined || req.extensions.e2ee !== undefined;
    const unsubscribe = [
      bus.subscribe('room.changed', (m) => inRooms(m.roomId) && signalWake('woke')),
      bus.subscribe('user.rooms_changed', (m) => m.userId === device.userId && signalWake('woke')),
      bus.subscribe(
        'user.account_data',
        (m) => m.userId === device.userId && req.extensions.accountData !== undefined && signalWake('woke'),
      ),
      bus.subscribe('room.receipts', (m) => req.extensions.receipts !== undefined && inRooms(m.roomId) && signalWake('woke')),
      bus.subscribe('room.typing', (m) => req.extensions.typing !== undefined && inRooms(m.roomId) && signalWake('woke')),
      bus.subscribe('device.data', (m) => mine(m) && wantsDeviceData && signalWake('woke')),
      bus.subscribe('device.token_expired', (m) => mine(m) && signalWake('expired')),
    ];
    return {
      next: (ms: number, signal: AbortSignal): Promise<'woke' | 'timeout' | 'expired'> => {
        if (pending) {
          const why = pending;
          pending = undefined;
          return Promise.resolve(why);
        }
        return new Promise((resolve) => {
          const finish = (why: 'woke' | 'timeout' | 'expired') => {
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
      dispose: () => {
        for (const u of unsubscribe) u();
      },
    };
  }
}
