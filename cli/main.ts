import { CliError } from './errors.ts';

interface Command {
  summary: string;
  run(argv: string[]): Promise<number>;
}

// Subcommands load lazily so `mailplus validate` does not pay for the relay's dependencies.
const commands: Record<string, Command> = {
  relay: {
    summary: 'run the SMTP relay from a relay-config file, reloading it on change',
    run: async (argv) => (await import('./commands/relay.ts')).runRelay(argv),
  },
  dev: {
    summary: 'compile MailRoute/TenantPolicy files and run the relay on them, hot-reloading on change',
    run: async (argv) => (await import('./commands/dev.ts')).runDev(argv),
  },
  render: {
    summary: 'print the relay config compiled from MailRoute/TenantPolicy files',
    run: async (argv) => (await import('./commands/render.ts')).runRender(argv),
  },
  validate: {
    summary: 'check MailRoute/TenantPolicy files (schema and semantics)',
    run: async (argv) => (await import('./commands/validate.ts')).runValidate(argv),
  },
  route: {
    summary: 'explain what the relay would do with an envelope (route tester)',
    run: async (argv) => (await import('./commands/route.ts')).runRoute(argv),
  },
  operator: {
    summary: 'run the Kubernetes operator: MailRoute/TenantPolicy reconciled into the relay fleet config',
    run: async (argv) => (await import('./commands/operator.ts')).runOperator(argv),
  },
  trace: {
    summary:
      'find what happened to mail in the message trace (metadata only), or export it for an access request',
    run: async (argv) => (await import('./commands/trace.ts')).runTrace(argv),
  },
  erase: {
    summary: 'delete every message-trace entry about an address (erasure request)',
    run: async (argv) => (await import('./commands/erase.ts')).runErase(argv),
  },
  capture: {
    summary: 'list, fetch and decrypt consent-gated troubleshooting captures',
    run: async (argv) => (await import('./commands/capture.ts')).runCapture(argv),
  },
  licenses: {
    summary: 'print the third-party notices of every open-source component shipped',
    run: async (argv) => (await import('./commands/licenses.ts')).runLicenses(argv),
  },
  sink: {
    summary: 'run a local capture upstream that prints every message it receives (for trying things out)',
    run: async (argv) => (await import('./commands/sink.ts')).runSink(argv),
  },
};

export function usage(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length));
  const lines = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return [
    'Usage: mailplus <command> [options]',
    '',
    'Commands:',
    ...lines,
    '',
    'mailplus <command> --help shows the options of a command.',
    '',
  ].join('\n');
}

/** The shell's status for a process killed by SIGPIPE (128 + 13), as `cat big | head` reports it. */
export const CLOSED_PIPE_EXIT = 141;

/**
 * A reader that goes away (`mailplus licenses | head`) ends the command quietly, as SIGPIPE ends
 * cat or grep. Node ignores SIGPIPE, so the write fails with EPIPE instead, which would otherwise
 * surface as an unhandled 'error' event with a stack trace.
 */
export function exitQuietlyOnClosedPipe(stream: NodeJS.WriteStream): void {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(CLOSED_PIPE_EXIT);
    throw err;
  });
}

export async function main(argv: string[]): Promise<number> {
  exitQuietlyOnClosedPipe(process.stdout);
  exitQuietlyOnClosedPipe(process.stderr);
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return name ? 0 : 2;
  }
  if (name === '--version' || name === 'version') {
    const { readFile } = await import('node:fs/promises');
    const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    process.stdout.write(`mailplus ${pkg.version}\n`);
    return 0;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`mailplus: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    if (err instanceof CliError) {
      process.stderr.write(`mailplus ${name}: ${err.message}\n`);
      return err.exitCode;
    }
    throw err;
  }
}
