import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { parseDuration } from '../contract/grammar/duration.ts';
import { parseSize } from '../contract/grammar/size.ts';
import { CliError } from './errors.ts';

export interface HostPort {
  host: string;
  port: number;
}

/** Parses `HOST:PORT`, `[v6]:PORT` or `:PORT` (all interfaces). */
export function parseHostPort(value: string, flag: string): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) {
    throw new CliError(`${flag}: "${value}" is not HOST:PORT (examples: 0.0.0.0:2525, [::1]:2525, :2525)`);
  }
  const host = m[1] ?? (m[2] || '0.0.0.0');
  if (m[1] && isIP(m[1]) !== 6) throw new CliError(`${flag}: "${m[1]}" in brackets is not an IPv6 address`);
  return { host, port };
}

/** A size flag (contract/grammar/size.ts: 26214400, 25Mi, 10M, 512Ki). */
export function parseByteSize(value: string, flag: string): number {
  const r = parseSize(value);
  if (!r.ok) throw new CliError(`${flag}: ${r.error}`);
  return r.value;
}

/** A duration flag in milliseconds (contract/grammar/duration.ts: 500ms, 30s, 5m, 1h30m). */
export function parseDurationMs(value: string, flag: string): number {
  const r = parseDuration(value);
  if (!r.ok) throw new CliError(`${flag}: ${r.error}`);
  return r.value;
}

export type OptionSpec = NonNullable<Parameters<typeof parseArgs>[0]>['options'];

/** parseArgs with errors turned into CliError and `--help` answered from a usage text. */
export function parseFlags<T extends OptionSpec>(
  argv: string[],
  options: T,
  help: string,
): { values: Record<string, string | boolean | string[] | undefined>; positionals: string[]; help: boolean } {
  try {
    const parsed = parseArgs({
      args: argv,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
    });
    const values = parsed.values as Record<string, string | boolean | string[] | undefined>;
    if (values.help) {
      process.stdout.write(help);
      return { values, positionals: parsed.positionals, help: true };
    }
    return { values, positionals: parsed.positionals, help: false };
  } catch (err) {
    throw new CliError(`${(err as Error).message}\n\n${help}`);
  }
}

export function str(v: string | boolean | string[] | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

export function list(v: string | boolean | string[] | undefined): string[] {
  if (Array.isArray(v)) return v;
  return typeof v === 'string' ? [v] : [];
}
