// Typed pub/sub between ingest (publisher) and caches/sync (subscribers), within one process:
// it is the only implementation, and what a process publishes no other process hears (see
// docs/architecture.md, "Scale-out"). Subscribers run synchronously in publish order, so a
// subscriber must only update memory and wake waiters, never do I/O inline.
import type { Logger } from '../telemetry/logger.js';
import type { Telemetry } from '../telemetry/telemetry.js';
import type { BusMessages, BusTopic } from './messages.js';

export type Handler<T extends BusTopic> = (message: BusMessages[T]) => void;

/** One message, as kept while a transaction decides whether it is sent. */
export type Envelope = { [T in BusTopic]: { topic: T; message: BusMessages[T] } }[BusTopic];

export interface Bus {
  publish<T extends BusTopic>(topic: T, message: BusMessages[T]): void;
  /** Returns the unsubscribe function. */
  subscribe<T extends BusTopic>(topic: T, handler: Handler<T>): () => void;
  /**
   * A bus across processes: sends messages to the other processes as part of the transaction
   * `tx`, so they are delivered when it commits; the publisher then calls deliverLocal for this
   * process's own subscribers. Absent: publish after commit.
   */
  sendInTransaction?(tx: unknown, messages: readonly Envelope[]): Promise<void>;
  deliverLocal?(messages: readonly Envelope[]): void;
}

export function createInProcessBus(logger: Logger, telemetry?: Pick<Telemetry, 'metrics' | 'errors'>): Bus {
  const handlers = new Map<BusTopic, Set<Handler<never>>>();
  return {
    publish(topic, message) {
      const subscribers = handlers.get(topic);
      telemetry?.metrics.busPublished.inc({ payload_type: topic });
      if (subscribers?.size) telemetry?.metrics.busDelivered.inc({ payload_type: topic }, subscribers.size);
      for (const handler of subscribers ?? []) {
        try {
          (handler as Handler<typeof topic>)(message);
        } catch (err) {
          // One broken subscriber must not starve the others or the publisher.
          logger.error({ err, topic }, 'bus subscriber failed');
          telemetry?.errors.capture(err, { tags: { topic } });
        }
      }
    },
    subscribe(topic, handler) {
      const set = handlers.get(topic) ?? new Set();
      handlers.set(topic, set);
      set.add(handler as Handler<never>);
      return () => set.delete(handler as Handler<never>);
    },
  };
}
