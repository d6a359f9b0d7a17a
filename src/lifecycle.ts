// Ordered shutdown: whatever starts registers how to stop, and stop() unwinds in reverse, so
// the HTTP listener closes before the pool it uses, and the pool before the database under it.
import type { Logger } from './telemetry/logger.js';

export class Lifecycle {
  #steps: { name: string; stop: () => Promise<unknown> }[] = [];
  #stopping: Promise<void> | undefined;

  constructor(private readonly logger: Logger) {}

  onStop(name: string, stop: () => Promise<unknown>): void {
    this.#steps.push({ name, stop });
  }

  /** Idempotent: a second call waits for the first. One failing step does not skip the rest. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      for (const step of this.#steps.reverse()) {
        try {
          await step.stop();
          this.logger.debug({ step: step.name }, 'stopped');
        } catch (err) {
          this.logger.error({ err, step: step.name }, 'error while stopping');
        }
      }
    })();
    return this.#stopping;
  }
}
