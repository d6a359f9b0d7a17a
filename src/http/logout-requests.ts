// The forwarded requests that end access tokens: logging out this device, all of the user's
// devices, or deleting devices. The proxy must stop honouring those tokens before the client
// learns the homeserver did, so these are recognised on their way through.
const PREFIX = '^/_matrix/client/(?:v3|r0)';
const LOGOUT = new RegExp(`${PREFIX}/logout/?$`);
const LOGOUT_ALL = new RegExp(`${PREFIX}/logout/all/?$`);
const DEVICE = new RegExp(`${PREFIX}/devices/([^/]+)$`);
const DELETE_DEVICES = new RegExp(`${PREFIX}/delete_devices$`);

export type LogoutRequest =
  | { kind: 'this_device' }
  | { kind: 'all_devices' }
  | { kind: 'device'; deviceId: string }
  /** The device ids are in the body: `{"devices": [...]}`. */
  | { kind: 'listed_devices' };

export function logoutRequest(method: string, path: string): LogoutRequest | undefined {
  if (method === 'POST' && LOGOUT.test(path)) return { kind: 'this_device' };
  if (method === 'POST' && LOGOUT_ALL.test(path)) return { kind: 'all_devices' };
  if (method === 'POST' && DELETE_DEVICES.test(path)) return { kind: 'listed_devices' };
  const device = method === 'DELETE' ? DEVICE.exec(path)?.[1] : undefined;
  if (device !== undefined) {
    try {
      return { kind: 'device', deviceId: decodeURIComponent(device) };
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** The devices a `POST /delete_devices` body names; none when it is not the expected shape. */
export function listedDevices(body: Buffer): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return [];
  }
  const devices = (parsed as { devices?: unknown } | null)?.devices;
  return Array.isArray(devices) ? devices.filter((d): d is string => typeof d === 'string') : [];
}
