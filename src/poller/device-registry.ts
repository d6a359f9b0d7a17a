// Who is behind an access token, and making sure their device is polled. Tokens are looked
// up by SHA-256; an unknown one is asked of the homeserver (whoami) once, then stored
// encrypted. A token the homeserver rejects is remembered briefly, so a client (or attacker)
// repeating it cannot turn each request into a homeserver round trip.
import { MatrixError, unknownToken, upstreamTimeout, upstreamUnavailable } from '../matrix-error.js';
import type { Pool } from '../store/db.js';
import { findByTokenHash, insertToken, touchToken } from '../store/devices-table.js';
import { hashToken, type TokenCipher } from '../store/token-cipher.js';
import type { Logger } from '../telemetry/logger.js';
import { UpstreamError } from '../upstream/errors.js';
import type { Homeserver } from '../upstream/homeserver-client.js';
import type { InitialSyncProgress } from './device-poller.js';
import type { PollerManager } from './poller-manager.js';

export interface AuthenticatedDevice {
  userId: string;
  deviceId: string;
}

export interface DeviceRegistryOptions {
  /** How long a rejected token is answered from memory. */
  negativeTtlMs: number;
  negativeMaxEntries: number;
  whoamiTimeoutMs: number;
  /** last_seen is written at most this often per token. */
  touchEveryMs: number;
}

export const DEFAULT_REGISTRY_OPTIONS: DeviceRegistryOptions = {
  negativeTtlMs: 10_000,
  negativeMaxEntries: 10_000,
  whoamiTimeoutMs: 30_000,
  touchEveryMs: 3_600_000,
};

export class DeviceRegistry {
  #rejected = new Map<string, { until: number; softLogout: boolean }>();
  #touched = new Map<string, number>();

  constructor(
    private readonly deps: { pool: Pool; homeserver: Homeserver; cipher: TokenCipher; pollers: PollerManager; logger: Logger },
    private readonly opts: DeviceRegistryOptions = DEFAULT_REGISTRY_OPTIONS,
  ) {}

  /** Resolves the token to its device and makes sure the device is polled; throws MatrixError. */
  async authenticate(token: string, signal?: AbortSignal): Promise<AuthenticatedDevice> {
    const hash = hashToken(token);
    const hex = hash.toString('hex');
    const rejected = this.#rejected.get(hex);
    if (rejected && rejected.until > Date.now()) throw unknownToken(rejected.softLogout);

    let device = await findByTokenHash(this.deps.pool, hash);
    if (!device) {
      const who = await this.#whoami(token, hex, signal);
      device = await insertToken(this.deps.pool, { tokenHash: hash, tokenEncrypted: this.deps.cipher.encrypt(token), ...who });
      this.deps.logger.info({ user: device.userId, device: device.deviceId }, 'new access token');
    } else {
      await this.#touch(hash, hex);
    }
    this.deps.pollers.ensurePolling(device, token);
    return { userId: device.userId, deviceId: device.deviceId };
  }

  /** Waits until the device's first v2 sync is stored (the client's first request does). */
  async waitForInitialSync(device: AuthenticatedDevice, signal?: AbortSignal): Promise<void> {
    const poller = this.deps.pollers.get(device.userId, device.deviceId);
    if (!poller) throw unknownToken(false);
    await poller.waitForInitialSync(signal);
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

  async #touch(hash: Buffer, hex: string) {
    const last = this.#touched.get(hex) ?? 0;
    if (Date.now() - last < this.opts.touchEveryMs) return;
    this.#touched.set(hex, Date.now());
    await touchToken(this.deps.pool, hash);
  }
}
