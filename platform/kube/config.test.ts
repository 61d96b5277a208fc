import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { connectionFromKubeconfig, loadConnection } from './config.ts';

const kubeconfig = (user: string, extra = '') => `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:6443/
    certificate-authority: ca.pem
${extra}
users:
- name: u
  user:
${user}
contexts:
- name: ctx
  context: { cluster: c, user: u, namespace: team-a }
current-context: ctx
`;

describe('kubeconfig loading', () => {
  let dir: string;
  const savedEnv = process.env.KUBECONFIG;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'kubeconfig-'));
    writeFileSync(join(dir, 'ca.pem'), 'CA PEM');
    writeFileSync(join(dir, 'client.pem'), 'CERT PEM');
    writeFileSync(join(dir, 'client.key'), 'KEY PEM');
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
    if (savedEnv === undefined) delete process.env.KUBECONFIG;
    else process.env.KUBECONFIG = savedEnv;
  });

  it('resolves the current context: server, CA and client certificate relative to the file, namespace', () => {
    const file = join(dir, 'config');
    writeFileSync(file, kubeconfig('    client-certificate: client.pem\n    client-key: client.key'));
    const c = loadConnection(file);
    expect(c).toMatchObject({
      server: 'https://127.0.0.1:6443',
      ca: 'CA PEM',
      cert: 'CERT PEM',
      key: 'KEY PEM',
      namespace: 'team-a',
      insecureSkipTLSVerify: false,
    });
    expect(c.token).toBeUndefined();
  });

  it('takes inline -data fields (base64), a token, a tokenFile, basic auth and an exec plugin', () => {
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    const text = kubeconfig(
      `    client-certificate-data: ${b64('INLINE CERT')}\n    client-key-data: ${b64('INLINE KEY')}\n    token: abc`,
    ).replace('certificate-authority: ca.pem', `certificate-authority-data: ${b64('INLINE CA')}`);
    expect(connectionFromKubeconfig(text, dir, 't')).toMatchObject({
      ca: 'INLINE CA',
      cert: 'INLINE CERT',
      key: 'INLINE KEY',
      token: 'abc',
    });
    expect(connectionFromKubeconfig(kubeconfig('    tokenFile: tok'), dir, 't').tokenFile).toBe(
      join(dir, 'tok'),
    );
    expect(connectionFromKubeconfig(kubeconfig('    username: a\n    password: b'), dir, 't')).toMatchObject({
      username: 'a',
      password: 'b',
    });
    const exec = connectionFromKubeconfig(
      kubeconfig(
        '    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: aws\n      args: [eks, get-token]\n      env: [{ name: AWS_PROFILE, value: prod }]',
      ),
      dir,
      't',
    );
    expect(exec.exec).toEqual({
      command: 'aws',
      args: ['eks', 'get-token'],
      env: [{ name: 'AWS_PROFILE', value: 'prod' }],
      apiVersion: 'client.authentication.k8s.io/v1beta1',
    });
  });

  it('refuses what it would otherwise ignore: auth-provider, proxy-url, a missing context or server', () => {
    expect(() => connectionFromKubeconfig(kubeconfig('    auth-provider: { name: gcp }'), dir, 'f')).toThrow(
      /legacy auth-provider.*exec credential plugin/,
    );
    expect(() =>
      connectionFromKubeconfig(kubeconfig('    token: x', '    proxy-url: http://proxy:3128'), dir, 'f'),
    ).toThrow(/proxy-url/);
    expect(() =>
      connectionFromKubeconfig(kubeconfig('    token: x').replace('current-context: ctx', ''), dir, 'f'),
    ).toThrow(/kubeconfig f has no current cluster; set current-context/);
    expect(() =>
      connectionFromKubeconfig(
        kubeconfig('    token: x').replace('current-context: ctx', 'current-context: nope'),
        dir,
        'f',
      ),
    ).toThrow(/current-context "nope" is not among its contexts/);
    expect(() =>
      connectionFromKubeconfig(kubeconfig('    token: x').replace(/ {4}server: .*\n/, ''), dir, 'f'),
    ).toThrow(/names no cluster with a server/);
    expect(() => loadConnection(join(dir, 'missing'))).toThrow(/kubeconfig .*missing/);
  });

  it('merges KUBECONFIG files as kubectl does: the first to name an entry or current-context wins', () => {
    const a = join(dir, 'a');
    const sub = mkdtempSync(join(dir, 'b-'));
    const b = join(sub, 'b');
    writeFileSync(join(sub, 'ca.pem'), 'OTHER CA');
    writeFileSync(a, 'apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user: { token: from-a }\n');
    writeFileSync(b, kubeconfig('    token: from-b'));
    process.env.KUBECONFIG = `${join(dir, 'absent')}:${a}:${b}`;
    const c = loadConnection();
    expect(c.token).toBe('from-a');
    // the cluster entry came from b: its relative CA path resolves in b's directory
    expect(c.ca).toBe('OTHER CA');
    // a file KUBECONFIG names that does not exist is skipped, as kubectl does; none at all is an error
    expect(c.source).toBe(`${a}:${b}`);
    process.env.KUBECONFIG = join(dir, 'absent');
    expect(() => loadConnection()).toThrow(/KUBECONFIG names no file that exists/);
  });
});
