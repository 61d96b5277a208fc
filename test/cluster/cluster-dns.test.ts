// The test cluster's DNS server, over real UDP and TCP on loopback, queried with Node's resolver
// (c-ares) -- the records come from Service/Endpoints views as the API server returns them.
import { Resolver } from 'node:dns/promises';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseQuery, type Records, recordsFor, serve } from './cluster-dns.ts';

const records: Records = recordsFor(
  [
    { namespace: 'mailplus-system', name: 'mailplus-relay', clusterIP: '10.96.12.34' },
    { namespace: 'e2e', name: 'sink', clusterIP: 'None' },
    { namespace: 'e2e', name: 'dual', clusterIP: 'fd00::1' },
  ],
  [
    {
      namespace: 'e2e',
      name: 'sink',
      addresses: [{ ip: '10.244.0.7', hostname: 'sink-0' }, { ip: '10.244.0.8' }],
    },
    { namespace: 'mailplus-system', name: 'mailplus-relay', addresses: [{ ip: '10.244.0.9' }] },
  ],
  'cluster.local',
);

describe('recordsFor', () => {
  it('maps ClusterIP Services to their ClusterIP, headless ones to their endpoints', () => {
    expect(records.get('mailplus-relay.mailplus-system.svc.cluster.local')).toEqual(['10.96.12.34']);
    expect(records.get('sink.e2e.svc.cluster.local')).toEqual(['10.244.0.7', '10.244.0.8']);
    expect(records.get('sink-0.sink.e2e.svc.cluster.local')).toEqual(['10.244.0.7']);
    // IPv6-only ClusterIPs get no A record (the cluster is IPv4).
    expect(records.has('dual.e2e.svc.cluster.local')).toBe(false);
  });
});

describe('cluster DNS server', () => {
  let server: Awaited<ReturnType<typeof serve>>;
  const resolver = new Resolver({ timeout: 2000, tries: 1 });
  beforeAll(async () => {
    server = await serve('127.0.0.1', 0, () => records);
    resolver.setServers([`127.0.0.1:${server.port}`]);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('answers A for a Service name, case-insensitively', async () => {
    expect(await resolver.resolve4('mailplus-relay.mailplus-system.svc.cluster.local')).toEqual([
      '10.96.12.34',
    ]);
    expect(await resolver.resolve4('Sink.E2E.svc.Cluster.Local')).toEqual(['10.244.0.7', '10.244.0.8']);
  });

  it('answers a known name with no AAAA data, and an unknown one with NXDOMAIN', async () => {
    await expect(resolver.resolve6('mailplus-relay.mailplus-system.svc.cluster.local')).rejects.toMatchObject(
      {
        code: 'ENODATA',
      },
    );
    await expect(resolver.resolve4('nope.e2e.svc.cluster.local')).rejects.toMatchObject({
      code: 'ENOTFOUND',
    });
    await expect(resolver.resolve4('example.org')).rejects.toMatchObject({ code: 'ENOTFOUND' });
  });

  it('answers over TCP with a length prefix', async () => {
    const q = Buffer.from(
      '1234' +
        '0100' +
        '0001' +
        '0000' +
        '0000' +
        '0000' + // id, RD, 1 question
        '0473696e6b' +
        '03653265' +
        '03737663' +
        '07636c7573746572' +
        '056c6f63616c' +
        '00' + // sink.e2e.svc.cluster.local
        '0001' +
        '0001',
      'hex',
    );
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const sock = connect(server.port, '127.0.0.1');
      let buf = Buffer.alloc(0);
      sock.on('error', reject);
      sock.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          sock.end();
          resolve(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        }
      });
      const len = Buffer.alloc(2);
      len.writeUInt16BE(q.length);
      sock.write(Buffer.concat([len, q]));
    });
    expect(reply.readUInt16BE(0)).toBe(0x1234);
    expect(reply.readUInt16BE(2) & 0x800f).toBe(0x8000); // a response, NOERROR
    expect(reply.readUInt16BE(6)).toBe(2); // two answers
    expect([...reply.subarray(reply.length - 4)]).toEqual([10, 244, 0, 8]);
  });

  it('rejects malformed queries with FORMERR instead of crashing', async () => {
    expect(() => parseQuery(Buffer.from('12340100', 'hex'))).toThrow(/shorter than a header/);
    // Still serving after garbage.
    const { createSocket } = await import('node:dgram');
    const s = createSocket('udp4');
    const reply = await new Promise<Buffer>((resolve) => {
      s.on('message', (m) => resolve(m));
      s.send(Buffer.from('abcd0100000200000000000000', 'hex'), server.port, '127.0.0.1');
    });
    s.close();
    expect(reply.readUInt16BE(0)).toBe(0xabcd);
    expect(reply.readUInt16BE(2) & 0xf).toBe(1);
    expect(await resolver.resolve4('mailplus-relay.mailplus-system.svc.cluster.local')).toEqual([
      '10.96.12.34',
    ]);
  });
});
