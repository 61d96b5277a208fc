// Sender authentication for the relay benchmark's verifying cells: one real DNS server (NSD) with the
// sender domain's SPF, DKIM key and DMARC records, and a message corpus DKIM-signed once per run with a
// key generated for the run, so every system verifies real signatures against the same records.
//
// NSD listens on port 53 of a loopback address of its own: the Postfix side's resolvers (libc in
// opendmarc and policyd-spf, unbound in opendkim) read /etc/resolv.conf, which names addresses only,
// never ports. Those processes run in a private mount namespace whose /etc/resolv.conf names that
// address (runInResolvNamespace); the machine's own /etc/resolv.conf is never touched.
import { generateKeyPairSync } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { dkimSign } from 'mailauth';
import { type DnsServer, type DnsZone, startDnsServer, txt } from '../support/dns.ts';

export type AuthMode = 'annotate' | 'enforce';

/**
 * The domain the verifying cells' load and probe send from (MAIL FROM, EHLO, From:, DKIM d=). Not
 * under .test: libunbound (opendkim's resolver) answers NXDOMAIN for the special-use .test itself,
 * and opendkim misparses an unbound config file given to it under load (it crashed, reading it again
 * per lookup), so it gets only `Nameservers`.
 */
export const SENDER_DOMAIN = 'source.example';
/** A domain whose mail fails SPF and DMARC (p=reject) from loopback: the verdict check's forgery. */
export const FORGED_DOMAIN = 'forged.example';
export const DKIM_SELECTOR = 'bench';

export interface AuthDns {
  /** 'HOST:53', what --dns-server and Haraka's resolver take. */
  server: string;
  host: string;
  /** A resolv.conf naming the server, for runInResolvNamespace. */
  resolvConf: string;
  stop(): Promise<void>;
}

export interface AuthSetup {
  mode: AuthMode;
  dns: AuthDns;
  corpus: SignedCorpus;
  /** The run's DKIM private key (PEM), for messages signed on the side (the verdict check). */
  privateKey: string;
}

export interface SignedMessage {
  /** The signed message with CRLF line ends, as it goes on the wire (no line starts with a dot). */
  wire: Buffer;
  /** The file for `smtp-source -F`: the same with LF line ends (smtp-source appends CRLF to each line). */
  path: string;
}

/** Payload size -> the signed message of that body size. */
export type SignedCorpus = Map<number, SignedMessage>;

// loopback addresses tried for NSD on port 53, in order (another run or a local resolver may hold one)
const DNS_ADDRESSES = ['127.0.53.1', '127.0.53.2', '127.0.53.3', '127.0.53.4', '127.0.53.5'];

/** The verifying cells' DNS data: sender and forged domains under `example`, the probe's EHLO name under `test`. */
export function authZones(dkimPublicKey: string): DnsZone[] {
  const spfLoopback = 'v=spf1 ip4:127.0.0.0/8 -all';
  // whole zones, so a lookup of any other name under them is an authoritative NXDOMAIN (none), not a
  // REFUSED that resolvers would report as a temporary error
  return [
    {
      zone: 'example',
      records: [
        txt('source', spfLoopback),
        txt(`${DKIM_SELECTOR}._domainkey.source`, `v=DKIM1; k=rsa; p=${dkimPublicKey}`),
        txt('_dmarc.source', 'v=DMARC1; p=reject; adkim=s; aspf=s'),
        txt('forged', 'v=spf1 ip4:192.0.2.0/24 -all'),
        txt('_dmarc.forged', 'v=DMARC1; p=reject'),
      ],
    },
    // the probe's EHLO name (HELO identity for SPF), and the recipients' domain
    { zone: 'test', records: [txt('probe', spfLoopback)] },
  ];
}

/** Starts NSD serving the zones `example` (sender and forged domains) and `test` on HOST:53. */
export async function startAuthDns(dir: string, dkimPublicKey: string): Promise<AuthDns> {
  const zones = authZones(dkimPublicKey);
  let server: DnsServer | undefined;
  const errors: string[] = [];
  for (const host of DNS_ADDRESSES) {
    try {
      server = await startDnsServer({ zones, host, port: 53 });
      break;
    } catch (e) {
      errors.push(`${host}:53: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  if (!server) throw new Error(`no loopback address free for NSD on port 53:\n${errors.join('\n')}`);
  const resolvConf = join(dir, 'resolv.conf');
  await writeFile(resolvConf, `nameserver ${server.host}\noptions timeout:2 attempts:2\n`);
  const running = server;
  return { server: running.server, host: running.host, resolvConf, stop: () => running.stop() };
}

/** An RSA-2048 key pair for the run: the private key in PEM, the public key as the DKIM record's p=. */
export function dkimKeyPair(): { privateKey: string; publicKeyBase64: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyBase64: publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
  };
}

/** A body of exactly `size` bytes (size >= 2): lines of 76 'x' and CRLF, the last line shorter. */
function body(size: number): Buffer {
  const b = Buffer.alloc(size, 'x');
  // line ends every 78 bytes and at the very end; none closer than 2 bytes to the next
  for (let i = 76; i < size - 3; i += 78) b.write('\r\n', i);
  b.write('\r\n', size - 2);
  return b;
}

/** A message with a body of `size` bytes, DKIM-signed by SENDER_DOMAIN (relaxed/relaxed), CRLF line ends. */
export async function signMessage(opts: {
  from: string;
  subject: string;
  size: number;
  privateKey: string;
}): Promise<Buffer> {
  const head = [
    `From: Bench <${opts.from}>`,
    'To: <foo@bench.test>',
    `Subject: ${opts.subject}`,
    `Date: ${new Date().toUTCString().replace('GMT', '+0000')}`,
    `Message-ID: <${opts.subject.replace(/\W+/g, '-')}.${Date.now()}@${opts.from.split('@')[1]}>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
  ].join('\r\n');
  const message = Buffer.concat([Buffer.from(`${head}\r\n\r\n`), body(opts.size)]);
  // mailauth's signer signs once per signatureData entry; its type definitions still ask for the
  // top-level signingDomain/selector/privateKey, which the signer ignores (none signs nothing)
  const options = {
    canonicalization: 'relaxed/relaxed',
    signatureData: [{ signingDomain: SENDER_DOMAIN, selector: DKIM_SELECTOR, privateKey: opts.privateKey }],
  } as unknown as Parameters<typeof dkimSign>[1];
  const signed = await dkimSign(message, options);
  if (signed.errors?.length || !signed.signatures)
    throw new Error(`DKIM signing failed: ${JSON.stringify(signed.errors)}`);
  const wire = Buffer.concat([Buffer.from(signed.signatures), message]);
  // sent unstuffed by the probe and by smtp-source -F: no line may start with a dot
  if (/(^|\r\n)\./.test(wire.toString('latin1'))) throw new Error('message has a line starting with a dot');
  return wire;
}

/** One signed message per size, written to `dir` for smtp-source -F. */
export async function signedCorpus(dir: string, sizes: number[], privateKey: string): Promise<SignedCorpus> {
  const out: SignedCorpus = new Map();
  for (const size of sizes) {
    const wire = await signMessage({
      from: `load@${SENDER_DOMAIN}`,
      subject: `bench ${size}`,
      size,
      privateKey,
    });
    const path = join(dir, `corpus-${size}.eml`);
    await writeFile(path, wire.toString('latin1').replaceAll('\r\n', '\n'), 'latin1');
    out.set(size, { wire, path });
  }
  return out;
}

/**
 * argv that runs `argv` in a private mount namespace whose /etc/resolv.conf is `resolvConf`
 * (needs root). unshare and sh exec, so the PID started is the program's own.
 */
export function inResolvNamespace(resolvConf: string, argv: string[]): [string, string[]] {
  return [
    'unshare',
    [
      '--mount',
      '--propagation',
      'private',
      '--',
      'sh',
      '-c',
      'mount --bind "$0" /etc/resolv.conf && exec "$@"',
      resolvConf,
      ...argv,
    ],
  ];
}
