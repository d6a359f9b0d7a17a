// The bus across processes (SYNCV3_CLUSTER), behind the same Bus interface: every message is
// delivered to this process's subscribers at once, as the in-process bus does, and sent to the
// other processes over PostgreSQL NOTIFY; what they send arrives through LISTEN and is
// delivered here the same way. Ingest messages travel inside the ingest transaction
// (sendInTransaction), so the others hear of a change when it commits. Messages are batched
// into payloads under NOTIFY's 8000-byte limit. After the listener reconnects, everything
// stored since the last position seen is announced again from the store (catchUp), so a drop
// never leaves a long-poll asleep on a change it missed.
import type { Logger } from '../telemetry/logger.js';
import type { Telemetry } from '../telemetry/telemetry.js';
import { type Bus, createInProcessBus, type Envelope } from './bus.js';
import type { BusTopic } from './messages.js';

/** NOTIFY refuses payloads of 8000 bytes or more; room is left for the envelope. */
export const MAX_PAYLOAD_BYTES = 7900;

export interface ClusterTransport {
  /** Sends payloads as part of the transaction `tx` (delivered when it commits). */
  notifyInTransaction(tx: unknown, payloads: readonly string[]): Promise<void>;
  /** Sends payloads at once, outside any transaction. */
  notify(payloads: readonly string[]): Promise<void>;
  /** Messages announcing what was stored after `pos`, and the highest committed position. */
  changesSince(pos: number): Promise<{ pos: number; messages: Envelope[] }>;
}

interface Payload {
  /** The sending process: it delivered these itself already. */
  o: string;
  /** When sent (epoch ms), for the lag across processes. */
  t: number;
  /** A counter, so identical batches in one transaction are not merged by PostgreSQL. */
  n: number;
  m: [BusTopic, unknown][];
}

/** Packs messages into as few payloads as fit under the limit, in order. */
export function packPayloads(origin: string, messages: readonly Envelope[], counter: () => number): string[] {
  const out: string[] = [];
  let batch: string[] = [];
  let size = 0;
  const head = () => `{"o":${JSON.stringify(origin)},"t":${Date.now()},"n":${counter()},"m":[`;
  const flush = () => {
    if (batch.length) out.push(`${head()}${batch.join(',')}]}`);
    batch = [];
    size = 0;
  };
  for (const { topic, message } of messages) {
    const item = JSON.stringify([topic, message]);
    // A message larger than a payload on its own (a typing list of hundreds of users) cannot
    // travel: it is not sent, and other processes see that change only at their next wake-up.
    if (Buffer.byteLength(item) > MAX_PAYLOAD_BYTES - 200) continue;
    if (size + item.length + 200 > MAX_PAYLOAD_BYTES) flush();
    batch.push(item);
    size += Buffer.byteLength(item) + 1;
  }
  flush();
  return out;
}

export interface ClusterBus extends Bus {
  /** A payload that arrived through LISTEN. */
  received(payload: string): void;
  /** The listener reconnected: announce what was stored since the last position seen. */
  catchUp(): Promise<void>;
}

export function createClusterBus(
  processId: string,
  transport: ClusterTransport,
  logger: Logger,
  telemetry?: Pick<Telemetry, 'metrics' | 'errors'>,
): ClusterBus {
  const local = createInProcessBus(logger, telemetry);
  let counter = 0;
  const next = () => ++counter;
  let seenPos = 0;
  local.subscribe('stream.advanced', ({ pos }) => {
    if (pos > seenPos) seenPos = pos;
  });
  const deliver = (messages: readonly Envelope[]) => {
    for (const m of messages) local.publish(m.topic, m.message as never);
  };
  return {
    publish(topic, message) {
      local.publish(topic, message);
      transport.notify(packPayloads(processId, [{ topic, message } as Envelope], next)).catch((err) => {
        logger.warn({ err, topic }, 'sending a bus message to the other processes failed');
      });
    },
    subscribe: local.subscribe,
    async sendInTransaction(tx, messages) {
      await transport.notifyInTransaction(tx, packPayloads(processId, messages, next));
    },
    deliverLocal: deliver,
    received(text) {
      let payload: Payload;
      try {
        payload = JSON.parse(text) as Payload;
      } catch (err) {
        logger.warn({ err }, 'unreadable bus payload from another process; ignored');
        return;
      }
      if (payload.o === processId) return;
      telemetry?.metrics.busRemoteLag.observe(Math.max(0, Date.now() - payload.t) / 1000);
      deliver(payload.m.map(([topic, message]) => ({ topic, message }) as Envelope));
    },
    async catchUp() {
      const { pos, messages } = await transport.changesSince(seenPos);
      // First, as an ingest's own messages: readers may read up to pos for the changes below.
      deliver([{ topic: 'stream.advanced', message: { pos } }, ...messages]);
    },
  };
}
