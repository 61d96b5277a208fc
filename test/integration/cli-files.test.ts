// The file-based commands as a user runs them: real processes, real files, exit codes.
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRelayConfig } from '../../contract/config/load.ts';
import { listing, startDnsServer, txt } from '../support/dns.ts';
import { freePort, startProcess } from '../support/processes.ts';

const run = promisify(execFile);
const bin = new URL('../../bin/mailplus.js', import.meta.url).pathname;

async function mailplus(
  args: string[],
  timeout = 20_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [bin, ...args], { timeout });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mailplus-cli-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const tenant = `apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: {name: acme, namespace: acme}
spec:
  domains: [acme.test]
`;

describe('mailplus validate', () => {
  it('accepts the examples', async () => {
    const r = await mailplus(['validate', '-f', 'examples/']);
    expect(r.stderr).toMatch(/0 error\(s\)/);
    expect(r.code).toBe(0);
  });

  it('names file, resource and field, and exits 1', async () => {
    const file = join(dir, 'bad.yaml');
    await writeFile(
      file,
      `${tenant}---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: {name: broken, namespace: acme}
spec:
  match:
    recipients: ["not a pattern"]
  forward:
    upstreams: [{host: mx.acme.test, tls: sometimes}]
`,
    );
    const r = await mailplus(['validate', '-f', file]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`${file}: MailRoute acme/broken: spec.match.recipients[0]`);
    expect(r.stdout).toContain(`${file}: MailRoute acme/broken: spec.forward.upstreams[0].tls`);
  });

  it('refuses a misspelt kind or a document without apiVersion, naming file and document', async () => {
    const file = join(dir, 'typo.yaml');
    await writeFile(
      file,
      `apiVersion: mailplus.io/v1alpha1
kind: MailRoutes
metadata: {name: inbox, namespace: acme}
spec: {match: {recipients: ["*@acme.test"]}, forward: {upstreams: [{host: mx.acme.test}]}}
---
kind: TenantPolicy
metadata: {name: acme, namespace: acme}
spec: {domains: [acme.test]}
`,
    );
    const r = await mailplus(['validate', '-f', file]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(
      `${file}: document 1: kind: unknown kind MailRoutes in mailplus.io/v1alpha1; did you mean MailRoute?`,
    );
    expect(r.stdout).toContain(`${file}: document 2: apiVersion: missing for kind TenantPolicy`);
    expect(r.stderr).toMatch(/2 error\(s\)/);
  });

  it('finding no MailRoute or TenantPolicy at all is an error, not a pass', async () => {
    const file = join(dir, 'other-kinds.yaml');
    await writeFile(file, 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n');
    const r = await mailplus(['validate', '-f', file]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`${file}: no MailRoute or TenantPolicy found`);
  });

  it('reports a YAML syntax error with its line', async () => {
    const file = join(dir, 'syntax.yaml');
    await writeFile(file, `${tenant}  bad: [unclosed\n`);
    const r = await mailplus(['validate', '-f', file]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`${file}.*:\\d+`));
  });

  it('reports semantic problems found by compiling the set (domain not owned)', async () => {
    const file = join(dir, 'notowned.yaml');
    await writeFile(
      file,
      `${tenant}---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: {name: grab, namespace: acme}
spec:
  match: {recipients: ["*@other.test"]}
  forward: {upstreams: [{host: mx.acme.test}]}
`,
    );
    const r = await mailplus(['validate', '-f', file]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/MailRoute acme\/grab: .*DomainNotOwned/);
  });
});

describe('mailplus render', () => {
  it('-o json prints a relay config the relay accepts, identical on every run', async () => {
    const a = await mailplus(['render', '-f', 'examples/', '-o', 'json']);
    const b = await mailplus([
      'render',
      '-f',
      'examples/routes',
      '-f',
      'examples/tenants.yaml',
      '-o',
      'json',
    ]);
    expect(a.code).toBe(0);
    const config = parseRelayConfig(a.stdout, 'render');
    expect(config.tenants.map((t) => t.name)).toEqual(['engineering', 'sales', 'support']);
    expect(b.stdout).toBe(a.stdout);
  });

  it('prints YAML by default', async () => {
    const r = await mailplus(['render', '-f', 'examples/']);
    expect(r.stdout).toMatch(/^apiVersion: relay\.mailplus\.io\/v1alpha1$/m);
  });
});

describe('mailplus route', () => {
  it('explains tenant, route and upstreams in order', async () => {
    const r = await mailplus([
      'route',
      '-f',
      'examples/',
      '--to',
      'someone@acme.partners.example.com',
      '--from',
      'a@b.test',
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('relay via route sales/partner-portals (tenant sales');
    expect(r.stdout).toMatch(/1\. 127\.0\.0\.1:2526[\s\S]*2\. localhost:2526/);
  });

  it('gives the exact reply for refused recipients and exits 1', async () => {
    const r = await mailplus(['route', '-f', 'examples/', '--to', 'x@nowhere.test', '-o', 'json']);
    expect(r.code).toBe(1);
    const out = JSON.parse(r.stdout) as { recipients: Array<{ reply: string; reason: string }> };
    expect(out.recipients[0]).toMatchObject({
      reply: '550 5.7.1 Relay access denied: nowhere.test is not served here',
      reason: 'relay_denied',
    });
  });

  it('checks client CIDRs and TLS when asked', async () => {
    const r = await mailplus([
      'route',
      '-f',
      'examples/',
      '--to',
      'alice@sales.example.com',
      '--client-ip',
      '192.0.2.7',
    ]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('550 5.7.1 Client address not permitted');
  });

  it('shows the tenant DNSBL checks, and with --dns-server looks the client up (real DNS)', async () => {
    const dns = await startDnsServer({ zones: [{ zone: 'zen.example', records: [listing('127.0.0.2')] }] });
    try {
      const file = join(dir, 'dnsbl.yaml');
      await writeFile(
        file,
        `apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: {name: acme, namespace: acme}
spec:
  domains: [acme.test]
  dnsbl:
    zones: [{zone: zen.example, weight: 2, match: ["127.0.0.[2..3]"]}]
    threshold: 2
    allow: [192.0.2.0/24]
---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: {name: all, namespace: acme}
spec:
  match: {recipients: ["*@acme.test"]}
  forward: {upstreams: [{host: mx.acme.test}]}
`,
      );
      const listed = await mailplus(['route', '-f', file, '--to', 'a@acme.test', '--client-ip', '127.0.0.2']);
      expect(listed.code).toBe(0);
      expect(listed.stdout).toContain(
        '  dnsbl at RCPT: zen.example (weight 2, codes 127.0.0.[2..3]); refuse at score 2; allow 192.0.2.0/24; lookup failure: accept',
      );
      expect(listed.stdout).toContain('(not looked up: give --client-ip and --dns-server');
      const queried = await mailplus([
        'route',
        '-f',
        file,
        '--to',
        'a@acme.test',
        '--client-ip',
        '127.0.0.2',
        '--dns-server',
        dns.server,
      ]);
      expect(queried.code).toBe(1);
      expect(queried.stdout).toContain(
        'a@acme.test: reject 550 5.7.1 Service unavailable; client [127.0.0.2] blocked using zen.example [dnsbl_listed]',
      );
      const clean = await mailplus([
        'route',
        '-f',
        file,
        '--to',
        'a@acme.test',
        '--client-ip',
        '127.0.0.9',
        '--dns-server',
        dns.server,
        '-o',
        'json',
      ]);
      expect(clean.code).toBe(0);
      expect(JSON.parse(clean.stdout).recipients[0]).toMatchObject({
        action: 'relay',
        dnsbl: { lookup: { clientIp: '127.0.0.9', verdict: 'pass' }, checks: { threshold: 2 } },
      });
      const usage = await mailplus(['route', '-f', file, '--to', 'a@acme.test', '--dns-server', dns.server]);
      expect(usage.code).toBe(2);
      expect(usage.stderr).toContain('--dns-server needs --client-ip');
    } finally {
      await dns.stop();
    }
  }, 60_000);

  it('shows the tenant sender-authentication checks, and with --dns-server evaluates SPF (real DNS)', async () => {
    const dns = await startDnsServer({
      zones: [{ zone: 'sender.example', records: [txt('@', 'v=spf1 ip4:127.0.0.0/8 -all')] }],
    });
    try {
      const file = join(dir, 'auth.yaml');
      await writeFile(
        file,
        `apiVersion: mailplus.io/v1alpha1
kind: TenantPolicy
metadata: {name: acme, namespace: acme}
spec:
  domains: [acme.test]
  authentication: {mode: enforce, authservId: mx.acme.test, quarantine: reject}
---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: {name: all, namespace: acme}
spec:
  match: {recipients: ["*@acme.test"]}
  forward: {upstreams: [{host: mx.acme.test}]}
`,
      );
      const listed = await mailplus([
        'route',
        '-f',
        file,
        '--to',
        'a@acme.test',
        '--from',
        'x@sender.example',
      ]);
      expect(listed.code).toBe(0);
      expect(listed.stdout).toContain(
        '  authentication: enforce, authserv-id mx.acme.test: SPF after RCPT, DKIM, ARC and DMARC at the end of DATA; Authentication-Results with every result up to 262144 bytes, SPF only above',
      );
      expect(listed.stdout).toContain(
        '  enforce: DMARC failures under p=reject and p=quarantine refused (550 5.7.1); DNS lookup failure: defer (451 4.7.5)',
      );
      expect(listed.stdout).toContain('(SPF not evaluated: give --client-ip and --dns-server)');
      const args = [
        'route',
        '-f',
        file,
        '--to',
        'a@acme.test',
        '--from',
        'x@sender.example',
        '--dns-server',
        dns.server,
      ];
      const pass = await mailplus([...args, '--client-ip', '127.0.0.7']);
      expect(pass.stdout).toContain(
        '  spf=pass (mx.acme.test: domain of x@sender.example designates 127.0.0.7 as permitted sender) smtp.mailfrom=x@sender.example',
      );
      const fail = await mailplus([...args, '--client-ip', '192.0.2.1', '-o', 'json']);
      expect(JSON.parse(fail.stdout).recipients[0]).toMatchObject({
        action: 'relay',
        authentication: { checks: { mode: 'enforce', rejectQuarantine: true }, spf: { result: 'fail' } },
      });
    } finally {
      await dns.stop();
    }
  }, 60_000);

  it('refuses a --to or --from that is not an address (usage error, exit 2)', async () => {
    const r = await mailplus(['route', '-f', 'examples/', '--to', 'notanaddress']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--to: "notanaddress" is not an address');
    expect(r.stdout).toBe('');
    const f = await mailplus(['route', '-f', 'examples/', '--to', 'a@sales.example.com', '--from', 'nobody']);
    expect(f.code).toBe(2);
    expect(f.stderr).toContain('--from: "nobody" is not an address');
  });

  it('says when it assumed the null sender because --from was not given', async () => {
    const r = await mailplus(['route', '-f', 'examples/', '--to', 'alice@sales.example.com']);
    expect(r.stdout.split('\n')[0]).toMatch(/^sender: <> \(the null sender, because no --from was given/);
    const j = await mailplus(['route', '-f', 'examples/', '--to', 'alice@sales.example.com', '-o', 'json']);
    expect(JSON.parse(j.stdout)).toMatchObject({ from: '', fromDefaulted: true });
    const given = await mailplus([
      'route',
      '-f',
      'examples/',
      '--to',
      'alice@sales.example.com',
      '--from',
      '<>',
    ]);
    expect(given.stdout).not.toContain('no --from was given');
  });

  it('shows the 452 a recipient gets when it routes to another upstream set', async () => {
    const file = join(dir, 'split.yaml');
    await writeFile(
      file,
      `${tenant}---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: {name: a, namespace: acme}
spec:
  match: {recipients: ["a@acme.test"]}
  forward: {upstreams: [{host: mx1.acme.test}]}
---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: {name: b, namespace: acme}
spec:
  match: {recipients: ["b@acme.test"]}
  forward: {upstreams: [{host: mx2.acme.test}]}
`,
    );
    const r = await mailplus(['route', '-f', file, '--to', 'a@acme.test', '--to', 'b@acme.test']);
    expect(r.stdout).toContain('a@acme.test: relay via route acme/a');
    expect(r.stdout).toContain('b@acme.test: reject 452 4.5.3 Recipient routes elsewhere');
  });

  it('shows the address a rewriting route forwards a recipient as (text and json)', async () => {
    const user = '$' + '{user}'; // the template variable, not a JS placeholder
    const file = join(dir, 'rewrite.yaml');
    const upstreams = '{upstreams: [{host: mx.acme.test}]';
    await writeFile(
      file,
      `${tenant}---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: {name: inbox, namespace: acme}
spec:
  match: {recipients: ["*@acme.test"]}
  forward: ${upstreams}, rewrite: {recipient: "\${user}@mail.internal.example"}}
---
apiVersion: mailplus.io/v1alpha1
kind: MailRoute
metadata: {name: ceo, namespace: acme}
spec:
  match: {recipients: ["ceo@acme.test"]}
  forward: ${upstreams}}
`,
    );
    const args = [
      'route',
      '-f',
      file,
      '--from',
      's@example.org',
      '--to',
      'Bob+x@acme.test',
      '--to',
      'ceo@acme.test',
    ];
    const text = await mailplus(args);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toBe(
      [
        'Bob+x@acme.test: relay via route acme/inbox (tenant acme, pattern *@acme.test)',
        `  rewritten to Bob@mail.internal.example (template ${user}@mail.internal.example)`,
        '  1. mx.acme.test:25 (tls opportunistic)',
        'ceo@acme.test: relay via route acme/ceo (tenant acme, pattern ceo@acme.test)',
        '  1. mx.acme.test:25 (tls opportunistic)',
        '',
      ].join('\n'),
    );
    const json = JSON.parse((await mailplus([...args, '-o', 'json'])).stdout);
    expect(
      json.recipients.map((r: Record<string, unknown>) => [r.recipient, r.rewrittenTo, r.rewriteTemplate]),
    ).toEqual([
      ['Bob+x@acme.test', 'Bob@mail.internal.example', `${user}@mail.internal.example`],
      ['ceo@acme.test', undefined, undefined],
    ]);

    // a template that cannot give an address is refused by validate, naming file, resource and field
    await writeFile(file, (await readFile(file, 'utf8')).replace(`${user}@`, `${user}@$` + '{tag}.'));
    const v = await mailplus(['validate', '-f', file]);
    expect(v.code).toBe(1);
    expect(v.stdout + v.stderr).toContain(
      `${file}: MailRoute acme/inbox: spec.forward.rewrite.recipient: invalid recipient template "\${user}@\${tag}.mail.internal.example": only \${domain} may appear after "@" (found \${tag})`,
    );
  });
});

describe('mailplus', () => {
  it('rejects unknown commands and flags with usage', async () => {
    expect((await mailplus(['nope'])).code).toBe(2);
    const r = await mailplus(['render', '--bogus']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Usage: mailplus render');
  });

  it('a reader that goes away (mailplus licenses | head) ends it quietly, as SIGPIPE ends cat', async () => {
    const child = spawn(process.execPath, [bin, 'licenses'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    // the reader is gone before the first write, as `head` is after its lines
    child.stdout.destroy();
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
    clearTimeout(timer);
    expect(stderr).toBe('');
    expect(code).toBe(141);
  });
});

describe('mailplus relay --config FILE', () => {
  it('a missing or invalid file at start-up is an error (exit 1), not a relay without config', async () => {
    const listen = ['--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0'];
    const missing = join(dir, 'no-such-relay.json');
    const r = await mailplus(['relay', '--config', missing, ...listen], 10_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`--config ${missing}: cannot read it (ENOENT)`);
    const broken = join(dir, 'broken-relay.json');
    await writeFile(broken, '{"apiVersion": "relay.mailplus.io/v1alpha1"');
    const b = await mailplus(['relay', '--config', broken, ...listen], 10_000);
    expect(b.code).toBe(1);
    expect(b.stderr).toContain(`${broken}: invalid relay config`);
  });

  it('a file that disappears later keeps the last good config', async () => {
    const file = join(dir, 'relay-later.json');
    const rendered = await mailplus(['render', '-f', 'examples/', '-o', 'json']);
    await writeFile(file, rendered.stdout);
    const hash = parseRelayConfig(rendered.stdout, 'render').hash;
    const [port, adminPort] = [await freePort(), await freePort()];
    const proc = startProcess(process.execPath, [
      bin,
      'relay',
      '--config',
      file,
      '--listen',
      `127.0.0.1:${port}`,
      '--admin-listen',
      `127.0.0.1:${adminPort}`,
    ]);
    try {
      await proc.waitForLine((l) => l.json?.msg === 'config applied', 15_000);
      await rename(file, `${file}.gone`);
      await proc.waitForLine(
        (l) => l.json?.msg === 'config refused, keeping the last good one' && l.json?.activeHash === hash,
        10_000,
      );
      const config = (await (await fetch(`http://127.0.0.1:${adminPort}/config`)).json()) as { hash: string };
      expect(config.hash).toBe(hash);
    } finally {
      await proc.stop();
    }
  });
});
