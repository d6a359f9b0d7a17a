// What authentication needs of the pollers, declared here and implemented below by
// poller/poller-manager.ts (wired in proxy.ts): auth/ knows which device a token is, the
// poller knows how far that device's v2 sync has got. The poller answers in its own terms
// (why a first sync cannot be had); auth/ turns that into what the client is told.

import type { InitialSyncFailure, InitialSyncProgress } from '../initial-sync.js';

/** One polled device, as authentication sees it. */
export interface PolledDevice {
  /** Resolves once the first sync is stored (undefined), or with why it cannot be had; rejects only on `signal`. */
  waitForInitialSync(signal?: AbortSignal): Promise<InitialSyncFailure | undefined>;
  readonly initialSyncProgress: InitialSyncProgress;
}

export interface DevicePolling {
  /** Polls the device (with this token from now on) unless it already is. */
  ensurePolling(device: { userId: string; deviceId: string; since: string | null; initialSyncDone: boolean }, token: string): unknown;
  get(userId: string, deviceId: string): PolledDevice | undefined;
  /** The user's devices polled here. */
  devicesOf(userId: string): string[];
  /** The device was logged out: its poller stops and its connections end, before this resolves. */
  loggedOut(userId: string, deviceId: string): Promise<void>;
  /** The homeserver refused this token (already deleted from the store): polling moves to a newer one or stops. */
  tokenRefused(token: string, softLogout: boolean): Promise<void>;
}
