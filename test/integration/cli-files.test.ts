// The file-based commands as a user runs them: real processes, real files, exit codes.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRelayConfig } from '../../relay/config/load.ts';

const run = promisify(execFile);
const bin = new URL('../../bin/mailplus.js', import.meta.url).pathname;

async function mailplus(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [bin, ...args], { timeout: 20_000 });
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
});

describe('mailplus', () => {
  it('rejects unknown commands and flags with usage', async () => {
    expect((await mailplus(['nope'])).code).toBe(2);
    const r = await mailplus(['render', '--bogus']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Usage: mailplus render');
  });
});
