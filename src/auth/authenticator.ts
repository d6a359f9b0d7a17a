// Which user and device an access token is, and making sure that device is polled. Tokens are
// looked up by SHA-256 in the store on every request (no positive cache in memory, so a token
// stored by another process is recognised at once, and one deleted is refused at once); lookups
// made while others are in flight share a statement (a thousand clients answered by one message
// come back at once, and one statement each queued them behind each other for the pool); an unknown one is asked of the homeserver
// (whoami) once, then stored encrypted. A token the homeserver rejects is remembered briefly, so a client (or attacker)
// repeating it cannot turn each request into a homeserver round trip.
//
// Revocation is the store's: a token is served only while its row exists. A logout forwarded
// through the proxy deletes the rows (and stops the device's poller) before the client sees
// the answer; a token any upstream call finds refused is deleted at once. Rows of tokens
// superseded by a refresh are pruned, so neither the store nor this memory grows with them.

import type { InitialSyncFailure, InitialSyncProgress } from '../initial-sync.js';
import { homeserverSyncFailing, MatrixError, unknownToken, upstreamTimeout, upstreamUnavailable } from '../matrix-error.js';
import type { Pool } from '../store/db.js';
import {
  type DeviceRow,
  deleteToken,
  deleteTokensOfDevices,
  findByTokenHashes,
  insertToken,
  pruneTokensOfDevice,
  touchToken,
} from '../store/devices-table.js';
import { GroupCommit } from '../store/group-commit.js';
import { hashToken, type TokenCipher } from '../store/token-cipher.js';
import type { Logger } from '../telemetry/logger.js';
import { UpstreamError } from '../upstream/errors.js';
import type { Homeserver } from '../upstream/homeserver-client.js';
import type { DevicePolling } from './device-polling.js';

export interface AuthenticatedDevice {
  userId: string;
  deviceId: string;
}

export interface AuthOptions {
  /** How long a rejected token is answered from memory. */
  negativeTtlMs: number;
  negativeMaxEntries: number;
  whoamiTimeoutMs: number;
  /** last_seen is written at most this often per token. */
  touchEveryMs: number;
  /** Tokens kept per device: the newest, and the ones a refresh just superseded (requests still in flight use them). */
  tokensPerDevice: number;
  /** Tokens whose last touch is remembered, at most. */
  touchedMaxEntries: number;
}

export const DEFAULT_AUTH_OPTIONS: AuthOptions = {
  negativeTtlMs: 10_000,
  negativeMaxEntries: 10_000,
  whoamiTimeoutMs: 30_000,
  touchEveryMs: 3_600_000,
  tokensPerDevice: 3,
  touchedMaxEntries: 100_000,
};

export class Authenticator {
  #rejected = new Map<string, { until: number; softLogout: boolean }>();
  #touched = new Map<string, number>();
  /** Token lookups, each keyed by its own number (the same token asked twice at once is two lookups). */
  readonly #lookups: GroupCommit<{ key: number; hex: string }, DeviceRow>;
  #lookupSeq = 0;

  constructor(
    private readonly deps: { pool: Pool; homeserver: Homeserver; cipher: TokenCipher; pollers: DevicePolling; logger: Logger },
    private readonly opts: AuthOptions = DEFAULT_AUTH_OPTIONS,
  ) {
    this.#lookups = new GroupCommit(async (items) => {
      const found = await findByTokenHashes(
        this.deps.pool,
        items.map((i) => i.hex),
      );
      const out = new Map<number, DeviceRow>();
      for (const { key, hex } of items) {
        const device = found.get(hex);
        if (device) out.set(key, device);
      }
      return out;
    });
  }

  /** The stored device of a token (by its hash in hex), read in turn with the lookups made meanwhile. */
  #find(hex: string): Promise<DeviceRow | undefined> {
    return this.#lookups.submit({ key: this.#lookupSeq++, hex });
  }

  /** Resolves the token to its device and makes sure the device is polled; throws MatrixError. */
  async authenticate(token: string, signal?: AbortSignal): Promise<AuthenticatedDevice> {
    const hash = hashToken(token);
    const hex = hash.toString('hex');
    const rejected = this.#rejected.get(hex);
    if (rejected && rejected.until > Date.now()) throw unknownToken(rejected.softLogout);

    let device = await this.#find(hex);
    if (!device) {
      const who = await this.#whoami(token, hex, signal);
      device = await insertToken(this.deps.pool, { tokenHash: hash, tokenEncrypted: this.deps.cipher.encrypt(token), ...who });
      this.deps.logger.info({ user: device.userId, device: device.deviceId }, 'new access token');
      const pruned = await pruneTokensOfDevice(this.deps.pool, device.userId, device.deviceId, this.opts.tokensPerDevice);
      for (const old of pruned) this.#touched.delete(old.toString('hex'));
    } else {
      await this.#touch(hash, hex);
    }
    // Logged out while this request was looking it up: the logout's answer may already be out.
    if (this.#rejected.has(hex)) {
      await deleteToken(this.deps.pool, hash);
      throw unknownToken(this.#rejected.get(hex)?.softLogout);
    }
    this.deps.pollers.ensurePolling(device, token);
    return { userId: device.userId, deviceId: device.deviceId };
  }

  /** The device of a token the store holds (stored by any process); no homeserver call. */
  async known(token: string): Promise<AuthenticatedDevice | undefined> {
    const device = await this.#find(hashToken(token).toString('hex'));
    return device && { userId: device.userId, deviceId: device.deviceId };
  }

  /**
   * Who a token belongs to, for acting on a request forwarded with it (a logout, a forget): the store's
   * answer, else the homeserver's. Undefined when the homeserver does not know it either.
   */
  async identify(token: string, signal?: AbortSignal): Promise<AuthenticatedDevice | undefined> {
    const known = await this.known(token);
    if (known) return known;
    try {
      return await this.deps.homeserver.whoami(token, { timeoutMs: this.opts.whoamiTimeoutMs, signal });
    } catch (err) {
      if (err instanceof UpstreamError) return undefined;
      throw err;
    }
  }

  /**
   * The homeserver logged these devices out (all the user's devices when `deviceIds` is
   * undefined): their tokens are refused from now on and their pollers stop. Resolves once
   * that is so, which is before the client is answered. `ownToken`, the requester's, is among
   * them when its own device was logged out.
   */
  async loggedOut(userId: string, deviceIds?: readonly string[], ownToken?: string): Promise<void> {
    const deleted = await deleteTokensOfDevices(this.deps.pool, userId, deviceIds);
    // The requester's own token may be gone from the store already (its poller saw it die first).
    const hashes = [...deleted.map((d) => d.tokenHash), ...(ownToken === undefined ? [] : [hashToken(ownToken)])];
    for (const hash of hashes) this.#forget(hash.toString('hex'), false);
    const devices = new Set([...(deviceIds ?? this.deps.pollers.devicesOf(userId)), ...deleted.map((d) => d.deviceId)]);
    await Promise.all([...devices].map((deviceId) => this.deps.pollers.loggedOut(userId, deviceId)));
    this.deps.logger.info({ user: userId, devices: devices.size, tokens: deleted.length }, 'devices logged out');
  }

  /** The homeserver refused this token (on any call made with it): refused here from now on. */
  async tokenRefused(token: string, softLogout: boolean): Promise<void> {
    const hash = hashToken(token);
    this.#forget(hash.toString('hex'), softLogout);
    await deleteToken(this.deps.pool, hash);
    await this.deps.pollers.tokenRefused(token, softLogout);
  }

  /** Entries held in memory (negative cache and touch times), for tests of boundedness. */
  get memorySize(): number {
    return this.#rejected.size + this.#touched.size;
  }

  /**
   * Waits until the device's first v2 sync is stored (the client's first request does); throws
   * the MatrixError the client gets when it cannot be had.
   */
  async waitForInitialSync(device: AuthenticatedDevice, signal?: AbortSignal): Promise<void> {
    const poller = this.deps.pollers.get(device.userId, device.deviceId);
    if (!poller) throw unknownToken(false);
    const failure = await poller.waitForInitialSync(signal);
    if (failure) throw initialSyncError(failure);
  }

  /** The device's first-sync progress in this process; undefined when it is not polled here. */
  initialSyncProgress(device: AuthenticatedDevice): InitialSyncProgress | undefined {
    return this.deps.pollers.get(device.userId, device.deviceId)?.initialSyncProgress;
  }

  async #whoami(token: string, hex: string, signal?: AbortSignal) {
    try {
      return await this.deps.homeserver.whoami(token, { timeoutMs: this.opts.whoamiTimeoutMs, signal });
    } catch (err) {
      if (!(err instanceof UpstreamError)) throw err;
      if (err.tokenDead) {
        this.#reject(hex, err.details.softLogout === true);
        throw unknownToken(err.details.softLogout === true);
      }
      if (err.kind === 'rate_limited')
        throw new MatrixError(429, 'M_LIMIT_EXCEEDED', 'Homeserver rate limited', { retry_after_ms: err.details.retryAfterMs ?? 1000 });
      if (err.kind === 'timeout') throw upstreamTimeout();
      this.deps.logger.warn({ kind: err.kind, error: err.message }, 'whoami failed');
      throw upstreamUnavailable(err.kind === 'bad_response' ? 'unexpected whoami answer' : err.kind);
    }
  }

  #reject(hex: string, softLogout: boolean) {
    if (this.#rejected.size >= this.opts.negativeMaxEntries) {
      const now = Date.now();
      for (const [k, v] of this.#rejected) if (v.until <= now) this.#rejected.delete(k);
      // Still full of live entries: drop the oldest (Map keeps insertion order).
      if (this.#rejected.size >= this.opts.negativeMaxEntries) this.#rejected.delete(this.#rejected.keys().next().value as string);
    }
    this.#rejected.set(hex, { until: Date.now() + this.opts.negativeTtlMs, softLogout });
  }

  #forget(hex: string, softLogout: boolean) {
    this.#touched.delete(hex);
    this.#reject(hex, softLogout);
  }

  async #touch(hash: Buffer, hex: string) {
    const now = Date.now();
    const last = this.#touched.get(hex) ?? 0;
    if (now - last < this.opts.touchEveryMs) return;
    if (this.#touched.size >= this.opts.touchedMaxEntries) {
      // A touch older than touchEveryMs is due again anyway: forgetting it changes nothing.
      for (const [k, at] of this.#touched) if (now - at >= this.opts.touchEveryMs) this.#touched.delete(k);
      if (this.#touched.size >= this.opts.touchedMaxEntries) this.#touched.delete(this.#touched.keys().next().value as string);
    }
    this.#touched.delete(hex);
    this.#touched.set(hex, now);
    await touchToken(this.deps.pool, hash);
  }
}

/** What a client waiting for its device's first sync is told when it cannot be had. */
function initialSyncError(failure: InitialSyncFailure): MatrixError {
  switch (failure.reason) {
    case 'token_dead':
      return unknownToken(failure.softLogout);
    case 'homeserver_failing':
      return homeserverSyncFailing();
    case 'stopped':
      return new MatrixError(503, 'M_UNKNOWN', 'Polling of this device stopped; retry', { retry_after_ms: 1000 });
    case 'crashed':
      return new MatrixError(503, 'M_UNKNOWN', 'Polling of this device failed; retry', { retry_after_ms: 1000 });
  }
}
