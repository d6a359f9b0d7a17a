// Owns every device poller: starts one per (user, device) on first use, resumes them all at
// startup without blocking serving, stops them when tokens die or devices go idle.
import type { Bus } from '../bus/bus.js';
import type { Accumulator } from '../ingest/accumulator.js';
import type { Pool } from '../store/db.js';
import { deleteToken, devicesToPoll, idleDevices, latestToken } from '../store/devices-table.js';
import { hashToken, type TokenCipher } from '../store/token-cipher.js';
import type { Logger } from '../telemetry/logger.js';
import type { Telemetry } from '../telemetry/telemetry.js';
import type { UpstreamError } from '../upstream/errors.js';
import type { Homeserver } from '../upstream/homeserver-client.js';
import { DevicePoller, type PollerOptions } from './device-poller.js';
import { Semaphore } from './semaphore.js';

export interface PollerManagerDeps {
  homeserver: Homeserver;
  accumulator: Accumulator;
  pool: Pool;
  bus: Bus;
  cipher: TokenCipher;
  logger: Logger;
  telemetry?: Telemetry;
}

export interface DeviceToPoll {
  userId: string;
  deviceId: string;
  since: string | null;
  initialSyncDone: boolean;
}

export interface PollerManagerOptions extends PollerOptions {
  /** Devices unseen this long stop being polled. */
  idleDays: number;
  /** First polls (possibly large initial syncs) in flight at once. */
  firstPollConcurrency: number;
}

const key = (userId: string, deviceId: string) => `${userId}\0${deviceId}`;

export class PollerManager {
  #pollers = new Map<string, DevicePoller>();
  #firstPolls: Semaphore;
  #stopped = false;
  #idleTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly deps: PollerManagerDeps,
    private readonly opts: PollerManagerOptions,
  ) {
    this.#firstPolls = new Semaphore(opts.firstPollConcurrency);
  }

  get size(): number {
    return this.#pollers.size;
  }

  /** Tokens the pollers use, so debug dumps (heap snapshots) can overwrite them; never log them. */
  tokens(): string[] {
    return [...this.#pollers.values()].map((p) => p.token);
  }

  get(userId: string, deviceId: string): DevicePoller | undefined {
    return this.#pollers.get(key(userId, deviceId));
  }

  /** Starts polling for the device unless it already is; a new token replaces the old one. */
  ensurePolling(device: DeviceToPoll, token: string): DevicePoller {
    const existing = this.get(device.userId, device.deviceId);
    if (existing?.running) {
      existing.updateToken(token);
      return existing;
    }
    const poller = new DevicePoller(this.#pollerDeps(device), this.opts, device, token);
    this.#pollers.set(key(device.userId, device.deviceId), poller);
    if (!this.#stopped) poller.start();
    return poller;
  }

  #pollerDeps(device: DeviceToPoll) {
    const { homeserver, accumulator, pool, bus, cipher, telemetry } = this.deps;
    const logger = this.deps.logger.child({ user: device.userId, device: device.deviceId });
    return {
      homeserver,
      accumulator,
      pool,
      logger,
      telemetry,
      firstPollSlot: <T>(fn: () => Promise<T>) => this.#firstPolls.run(fn),
      // A user polled through another device whose initial sync is stored has its rooms stored:
      // this device's first sync then only needs its own to-device messages, which is far
      // cheaper. While that other initial sync is still running, this device does a full one.
      toDeviceOnlyFirst: () =>
        [...this.#pollers.values()].some(
          (p) => p.userId === device.userId && p.deviceId !== device.deviceId && p.running && p.initialSyncStored,
        ),
      onTokenDead: async (token: string, err: UpstreamError) => {
        await deleteToken(pool, hashToken(token));
        const newer = await latestToken(pool, device.userId, device.deviceId);
        if (newer) return cipher.decrypt(newer);
        this.#pollers.delete(key(device.userId, device.deviceId));
        bus.publish('device.token_expired', {
          userId: device.userId,
          deviceId: device.deviceId,
          softLogout: err.details.softLogout === true,
        });
        return undefined;
      },
    };
  }

  /** Resumes every device seen recently. Returns at once; first polls are throttled. */
  async resumeAll(): Promise<number> {
    const devices = await devicesToPoll(this.deps.pool, this.opts.idleDays);
    let resumed = 0;
    for (const d of devices) {
      let token: string;
      try {
        token = this.deps.cipher.decrypt(d.tokenEncrypted);
      } catch {
        this.deps.logger.warn(
          { user: d.userId, device: d.deviceId },
          'cannot decrypt a stored token (was SYNCV3_SECRET changed?); skipping',
        );
        continue;
      }
      this.ensurePolling(d, token);
      resumed++;
    }
    this.#idleTimer = setInterval(() => void this.expireIdle(), 3_600_000).unref();
    return resumed;
  }

  async expireIdle(): Promise<number> {
    const idle = await idleDevices(this.deps.pool, this.opts.idleDays).catch(() => []);
    for (const d of idle) await this.stopDevice(d.userId, d.deviceId);
    return idle.length;
  }

  /**
   * The device was logged out or deleted: its poller stops (its in-flight poll aborted) and
   * its held requests and connections hear of it, all before this resolves.
   */
  async loggedOut(userId: string, deviceId: string): Promise<void> {
    await this.stopDevice(userId, deviceId);
    this.deps.bus.publish('device.token_expired', { userId, deviceId, softLogout: false });
  }

  /**
   * The homeserver refused `token` somewhere other than in its poller (the token is already
   * deleted from the store): a poller using it continues with the device's newest remaining
   * token, or stops when there is none.
   */
  async tokenRefused(token: string, softLogout: boolean): Promise<void> {
    const poller = [...this.#pollers.values()].find((p) => p.token === token);
    if (!poller) return;
    const newer = await latestToken(this.deps.pool, poller.userId, poller.deviceId);
    if (newer) {
      poller.updateToken(this.deps.cipher.decrypt(newer));
      return;
    }
    await this.stopDevice(poller.userId, poller.deviceId);
    this.deps.bus.publish('device.token_expired', { userId: poller.userId, deviceId: poller.deviceId, softLogout });
  }

  /** The devices of a user that are polled here. */
  devicesOf(userId: string): string[] {
    return [...this.#pollers.values()].filter((p) => p.userId === userId).map((p) => p.deviceId);
  }

  async stopDevice(userId: string, deviceId: string): Promise<void> {
    const poller = this.get(userId, deviceId);
    this.#pollers.delete(key(userId, deviceId));
    await poller?.stop();
  }

  async stopAll(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#idleTimer);
    await Promise.all([...this.#pollers.values()].map((p) => p.stop()));
    this.#pollers.clear();
  }
}
