// Keeps a matrix-js-sdk's chatter out of the test output: everything it logs is kept in memory
// (the last 500 lines), for a test to print when it fails. Works for both SDK majors the e2e
// tier drives, whose logger types agree in shape.

/** The shape both matrix-js-sdk majors' Logger types share. */
export interface SdkLogger {
  trace(...msg: unknown[]): void;
  debug(...msg: unknown[]): void;
  info(...msg: unknown[]): void;
  warn(...msg: unknown[]): void;
  error(...msg: unknown[]): void;
  getChild(namespace: string): SdkLogger;
}

export interface QuietLog {
  logger: SdkLogger;
  tail(n: number): string;
}

export function quietSdkLog(): QuietLog {
  const lines: string[] = [];
  const log =
    (level: string) =>
    (...msg: unknown[]) => {
      lines.push(`${level} ${msg.map((m) => (m instanceof Error ? m.message : typeof m === 'string' ? m : JSON.stringify(m))).join(' ')}`);
      if (lines.length > 500) lines.shift();
    };
  const logger: SdkLogger = {
    trace: log('trace'),
    debug: log('debug'),
    info: log('info'),
    warn: log('warn'),
    error: log('error'),
    getChild: () => logger,
  };
  return { logger, tail: (n) => lines.slice(-n).join('\n') };
}

/**
 * Parts of an SDK (SlidingSync itself, MatrixRTC) log through its global loglevel logger rather
 * than the client's: its children go to the quiet log, and it prints errors only.
 */
export function silenceGlobal(global: { getChild: unknown }, quiet: QuietLog): void {
  (global as { getChild: () => SdkLogger }).getChild = () => quiet.logger;
  (global as unknown as { setLevel(level: string, persist: boolean): void }).setLevel('error', false);
}
