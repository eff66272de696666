import { pino, type Logger } from "pino";
import type { LogLevel } from "../env/settings.js";

export type { Logger };

/**
 * Structured JSON logs on stdout, one object per line, tagged with the service name. Writes are
 * asynchronous (a write syscall per RPC line would cost more than the RPC); call
 * `logger.flush()` before exiting.
 */
export function createLogger(service: string, level: LogLevel): Logger {
  return pino(
    {
      level,
      base: { service, pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ dest: 1, sync: false }),
  );
}
