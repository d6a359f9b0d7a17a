// Owns every device poller: starts one per (user, device) on first use, resumes them all at
// startup without blocking serving, stops them when tokens die or devices go idle. With
// SYNCV3_CLUSTER (`leases` given), only the devices whose lease this process holds: it claims
// free devices up to its fair share of the live processes every `rebalanceMs`, sheds what it
// holds beyond that, and serves the rest through RemoteDevice views.
import type { Bus } from '../bus/bus.js';
import type { Accumulator } from '../ingest/accumulator.js';
import type { Pool } from '../store/db.js';
import type { DeviceLeases } from '../store/device-leases.js';
import { countDevicesToPoll, deleteToken, devicesToPoll, deviceToPoll, idleDevices, latestToken } from '../store/devices-table.js';
import { hashToken, type TokenCipher } from '../store/token-cipher.js';
import type { Logger } from '../telemetry/logger.js';
import type { Telemetry } from '../telemetry/telemetry.js';
import type { UpstreamError } from '../upstream/errors.js';
import type { Homeserver } from '../upstream/homeserver-client.js';
import { DevicePoller, type PollerOptions } from './device-poller.js';
import { type PolledDevice, RemoteDevice } from './remote-device.js';
import { Semaphore } from './semaphore.js';

export interface PollerManagerDeps {
  homeserver: Homeserver;
  accumulator: Accumulator;
  pool: Pool;
  bus: Bus;
  cipher: TokenCipher;
  logger: Logger;
  telemetry?: Telemetry;
  /** Set: one of several processes (SYNCV3_CLUSTER); poll only the devices leased here. */
  leases?: DeviceLeases;
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
  /** With leases: how often free devices are claimed and excess ones shed. */
  rebalanceMs?: number;
}

const key = (userId: string, deviceId: string) => `${userId}\0${deviceId}`;

export class PollerManager {
  #pollers = new Map<string, DevicePoller>();
  #firstPolls: Semaphore;
  #stopped = false;
  #idleTimer: NodeJS.Timeout | undefined;
  /** Devices served here and polled elsewhere (cluster only). */
  #remote = new Map<string, RemoteDevice>();
  #rebalanceTimer: NodeJS.Timeout | undefined;
  #rebalancing: Promise<void> | undefined;

  constructor(
    private readonly deps: PollerManagerDeps,
    private readonly opts: PollerManagerOptions,
  ) {
    this.#firstPolls = new Semaphore(opts.firstPollConcurrency);
    if (deps.leases) {
      deps.bus.subscribe('device.initial_sync_done', (d) => this.#remote.get(key(d.userId, d.deviceId))?.wake());
      // Another process saw the device logged out or its token die: stop polling it here too.
      deps.bus.subscribe('device.token_expired', (d) => {
        this.#remote.get(key(d.userId, d.deviceId))?.tokenDead(d.softLogout);
        this.#remote.delete(key(d.userId, d.deviceId));
        if (this.get(d.userId, d.deviceId)) void this.stopDevice(d.userId, d.deviceId);
      });
    }
  }

  get clustered(): boolean {
    return this.deps.leases !== undefined;
  }

  get size(): number {
    return this.#pollers.size;
  }

  /** Tokens the pollers use, so debug dumps (heap snapshots) can overwrite them; never log them. */
  tokens(): string[] {
    return [...this.#pollers.values()].map((p) => p.token);
  }

  /** The device's poller here, or (cluster) the view of a device polled elsewhere. */
  get(userId: string, deviceId: string): PolledDevice | undefined {
    return this.#pollers.get(key(userId, deviceId)) ?? this.#remote.get(key(userId, deviceId));
  }

  /** The device's poller in this process, if it polls the device. */
  local(userId: string, deviceId: string): DevicePoller | undefined {
    return this.#pollers.get(key(userId, deviceId));
  }

  /**
   * Starts polling for the device unless it already is; a new token replaces the old one. In a
   * cluster the device is claimed here if no process holds it, and otherwise served as remote.
   */
  ensurePolling(device: DeviceToPoll, token: string): PolledDevice {
    const existing = this.local(device.userId, device.deviceId);
    if (existing?.running) {
      existing.updateToken(token);
      return existing;
    }
    if (this.deps.leases) return this.#ensureRemote(device, token);
    return this.#startLocal(device, token);
  }

  #ensureRemote(device: DeviceToPoll, token: string): PolledDevice {
    const view = this.#remoteView(device.userId, device.deviceId, token, device.initialSyncDone);
    void this.#claim(device, token).then(
      (claimed) => claimed && view.wake(),
      (err) => this.deps.logger.warn({ err, user: device.userId, device: device.deviceId }, 'claiming a device failed'),
    );
    return view;
  }

  /** The view of a device served here and polled elsewhere, with the newest token seen. */
  #remoteView(userId: string, deviceId: string, token: string, initialSyncDone: boolean): RemoteDevice {
    const k = key(userId, deviceId);
    let remote = this.#remote.get(k);
    if (remote) remote.token = token;
    else {
      remote = new RemoteDevice(userId, deviceId, token, initialSyncDone, {
        pool: this.deps.pool,
        checkMs: this.opts.rebalanceMs ?? 2_000,
        local: () => this.local(userId, deviceId),
      });
      this.#remote.set(k, remote);
    }
    return remote;
  }

  /** Takes the device's lease if free and polls it here; false when another process holds it. */
  async #claim(device: DeviceToPoll, token: string): Promise<boolean> {
    const leases = this.deps.leases;
    if (!leases || this.#stopped) return false;
    if (this.local(device.userId, device.deviceId)?.running) return true;
    if (!(await leases.tryAcquire(device.userId, device.deviceId))) return false;
    if (this.#stopped) {
      await leases.release(device.userId, device.deviceId);
      return false;
    }
    this.#remote.delete(key(device.userId, device.deviceId));
    this.#startLocal(device, token);
    return true;
  }

  #startLocal(device: DeviceToPoll, token: string): DevicePoller {
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
      onInitialSyncDone: () => bus.publish('device.initial_sync_done', { userId: device.userId, deviceId: device.deviceId }),
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
        await this.deps.leases?.release(device.userId, device.deviceId);
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
    this.#idleTimer = setInterval(() => void this.expireIdle(), 3_600_000).unref();
    if (this.deps.leases) return this.#startRebalancing();
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
    return resumed;
  }

  /** Cluster: claims this process's share now, then keeps rebalancing. Returns the devices claimed. */
  async #startRebalancing(): Promise<number> {
    const tick = () => {
      this.#rebalancing ??= this.rebalance()
        .catch((err) => this.deps.logger.warn({ err }, 'rebalancing devices failed; retrying'))
        .finally(() => {
          this.#rebalancing = undefined;
        });
      return this.#rebalancing;
    };
    this.#rebalanceTimer = setInterval(() => void tick(), this.opts.rebalanceMs ?? 2_000).unref();
    await tick();
    return this.#pollers.size;
  }

  /**
   * Cluster: this process's fair share is the devices to poll over the live processes, rounded
   * up. Devices held beyond it are released (their initial sync stored, so no client waits on
   * them), for the others to claim; free ones are claimed up to it. A device dropped by a dead
   * process is free at once (its session ended), so it is claimed within one period.
   *
   * Every process runs this every `rebalanceMs`, so a settled one reads two counts and nothing
   * else; devices and tokens are read only for what is claimed.
   */
  async rebalance(): Promise<void> {
    const leases = this.deps.leases;
    if (!leases || this.#stopped) return;
    const devices = await countDevicesToPoll(this.deps.pool, this.opts.idleDays);
    const live = await leases.liveProcesses();
    const fair = Math.ceil(devices / Math.max(1, live));
    const excess = this.#pollers.size - fair;
    if (excess > 0) {
      const shed = [...this.#pollers.values()].filter((p) => p.initialSyncStored).slice(0, excess);
      for (const p of shed) {
        await this.stopDevice(p.userId, p.deviceId);
        this.#remoteView(p.userId, p.deviceId, p.token, true);
      }
      if (shed.length) this.deps.logger.info({ released: shed.length, fair, live }, 'released devices beyond this process share');
    }
    if (this.#pollers.size >= fair) return;
    let claimed = 0;
    for (const d of await leases.freeDevices(this.opts.idleDays, fair - this.#pollers.size)) {
      if (this.#pollers.size >= fair || this.#stopped) break;
      if (await this.#claimFree(leases, d.userId, d.deviceId)) claimed++;
    }
    if (claimed) this.deps.logger.info({ claimed, polled: this.#pollers.size, fair, live }, 'claimed devices');
  }

  /** Takes a free device's lease, then reads and decrypts its token and polls it here. */
  async #claimFree(leases: DeviceLeases, userId: string, deviceId: string): Promise<boolean> {
    if (!(await leases.tryAcquire(userId, deviceId))) return false;
    let token: string | undefined;
    const device = await deviceToPoll(this.deps.pool, userId, deviceId).catch(() => undefined);
    if (device) {
      try {
        token = this.deps.cipher.decrypt(device.tokenEncrypted);
      } catch {
        this.deps.logger.warn(
          { user: userId, device: deviceId },
          'cannot decrypt a stored token (was SYNCV3_SECRET changed?); not polling it',
        );
      }
    }
    if (!device || token === undefined || this.#stopped || this.local(userId, deviceId)?.running) {
      // Advisory locks count per session: a request's claim meanwhile took its own count, so
      // this one is given back either way.
      await leases.release(userId, deviceId);
      return false;
    }
    this.#remote.delete(key(userId, deviceId));
    this.#startLocal(device, token);
    return true;
  }

  /** Cluster: the lease connection is gone, and with it every lease: stop polling at once. */
  leasesLost(): void {
    const pollers = [...this.#pollers.values()];
    this.#pollers.clear();
    for (const p of pollers) {
      void p.stop();
      this.#remoteView(p.userId, p.deviceId, p.token, p.initialSyncStored);
    }
    if (pollers.length)
      this.deps.logger.error({ devices: pollers.length }, 'device leases lost: stopped polling; reclaiming when the database answers');
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
    const poller = [...this.#pollers.values()].find((p) => p.token === token) ?? [...this.#remote.values()].find((p) => p.token === token);
    if (!poller) return;
    const newer = await latestToken(this.deps.pool, poller.userId, poller.deviceId);
    if (newer) {
      if (poller instanceof DevicePoller) poller.updateToken(this.deps.cipher.decrypt(newer));
      else poller.token = this.deps.cipher.decrypt(newer);
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
    const poller = this.local(userId, deviceId);
    this.#pollers.delete(key(userId, deviceId));
    this.#remote.delete(key(userId, deviceId));
    await poller?.stop();
    // Released only once stopped: no moment with two pollers of one device.
    if (poller) await this.deps.leases?.release(userId, deviceId);
  }

  async stopAll(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#idleTimer);
    clearInterval(this.#rebalanceTimer);
    await this.#rebalancing;
    await Promise.all([...this.#pollers.values()].map((p) => p.stop()));
    this.#pollers.clear();
    await this.deps.leases?.close();
  }
}
