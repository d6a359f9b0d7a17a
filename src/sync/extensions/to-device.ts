// to_device (MSC3885): the device's queued messages, oldest first. `since` acknowledges (and
// deletes) everything up to it; a retried `since` returns the same messages again. Only the
// connection that asks consumes them.
import { ackToDevice, toDeviceAfter } from '../../store/device-inbox-table.js';
import { RawJson } from '../json.js';
import type { ExtensionContext, ExtensionOutput } from './index.js';

export async function toDeviceExtension(ctx: ExtensionContext): Promise<ExtensionOutput | undefined> {
  const req = ctx.request.toDevice;
  if (!req) return undefined;
  const since = req.since ? Number(req.since) : 0;
  if (since > 0) await ackToDevice(ctx.pool, ctx.device, since);
  const messages = await toDeviceAfter(ctx.pool, ctx.device, since, req.limit);
  const last = messages.at(-1);
  return {
    data: { next_batch: String(last ? last.pos : since), events: messages.map((m) => new RawJson(m.json)) },
    wakes: messages.length > 0,
  };
}
