// e2ee (MSC3884): device list changes on every incremental response, and the device's
// one-time-key counts and unused fallback key types on every response (Synapse's presence rules).
import { deviceListChangesSince, keyCounts } from '../../store/device-inbox-table.js';
import { RawJson } from '../json.js';
import type { ExtensionContext, ExtensionOutput } from './index.js';

export async function e2eeExtension(ctx: ExtensionContext): Promise<ExtensionOutput | undefined> {
  if (!ctx.request.e2ee) return undefined;
  const keys = await keyCounts(ctx.pool, ctx.device);
  const data: Record<string, unknown> = {
    device_one_time_keys_count: new RawJson(keys?.otkCounts ?? '{"signed_curve25519":0}'),
    device_unused_fallback_key_types: new RawJson(keys?.fallbackKeyTypes ?? '[]'),
  };
  let wakes = false;
  if (!ctx.initial) {
    const since = ctx.positions.deviceLists ?? ctx.from;
    const lists = await deviceListChangesSince(ctx.pool, ctx.device, since);
    data.device_lists = lists;
    wakes = lists.changed.length + lists.left.length > 0;
  }
  return { data, wakes, positions: { deviceLists: ctx.upTo } };
}
