// Raw Client-Server API calls against a real homeserver, for the end-to-end tier: users with
// unique names, rooms, messages, state, membership, ephemeral data, account data, to-device
// messages and keys, plus one sliding sync request (to the proxy or to Synapse's own endpoint).
import { createHmac, randomBytes } from 'node:crypto';

export const SLIDING_SYNC_PATH = '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync';

/** A non-2xx answer, with the Matrix error body when there was one. */
export class MatrixHttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: { errcode?: string; error?: string; [k: string]: unknown },
    what: string,
  ) {
    super(`${what}: HTTP ${status} ${JSON.stringify(body)}`);
  }

  get errcode(): string | undefined {
    return this.body.errcode;
  }
}

// biome-ignore lint/suspicious/noExplicitAny: JSON from the wire; tests assert on its shape.
export type Json = any;

export async function requestJson(
  method: string,
  url: string,
  opts: { token?: string; body?: unknown; timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<Json> {
  const timeout = AbortSignal.timeout(opts.timeoutMs ?? 30_000);
  const res = await fetch(url, {
    method,
    headers: {
      ...(opts.body === undefined ? {} : { 'content-type': 'application/json' }),
      ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
    },
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    signal: opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout,
  });
  const text = await res.text();
  let parsed: Json = {};
  try {
    parsed = text ? JSON.parse(text) : {};
  } catch {
    parsed = { error: text };
  }
  if (!res.ok) throw new MatrixHttpError(res.status, parsed, `${method} ${new URL(url).pathname}`);
  return parsed;
}

export interface SlidingSyncOptions {
  pos?: string;
  /** Long-poll ms (query parameter). */
  timeout?: number;
  /** Extra ms the HTTP request may take beyond `timeout`. */
  slackMs?: number;
  /** Ends the request early (a benchmark stopping its long-polls). */
  signal?: AbortSignal;
}

/** One MSC4186 request to `baseUrl` (the proxy, or Synapse for its native answer). */
export function slidingSync(baseUrl: string, token: string, body: unknown, opts: SlidingSyncOptions = {}): Promise<Json> {
  const query = new URLSearchParams();
  if (opts.pos !== undefined) query.set('pos', opts.pos);
  if (opts.timeout !== undefined) query.set('timeout', String(opts.timeout));
  const qs = query.size ? `?${query}` : '';
  return requestJson('POST', `${baseUrl}${SLIDING_SYNC_PATH}${qs}`, {
    token,
    body,
    timeoutMs: (opts.timeout ?? 0) + (opts.slackMs ?? 30_000),
    signal: opts.signal,
  });
}

let txnCounter = 0;
/** Transaction ids unique in this process (and random across runs). */
export const txnId = () => `e2e-${process.pid}-${++txnCounter}-${randomBytes(3).toString('hex')}`;

export interface CreateRoomOptions {
  name?: string;
  topic?: string;
  preset?: 'private_chat' | 'public_chat' | 'trusted_private_chat';
  is_direct?: boolean;
  invite?: string[];
  initial_state?: { type: string; state_key?: string; content: Record<string, unknown> }[];
  creation_content?: Record<string, unknown>;
  visibility?: 'public' | 'private';
}

/** The `initial_state` entry that makes a room encrypted. */
export const ENCRYPTION_STATE = { type: 'm.room.encryption', state_key: '', content: { algorithm: 'm.megolm.v1.aes-sha2' } };

/** One device of a registered user. */
export class MatrixUser {
  constructor(
    readonly hs: string,
    readonly userId: string,
    readonly accessToken: string,
    readonly deviceId: string,
    readonly localpart: string,
    private readonly password: string,
  ) {}

  private call(method: string, path: string, body?: unknown): Promise<Json> {
    return requestJson(method, `${this.hs}/_matrix/client/v3${path}`, { token: this.accessToken, body });
  }

  private room(roomId: string): string {
    return `/rooms/${encodeURIComponent(roomId)}`;
  }

  /** A second (third, …) device of the same user, by password login. */
  async login(deviceName = 'e2e device'): Promise<MatrixUser> {
    const res = await requestJson('POST', `${this.hs}/_matrix/client/v3/login`, {
      body: {
        type: 'm.login.password',
        identifier: { type: 'm.id.user', user: this.localpart },
        password: this.password,
        initial_device_display_name: deviceName,
      },
    });
    return new MatrixUser(this.hs, res.user_id, res.access_token, res.device_id, this.localpart, this.password);
  }

  /** Ends this device's session upstream: its access token dies. */
  async logout(): Promise<void> {
    await this.call('POST', '/logout', {});
  }

  async createRoom(opts: CreateRoomOptions = {}): Promise<string> {
    const res = await this.call('POST', '/createRoom', { preset: 'private_chat', ...opts });
    return res.room_id;
  }

  /** Sends an m.room.message; returns its event id. */
  async sendMessage(roomId: string, body: string, txn = txnId()): Promise<string> {
    return this.sendEvent(roomId, 'm.room.message', { msgtype: 'm.text', body }, txn);
  }

  async sendEvent(roomId: string, type: string, content: Record<string, unknown>, txn = txnId()): Promise<string> {
    const res = await this.call('PUT', `${this.room(roomId)}/send/${encodeURIComponent(type)}/${encodeURIComponent(txn)}`, content);
    return res.event_id;
  }

  async setState(roomId: string, type: string, stateKey: string, content: Record<string, unknown>): Promise<string> {
    const res = await this.call('PUT', `${this.room(roomId)}/state/${encodeURIComponent(type)}/${encodeURIComponent(stateKey)}`, content);
    return res.event_id;
  }

  async invite(roomId: string, userId: string): Promise<void> {
    await this.call('POST', `${this.room(roomId)}/invite`, { user_id: userId });
  }

  async join(roomId: string): Promise<void> {
    await this.call('POST', `/join/${encodeURIComponent(roomId)}`, {});
  }

  /** Asks to join a room whose join rule is `knock` (POST /knock/{roomIdOrAlias}). */
  async knock(roomId: string, reason?: string): Promise<void> {
    await this.call('POST', `/knock/${encodeURIComponent(roomId)}`, reason === undefined ? {} : { reason });
  }

  async leave(roomId: string): Promise<void> {
    await this.call('POST', `${this.room(roomId)}/leave`, {});
  }

  async kick(roomId: string, userId: string, reason?: string): Promise<void> {
    await this.call('POST', `${this.room(roomId)}/kick`, { user_id: userId, reason });
  }

  async ban(roomId: string, userId: string, reason?: string): Promise<void> {
    await this.call('POST', `${this.room(roomId)}/ban`, { user_id: userId, reason });
  }

  async typing(roomId: string, typing: boolean, timeoutMs = 30_000): Promise<void> {
    await this.call(
      'PUT',
      `${this.room(roomId)}/typing/${encodeURIComponent(this.userId)}`,
      typing ? { typing, timeout: timeoutMs } : { typing },
    );
  }

  async receipt(roomId: string, eventId: string, type: 'm.read' | 'm.read.private' = 'm.read'): Promise<void> {
    await this.call('POST', `${this.room(roomId)}/receipt/${type}/${encodeURIComponent(eventId)}`, {});
  }

  async setAccountData(type: string, content: Record<string, unknown>): Promise<void> {
    await this.call('PUT', `/user/${encodeURIComponent(this.userId)}/account_data/${encodeURIComponent(type)}`, content);
  }

  async setRoomAccountData(roomId: string, type: string, content: Record<string, unknown>): Promise<void> {
    await this.call(
      'PUT',
      `/user/${encodeURIComponent(this.userId)}/rooms/${encodeURIComponent(roomId)}/account_data/${encodeURIComponent(type)}`,
      content,
    );
  }

  async setTag(roomId: string, tag: string, order?: number): Promise<void> {
    await this.call(
      'PUT',
      `/user/${encodeURIComponent(this.userId)}/rooms/${encodeURIComponent(roomId)}/tags/${encodeURIComponent(tag)}`,
      order === undefined ? {} : { order },
    );
  }

  /** `messages`: user id → device id (or "*") → content. */
  async sendToDevice(type: string, messages: Record<string, Record<string, Record<string, unknown>>>, txn = txnId()): Promise<void> {
    await this.call('PUT', `/sendToDevice/${encodeURIComponent(type)}/${encodeURIComponent(txn)}`, { messages });
  }

  /**
   * Uploads `count` fake one-time keys (well-formed: key ids, base64-looking keys, a signature
   * map; Synapse does not verify OTK signatures on upload) and, if asked, device keys.
   * Returns the counts the homeserver reports.
   */
  async uploadKeys(opts: { oneTimeKeys?: number; deviceKeys?: boolean; fallbackKey?: boolean } = {}): Promise<Record<string, number>> {
    const sig = (): Record<string, Record<string, string>> => ({
      [this.userId]: { [`ed25519:${this.deviceId}`]: randomBytes(64).toString('base64').replace(/=+$/, '') },
    });
    const key = () => randomBytes(32).toString('base64').replace(/=+$/, '');
    const body: Record<string, unknown> = {};
    if (opts.deviceKeys) {
      body.device_keys = {
        user_id: this.userId,
        device_id: this.deviceId,
        algorithms: ['m.olm.v1.curve25519-aes-sha2', 'm.megolm.v1.aes-sha2'],
        keys: { [`curve25519:${this.deviceId}`]: key(), [`ed25519:${this.deviceId}`]: key() },
        signatures: sig(),
      };
    }
    if (opts.oneTimeKeys) {
      const otks: Record<string, unknown> = {};
      for (let i = 0; i < opts.oneTimeKeys; i++)
        otks[`signed_curve25519:${randomBytes(4).toString('hex')}`] = { key: key(), signatures: sig() };
      body.one_time_keys = otks;
    }
    if (opts.fallbackKey) {
      body.fallback_keys = { [`signed_curve25519:fb${randomBytes(3).toString('hex')}`]: { key: key(), fallback: true, signatures: sig() } };
    }
    const res = await this.call('POST', '/keys/upload', body);
    return res.one_time_key_counts;
  }

  /** A sliding sync request with this device's token. */
  slidingSync(baseUrl: string, body: unknown, opts: SlidingSyncOptions = {}): Promise<Json> {
    return slidingSync(baseUrl, this.accessToken, body, opts);
  }
}

/** Registers a user with a unique name (no verification: the test homeserver allows dummy auth). */
export async function registerUser(hs: string, prefix = 'user'): Promise<MatrixUser> {
  const localpart = `${prefix}-${randomBytes(5).toString('hex')}`.toLowerCase();
  const password = randomBytes(12).toString('hex');
  const res = await requestJson('POST', `${hs}/_matrix/client/v3/register`, {
    body: { username: localpart, password, auth: { type: 'm.login.dummy' }, initial_device_display_name: 'e2e' },
  });
  return new MatrixUser(hs, res.user_id, res.access_token, res.device_id, localpart, password);
}

/**
 * Registers `localpart` with Synapse's shared-secret admin API (GET a nonce, POST with an
 * HMAC-SHA1 over nonce, user, password and admin flag), which works whether or not open
 * registration is, for homeservers whose `registration_shared_secret` the caller knows.
 */
export async function registerWithSharedSecret(hs: string, secret: string, localpart: string): Promise<MatrixUser> {
  const url = `${hs}/_synapse/admin/v1/register`;
  const { nonce } = await requestJson('GET', url);
  const password = randomBytes(12).toString('hex');
  const mac = createHmac('sha1', secret).update(`${nonce}\0${localpart}\0${password}\0notadmin`).digest('hex');
  const res = await requestJson('POST', url, { body: { nonce, username: localpart, password, admin: false, mac } });
  return new MatrixUser(hs, res.user_id, res.access_token, res.device_id, localpart, password);
}

/**
 * Polls `probe` until it returns a value other than undefined, at most `timeoutMs`; a bounded
 * wait for something asynchronous to happen, never a fixed sleep.
 */
export async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 10_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const why = lastError ? `; last error: ${(lastError as Error).message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
