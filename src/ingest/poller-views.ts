// Where each poller's view of each room stands against the stored timeline: the latest stored
// timeline event it has seen there (its anchor), and whether its own stream has a gap (it
// started with a to-device-only sync, or a response was skipped). With this, a response from
// a poller that lags behind another is recognised as older than what is stored (kept out of
// the timeline, the hole marked) instead of being appended out of order, and the first events
// after a gap in a poller's stream are marked as following a gap.
//
// Kept in memory: after a restart every poller starts without anchors and without the blind
// mark, so its next events continue the stored timeline (as they would in one poller's world).
import type { DeviceRef } from '../store/device-inbox-table.js';
import type { RoomTip } from '../store/room-state-table.js';
import type { RoomPlacement } from './room-events.js';

interface View {
  blind: boolean;
  /** Per room: the latest stored timeline event seen, and the last event seen at all (in or out of the timeline). */
  anchors: Map<string, { anchor: number; last: number }>;
}

const keyOf = (device: DeviceRef) => `${device.userId}\u0000${device.deviceId}`;

export class PollerViews {
  readonly #views = new Map<string, View>();

  placements(device: DeviceRef, tips: Map<string, RoomTip>, initial: boolean): Map<string, RoomPlacement> {
    const view = this.#views.get(keyOf(device));
    const out = new Map<string, RoomPlacement>();
    for (const [roomId, tip] of tips) {
      out.set(roomId, { tip: tip.nid, tipTs: tip.ts, anchor: view?.anchors.get(roomId)?.anchor, blind: view?.blind ?? false, initial });
    }
    return out;
  }

  /** The last event the poller brought in the room (a timeline's last event). */
  last(device: DeviceRef, roomId: string): number | undefined {
    return this.#views.get(keyOf(device))?.anchors.get(roomId)?.last;
  }

  /**
   * After a commit: where each room's chunk left the poller ('tip': the room's tip after it),
   * and the position of the chunk's last event.
   */
  record(
    device: DeviceRef,
    ends: Map<string, number | 'tip'>,
    tipAfter: (roomId: string) => number,
    lastOf: (roomId: string) => number,
  ): void {
    if (ends.size === 0) return;
    const key = keyOf(device);
    const view = this.#views.get(key) ?? { blind: false, anchors: new Map() };
    this.#views.set(key, view);
    for (const [roomId, end] of ends) view.anchors.set(roomId, { anchor: end === 'tip' ? tipAfter(roomId) : end, last: lastOf(roomId) });
  }

  /** The poller's stream skipped rooms' events: whatever it brings next may follow a hole. */
  blind(device: DeviceRef): void {
    this.#views.set(keyOf(device), { blind: true, anchors: new Map() });
  }

  /** The device is gone (token dead, logged out). */
  forget(device: DeviceRef): void {
    this.#views.delete(keyOf(device));
  }
}
