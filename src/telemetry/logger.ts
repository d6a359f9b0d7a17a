// The process's one pino logger. JSON lines for machines; pino-pretty when a person is
// watching a terminal. Access tokens never reach a log line: the redaction paths below are a
// second line of defence behind never logging them in the first place.
import { type Logger, pino } from 'pino';
import type { LogLevel } from '../config.js';

export type { Logger } from 'pino';

export interface LoggerOptions {
  level: LogLevel;
  /** Pretty-print for a terminal; defaults to whether stdout is one. */
  pretty?: boolean;
}

export function createLogger({ level, pretty = process.stdout.isTTY === true }: LoggerOptions): Logger {
  return pino({
    level,
    base: { service: 'syncv3' },
    redact: {
      paths: ['req.headers.authorization', 'headers.authorization', 'accessToken', 'access_token', '*.access_token'],
      censor: '[redacted]',
    },
    transport: pretty ? { target: 'pino-pretty', options: { translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname,service' } } : undefined,
  });
}
