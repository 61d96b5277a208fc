// The fast counting sink as its own process, so its CPU is not shared with the event loop
// of the system under test:
//
//   node test/bench/fast-sink-main.ts --port N [--control-port M] [--host 127.0.0.1]
//
// Prints one JSON line {"event":"listening","port":N,"controlPort":M} when ready.
// Control (HTTP on loopback): GET /stats -> FastSinkStats, GET /ids -> {id: count},
// POST /reset -> clears counters. Exits on SIGTERM/SIGINT.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { startFastSink } from '../support/fast-sink.ts';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    'control-port': { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
  },
});

const sink = await startFastSink({ port: Number(values.port), host: values.host });

const control = createServer((req, res) => {
  const reply = (body: unknown) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  if (req.url === '/stats') return reply(sink.stats());
  if (req.url === '/ids') return reply(Object.fromEntries(sink.ids()));
  if (req.url === '/reset' && req.method === 'POST') {
    sink.reset();
    return reply({ ok: true });
  }
  res.writeHead(404).end();
});
await new Promise<void>((resolve) => control.listen(Number(values['control-port']), values.host, resolve));

const shutdown = () => {
  control.close();
  sink.close().finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

process.stdout.write(
  `${JSON.stringify({ event: 'listening', port: sink.port, controlPort: (control.address() as AddressInfo).port })}\n`,
);
