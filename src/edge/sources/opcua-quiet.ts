import { createRequire } from 'node:module';
import { format } from 'node:util';

/**
 * node-opcua prints its warnings and errors with console.log (stdout), which would interleave
 * with the agent's JSON log lines and with the CLI's own stdout. Its loggers are replaceable:
 * they go to `sink` (the agent passes its pino logger), or nowhere until one is given.
 * `quietOpcua(sink)` only names the sink: the loggers are replaced by `quietOpcua()`, which
 * loadOpcua() calls as it loads node-opcua, so an agent that never reads a PLC never loads any
 * of node-opcua (node-opcua-debug included).
 */
let installed = false;
let sink: ((level: 'warn' | 'error', msg: string) => void) | undefined;

export function quietOpcua(to?: (level: 'warn' | 'error', msg: string) => void): void {
  if (to) {
    sink = to;
    return;
  }
  if (installed) return;
  installed = true;
  const dbg = createRequire(import.meta.url)('node-opcua-debug') as typeof import('node-opcua-debug');
  // One line per message, without node-opcua's colour codes.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping ANSI colour escapes
  const line = (args: unknown[]) =>
    format(...args)
      .replace(/\u001b\[[0-9;]*m/g, '')
      .slice(0, 2000);
  dbg.setDebugLogger(() => {});
  dbg.setTraceLogger(() => {});
  dbg.setWarningLogger((...a: unknown[]) => sink?.('warn', line(a)));
  dbg.setErrorLogger((...a: unknown[]) => sink?.('error', line(a)));
}
