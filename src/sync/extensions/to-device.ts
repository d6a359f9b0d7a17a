// to_device (MSC3885): the device's queued messages, oldest first. `since` acknowledges (and
// deletes) everything up to it; a retried `since` returns the same messages again. Only the
// connection that asks consumes them.
import type { Queryable } from '../../store/db.js';
import { ackToDevice, type DeviceRef, toDeviceAfter } from '../../store/device-inbox-table.js';
import { RawJson } from '../json.js';
import type { ExtensionContext, ExtensionOutput } from './index.js';

/** A device's to-device inbox, as this extension uses it: the store's, or a fake in unit tests. */
export interface ToDeviceInbox {
  /** Deletes the device's messages up to `upTo`. */
  ack(device: DeviceRef, upTo: number): Promise<unknown>;
  /** The device's messages after `after`, oldest first, at most `limit`. */
  after(device: DeviceRef, after: number, limit: number): Promise<{ pos: number; json: string }[]>;
}

const storedInbox = (db: Queryable): ToDeviceInbox => ({
  ack: (device, upTo) => ackToDevice(db, device, upTo),
  after: (device, after, limit) => toDeviceAfter(db, device, after, limit),
});

export async function toDeviceExtension(
  ctx: ExtensionContext,
  inbox: ToDeviceInbox = storedInbox(ctx.pool),
): Promise<ExtensionOutput | undefined> {
  const req = ctx.request.toDevice;
  if (!req) return undefined;
  const since = req.since ? Number(req.since) : 0;
  if (since > 0) await inbox.ack(ctx.device, since);
  const messages = await inbox.after(ctx.device, since, req.limit);
  const last = messages.at(-1);
  return {
    data: { next_batch: String(last ? last.pos : since), events: messages.map((m) => new RawJson(m.json)) },
    wakes: messages.length > 0,
  };
}
