// A device this process serves but does not poll (SYNCV3_CLUSTER: another process holds its
// lease, or nobody does yet). Its first request waits for the initial sync whoever polls it
// stores: told by the bus, and checked in the store on every wake-up and every `checkMs`, so a
// lost or late message costs at most that long. A lease taken here meanwhile hands the wait
// over to the local poller.
import type { InitialSyncFailure, InitialSyncProgress } from '../initial-sync.js';
import type { Pool } from '../store/db.js';
import { getDevice } from '../store/devices-table.js';

export interface PolledDevice {
  readonly userId: string;
  readonly deviceId: string;
  readonly token: string;
  readonly running: boolean;
  readonly initialSyncStored: boolean;
  readonly initialSyncProgress: InitialSyncProgress;
  /** Resolves once the first sync is stored (undefined), or with why it cannot be had; rejects only on `signal`. */
  waitForInitialSync(signal?: AbortSignal): Promise<InitialSyncFailure | undefined>;
}

export class RemoteDevice implements PolledDevice {
  #done: boolean;
  #failure: InitialSyncFailure | undefined;
  #wakers = new Set<() => void>();

  constructor(
    readonly userId: string,
    readonly deviceId: string,
    public token: string,
    initialSyncDone: boolean,
    private readonly deps: { pool: Pool; checkMs: number; local: () => PolledDevice | undefined },
  ) {
    this.#done = initialSyncDone;
  }

  get running(): boolean {
    return true;
  }

  get initialSyncStored(): boolean {
    return this.#done;
  }

  get initialSyncProgress(): InitialSyncProgress {
    return { done: this.#done, bytesReceived: 0 };
  }

  /** The bus said something about this device (its initial sync stored, or its lease moved). */
  wake(): void {
    for (const w of [...this.#wakers]) w();
  }

  /** The device's token died: waiting and later requests hear it (auth/ answers 401). */
  tokenDead(softLogout: boolean): void {
    this.#failure = { reason: 'token_dead', softLogout };
    this.wake();
  }

  async waitForInitialSync(signal?: AbortSignal): Promise<InitialSyncFailure | undefined> {
    for (;;) {
      if (this.#failure) return this.#failure;
      const local = this.deps.local();
      if (local) return local.waitForInitialSync(signal);
      if (this.#done) return undefined;
      const row = await getDevice(this.deps.pool, this.userId, this.deviceId);
      if (!row) return { reason: 'token_dead', softLogout: false };
      if (row.initialSyncDone || row.since !== null) {
        this.#done = true;
        return undefined;
      }
      await new Promise<void>((resolve, reject) => {
        if (signal?.aborted) return reject(signal.reason);
        const cleanup = () => {
          clearTimeout(timer);
          this.#wakers.delete(done);
          signal?.removeEventListener('abort', onAbort);
        };
        const done = () => {
          cleanup();
          resolve();
        };
        const onAbort = () => {
          cleanup();
          reject(signal?.reason);
        };
        const timer = setTimeout(done, this.deps.checkMs);
        this.#wakers.add(done);
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    }
  }
}
