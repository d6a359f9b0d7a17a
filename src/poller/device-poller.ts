// One device's v2 /sync loop: fetch, ingest (with the new `since`, in one transaction), repeat.
// It knows nothing of sliding sync. Faults are survived: transient ones back off with jitter,
// rate limits wait as told, a response that cannot be used is retried a few times and then
// skipped past (recorded for operators) so one poison response cannot stall a device forever;
// one with nothing to skip to is retried with capped backoff, and the clients waiting for the
// device's first sync hear why instead of hanging. A dead token ends the loop, and those
// clients hear that too (auth/ says what each reason means to a client).
import { setTimeout as sleep } from 'node:timers/promises';
import type { Accumulator } from '../ingest/accumulator.js';
import type { InitialSyncFailure, InitialSyncProgress } from '../initial-sync.js';
import type { Pool } from '../store/db.js';
import { SinceMoved } from '../store/device-inbox-table.js';
import { recordPollerProblem, skipTo } from '../store/devices-table.js';
import type { Logger } from '../telemetry/logger.js';
import { type Metrics, secondsSince } from '../telemetry/metrics.js';
import type { Telemetry } from '../telemetry/telemetry.js';
import { UpstreamError } from '../upstream/errors.js';
import type { Homeserver } from '../upstream/homeserver-client.js';
import type { SyncResponse } from '../upstream/sync-response.js';

export interface PollerOptions {
  httpTimeoutMs: number;
  initialTimeoutMs: number;
  /** Long-poll timeout asked of the homeserver. */
  longPollMs: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** How often the same position may fail with a bad response before it is skipped. */
  poisonThreshold: number;
  timelineLimit: number;
  initialTimelineLimit: number;
}

export const DEFAULT_POLLER_OPTIONS: PollerOptions = {
  httpTimeoutMs: 300_000,
  initialTimeoutMs: 1_800_000,
  longPollMs: 30_000,
  backoffBaseMs: 1_000,
  backoffMaxMs: 60_000,
  poisonThreshold: 3,
  timelineLimit: 50,
  // One event per room keeps a big account's initial sync fast, and its prev_batch then points
  // right before the event we have, so clients can paginate back through /messages.
  initialTimelineLimit: 1,
};

export interface PollerDeps {
  homeserver: Homeserver;
  accumulator: Accumulator;
  pool: Pool;
  logger: Logger;
  /** The token was rejected: returns a newer token of the device to continue with, if any. */
  onTokenDead(token: string, err: UpstreamError): Promise<string | undefined>;
  /**
   * Asked before each initial sync: true when another device of the user has its initial sync
   * stored (so the user's rooms are), and this device's first sync need only fetch to-device.
   */
  toDeviceOnlyFirst?(): boolean;
  /** The initial sync is behind the device (stored or skipped past): told to other processes. */
  onInitialSyncDone?(): void;
  /** Bounds how many first polls (possibly huge initial syncs) run at once. */
  firstPollSlot<T>(fn: () => Promise<T>): Promise<T>;
  /** Metrics, a span per poll, and failed polls reported with the user and device. */
  telemetry?: Telemetry;
}

const NO_PRESENCE = { presence: { not_types: ['*'] } };
const TO_DEVICE_ONLY = { ...NO_PRESENCE, room: { rooms: [] } };

/**
 * The Go proxy's poller histograms: the size of every room timeline (joined and left rooms,
 * empty ones left out), and of every joined room's state block in an incremental response,
 * where a state block means a gap (the state between `since` and the timeline's start).
 */
function observeRoomSizes(metrics: Metrics, response: SyncResponse, initial: boolean): void {
  for (const room of [...Object.values(response.rooms.join), ...Object.values(response.rooms.leave)]) {
    const events = room.timeline.events.length;
    if (events > 0) metrics.pollTimelineSize.observe({ limited: room.timeline.limited ? 'limited' : 'unlimited' }, events);
  }
  if (initial) return;
  for (const room of Object.values(response.rooms.join)) {
    if (room.state.length > 0) metrics.pollGappyStateSize.observe(room.state.length);
  }
}

export class DevicePoller {
  readonly userId: string;
  readonly deviceId: string;
  #token: string;
  #since: string | undefined;
  #abort = new AbortController();
  #done: Promise<void> | undefined;
  /** The loop is over: stopped, its token dead, or crashed. */
  #ended = false;
  /** Requests waiting for the initial sync: released when it is stored, or rejected when it fails. */
  #initialWaiters = new Set<{ resolve(failure?: InitialSyncFailure): void; reject(err: unknown): void }>();
  #initialIsDone = false;
  /** This device's initial sync was ingested (not skipped past), so the user's rooms are stored. */
  #initialStored: boolean;
  /** Why the initial sync cannot be had for now: waiting and new requests get this error. */
  #initialFailure: InitialSyncFailure | undefined;
  #progress: Omit<InitialSyncProgress, 'done'> = { bytesReceived: 0 };

  constructor(
    private readonly deps: PollerDeps,
    private readonly opts: PollerOptions,
    device: { userId: string; deviceId: string; since: string | null; initialSyncDone: boolean },
    token: string,
  ) {
    this.userId = device.userId;
    this.deviceId = device.deviceId;
    this.#token = token;
    this.#since = device.since ?? undefined;
    this.#initialStored = device.initialSyncDone;
    // A device with a position has its first sync behind it, stored or skipped past as unusable.
    if (device.initialSyncDone || device.since !== null) this.#markInitialDone();
  }

  /** The device's initial sync is stored: the user's rooms are, as of its position. */
  get initialSyncStored(): boolean {
    return this.#initialStored;
  }

  /**
   * The token in use, for requests made on the device's behalf (exact-prev-batch.ts) and for
   * redacting it from debug dumps (heap snapshots); never log it.
   */
  get token(): string {
    return this.#token;
  }

  /** A copy of the first sync's progress: reading it changes nothing. */
  get initialSyncProgress(): InitialSyncProgress {
    return { done: this.#initialIsDone, ...this.#progress };
  }

  /** Polling: started, and its loop not over (a poller whose loop ended is replaced on next use). */
  get running(): boolean {
    return this.#done !== undefined && !this.#ended && !this.#abort.signal.aborted;
  }

  start(): void {
    if (!this.#initialIsDone) this.#progress.startedAt ??= Date.now();
    this.#done ??= this.#loop()
      .catch((err) => {
        this.deps.logger.error({ err }, 'poller crashed');
        this.#report(err, 'crashed');
        this.#failInitial({ reason: 'crashed' });
      })
      .finally(() => {
        this.#ended = true;
      });
  }

  /** A refreshed token for the same device: the next poll uses it, from the same position. */
  updateToken(token: string): void {
    this.#token = token;
  }

  /**
   * Resolves once the device's initial v2 sync is stored (at once if it already is), or with
   * why it cannot be had: the token died, the homeserver keeps answering unusably, or the
   * poller stopped. Rejects only when `signal` aborts.
   */
  waitForInitialSync(signal?: AbortSignal): Promise<InitialSyncFailure | undefined> {
    if (this.#initialIsDone) return Promise.resolve(undefined);
    if (this.#initialFailure) return Promise.resolve(this.#initialFailure);
    return new Promise<InitialSyncFailure | undefined>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = () => waiter.reject(signal?.reason);
      const settle = () => {
        // The device stops pending when its last waiting request is released, rejected or gone.
        if (this.#initialWaiters.delete(waiter) && this.#initialWaiters.size === 0) {
          this.deps.telemetry?.metrics.devicesPendingEnsurePolling.dec();
        }
        signal?.removeEventListener('abort', onAbort);
      };
      const waiter = {
        resolve: (failure?: InitialSyncFailure) => {
          settle();
          resolve(failure);
        },
        reject: (err: unknown) => {
          settle();
          reject(err);
        },
      };
      this.#initialWaiters.add(waiter);
      if (this.#initialWaiters.size === 1) this.deps.telemetry?.metrics.devicesPendingEnsurePolling.inc();
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  async stop(): Promise<void> {
    this.#abort.abort(new Error('poller stopped'));
    this.#failInitial({ reason: 'stopped' });
    await this.#done;
  }

  #markInitialDone() {
    this.#initialFailure = undefined;
    if (this.#initialIsDone) return;
    this.#initialIsDone = true;
    for (const waiter of [...this.#initialWaiters]) waiter.resolve();
    this.deps.onInitialSyncDone?.();
  }

  /** Releases the requests waiting for the initial sync with why, and answers later ones with it. */
  #failInitial(failure: InitialSyncFailure) {
    if (this.#initialIsDone) return;
    this.#initialFailure = failure;
    for (const waiter of [...this.#initialWaiters]) waiter.resolve(failure);
  }

  #filter(): Record<string, unknown> {
    if (this.#since === undefined && this.deps.toDeviceOnlyFirst?.()) return TO_DEVICE_ONLY;
    const limit = this.#since === undefined ? this.opts.initialTimelineLimit : this.opts.timelineLimit;
    return { ...NO_PRESENCE, room: { timeline: { limit } } };
  }

  async #loop(): Promise<void> {
    const log = this.deps.logger;
    const signal = this.#abort.signal;
    let failures = 0;
    let first = true;
    const telemetry = this.deps.telemetry;
    while (!signal.aborted) {
      const initial = this.#since === undefined;
      try {
        const attributes = { user_id: this.userId, device_id: this.deviceId, initial, first };
        const once = () => this.#pollOnce(initial, first, signal);
        await (telemetry ? telemetry.tracer.run('poll', attributes, once) : once());
        failures = 0;
        first = false;
      } catch (err) {
        if (signal.aborted) break;
        failures++;
        const wait = await this.#handleFailure(err, failures).catch((e) => {
          log.warn({ err: e }, 'handling a poll failure failed (database down?); backing off');
          return this.opts.backoffMaxMs;
        });
        if (wait === 'stop') break;
        await sleep(wait, undefined, { signal }).catch(() => undefined);
      }
    }
  }

  /** One v2 /sync request and the storing of its response. */
  async #pollOnce(initial: boolean, first: boolean, signal: AbortSignal): Promise<void> {
    const log = this.deps.logger;
    const metrics = this.deps.telemetry?.metrics;
    const filter = this.#filter();
    // Counted from zero for each attempt, so a retried first sync does not add up twice.
    if (initial) this.#progress.bytesReceived = 0;
    const progress = this.#progress;
    const onBodyBytes = initial
      ? (bytes: number) => {
          progress.bytesReceived += bytes;
        }
      : undefined;
    const poll = async () => {
      metrics?.polls.inc();
      metrics?.outstandingPolls.inc();
      try {
        return await this.deps.homeserver.sync(
          this.#token,
          // The first poll after (re)start answers at once, so a restarted proxy catches up quickly.
          { since: this.#since, timeoutMs: first || initial ? 0 : this.opts.longPollMs, filter, setPresence: 'offline' },
          { timeoutMs: initial ? this.opts.initialTimeoutMs : this.opts.httpTimeoutMs, signal, onBodyBytes },
        );
      } finally {
        metrics?.outstandingPolls.dec();
      }
    };
    const { response, stats } = first ? await this.deps.firstPollSlot(poll) : await poll();
    const received = performance.now();
    if (stats.droppedEvents) log.warn({ dropped: stats.droppedEvents, since: this.#since }, 'dropped malformed events from /sync');
    // A to-device-only start skips the rooms' history: what this device brings next may follow a hole.
    const summary = await this.deps.accumulator.ingest({ userId: this.userId, deviceId: this.deviceId }, response, {
      roomsOmitted: filter === TO_DEVICE_ONLY,
      initial,
      since: this.#since ?? null,
    });
    if (initial) log.info({ rooms: summary.rooms, events: summary.newEvents }, 'initial sync stored');
    this.#since = response.next_batch;
    if (initial) {
      this.#initialStored = true;
      this.#progress.rooms = summary.rooms;
      this.#progress.storedAt = Date.now();
      this.#markInitialDone();
    }
    metrics?.pollProcessDuration.observe({ initial: String(initial), first: String(first) }, secondsSince(received));
    // Counted once stored, so a response fetched again after a failure is not counted twice.
    if (metrics) observeRoomSizes(metrics, response, initial);
  }

  /** Sends a failed poll to the error reporter (Sentry) with the user and device it concerns. */
  #report(err: unknown, kind: string) {
    this.deps.telemetry?.errors.capture(err, { user: this.userId, device: this.deviceId, tags: { component: 'poller', failure: kind } });
  }

  /** Decides what a failed poll means: how long to wait, or that the loop is over. */
  async #handleFailure(err: unknown, failures: number): Promise<number | 'stop'> {
    const log = this.deps.logger;
    const backoff = () => {
      const capped = Math.min(this.opts.backoffMaxMs, this.opts.backoffBaseMs * 2 ** Math.min(failures - 1, 20));
      return Math.round(capped / 2 + Math.random() * (capped / 2));
    };
    const metrics = this.deps.telemetry?.metrics;
    if (err instanceof SinceMoved) {
      // Another poller of this device stored from here first (this one started from a stale
      // row, or another process took the device over): go on from where it got to.
      log.info({ from: err.from, current: err.current }, 'the device moved on without this poll; continuing from its position');
      this.#since = err.current ?? undefined;
      if (err.current !== null) this.#markInitialDone();
      return 0;
    }
    if (!(err instanceof UpstreamError)) {
      // Most likely the database (restart, network): the same response is fetched again later.
      log.warn({ err, failures }, 'storing a /sync response failed; retrying');
      metrics?.pollFailures.inc({ kind: 'store' });
      this.#report(err, 'store');
      return backoff();
    }
    metrics?.pollFailures.inc({ kind: err.kind });
    // Transient faults and dead tokens are the homeserver's weather, counted but not reported;
    // a response we cannot use or a request it calls wrong points at a bug somewhere.
    if (err.kind === 'bad_response' || err.kind === 'client') this.#report(err, err.kind);
    if (err.tokenDead) {
      const next = await this.deps.onTokenDead(this.#token, err);
      if (!next) {
        log.info({ status: err.details.status }, 'token rejected by the homeserver; poller stopped');
        this.#failInitial({ reason: 'token_dead', softLogout: err.details.softLogout === true });
        return 'stop';
      }
      this.#token = next;
      return 0;
    }
    if (err.kind === 'rate_limited') {
      const wait = err.details.retryAfterMs ?? backoff();
      log.warn({ retryAfterMs: wait }, 'rate limited by the homeserver');
      return wait;
    }
    if (err.kind === 'bad_response') return this.#poison(err, backoff);
    log.warn({ kind: err.kind, error: err.message, failures }, 'polling the homeserver failed; backing off');
    return backoff();
  }

  async #poison(err: UpstreamError, backoff: () => number): Promise<number> {
    const since = this.#since ?? '';
    const body = err.details.body as { next_batch?: unknown } | undefined;
    const next = typeof body?.next_batch === 'string' && body.next_batch ? body.next_batch : undefined;
    const device = { userId: this.userId, deviceId: this.deviceId };
    const count = await recordPollerProblem(this.deps.pool, { ...device, since, problem: err.message, skipped: false });
    if (count >= this.opts.poisonThreshold && next) {
      await recordPollerProblem(this.deps.pool, { ...device, since, problem: err.message, skipped: true });
      await skipTo(this.deps.pool, this.userId, this.deviceId, next);
      this.#since = next;
      this.deps.accumulator.skipped(device);
      if (since === '') {
        // The initial sync itself was unusable: waiting clients proceed with what we have.
        this.#markInitialDone();
      }
      this.deps.logger.error({ since, next, problem: err.message }, 'skipped an unusable /sync response after repeated failures');
      return 0;
    }
    if (count >= this.opts.poisonThreshold) {
      // Nothing to skip to (not JSON, or no next_batch): keep retrying with capped backoff, and
      // tell the clients waiting for this device's first sync instead of letting them hang.
      if (since === '') this.#failInitial({ reason: 'homeserver_failing' });
      const log = this.deps.logger;
      (count === this.opts.poisonThreshold ? log.error : log.warn).call(
        log,
        { since, failures: count, problem: err.message },
        'unusable /sync response without a next_batch to skip to; still retrying',
      );
      return backoff();
    }
    this.deps.logger.warn({ since, failures: count, problem: err.message }, 'unusable /sync response; retrying');
    return backoff();
  }
}
