import { pino, type Logger } from 'pino';

/**
 * One pino logger per module. Quiet by default (`warn`) because this package runs
 * inside the agent and inside tests; `DROVER_LOG_LEVEL` turns it up.
 */
export function moduleLogger(name: string): Logger {
  return pino({ name, level: process.env.DROVER_LOG_LEVEL ?? 'warn' });
}
