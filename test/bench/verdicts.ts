// Before a system's verifying cells are measured: does it really verify? One DKIM-signed message
// from SENDER_DOMAIN (SPF pass, DKIM pass, DMARC pass) must be delivered with an Authentication-Results
// header saying spf=pass and dkim=pass; one forgery from FORGED_DOMAIN (SPF fail, DMARC p=reject, its
// DKIM signature not aligned) must be annotated with spf=fail (annotate) or refused (enforce); one
// header forgery (envelope SENDER_DOMAIN, SPF and DKIM pass, From: FORGED_DOMAIN: only DMARC catches
// it) must be refused in enforce mode by the systems that check DMARC (not Haraka: it has no DMARC
// plugin of its own). A misconfigured peer that silently skips its checks would otherwise look fast.
import { createTransport } from 'nodemailer';
import { startCaptureSink } from '../support/capture-sink.ts';
import { type AuthSetup, FORGED_DOMAIN, SENDER_DOMAIN, signMessage } from './auth-setup.ts';
import type { Sut } from './suts.ts';

export interface VerdictCheck {
  sut: string;
  mode: AuthSetup['mode'];
  /** The signed message's final reply. */
  signed: string;
  /** The forgery's reply (the first refusal, or the final 250). */
  forged: string;
  /** The From: header forgery's reply. */
  fromForged: string;
  /** Authentication-Results headers the upstream saw on the signed message (unfolded). */
  authResults: string[];
  ok: boolean;
  problems: string[];
}

/** Sends one raw message; the final reply or the refusal, as text. */
async function send(port: number, from: string, raw: Buffer): Promise<{ accepted: boolean; reply: string }> {
  const transport = createTransport({
    host: '127.0.0.1',
    port,
    secure: false,
    ignoreTLS: true,
    name: SENDER_DOMAIN,
    connectionTimeout: 30_000,
    greetingTimeout: 30_000,
    socketTimeout: 60_000,
  });
  try {
    const info = await transport.sendMail({ envelope: { from, to: ['verdict@bench.test'] }, raw });
    return { accepted: true, reply: String(info.response) };
  } catch (e) {
    const err = e as { response?: string; message: string };
    return { accepted: false, reply: err.response ?? err.message };
  } finally {
    transport.close();
  }
}

function headers(data: Buffer, name: string): string[] {
  const end = data.indexOf('\r\n\r\n');
  const head = data.subarray(0, end === -1 ? data.length : end).toString('latin1');
  const unfolded = head.replace(/\r\n[ \t]+/g, ' ');
  const re = new RegExp(`^${name}:[ \\t]*(.*)$`, 'gim');
  return [...unfolded.matchAll(re)].map((m) => m[1].trim());
}

/** Systems under test that verify DMARC (Haraka's bundled plugins do not). */
const CHECKS_DMARC = new Set(['mailplus', 'postfix']);

export async function checkVerdicts(sut: Sut, auth: AuthSetup): Promise<VerdictCheck> {
  const { privateKey } = auth;
  const signedMsg = await signMessage({
    from: `load@${SENDER_DOMAIN}`,
    subject: 'verdict signed',
    size: 1024,
    privateKey,
  });
  const forgedMsg = await signMessage({
    from: `ceo@${FORGED_DOMAIN}`,
    subject: 'verdict forged',
    size: 1024,
    privateKey,
  });
  const fromForgedMsg = await signMessage({
    from: `ceo@${FORGED_DOMAIN}`,
    subject: 'verdict from-forged',
    size: 1024,
    privateKey,
  });
  const capture = await startCaptureSink();
  const problems: string[] = [];
  let authResults: string[] = [];
  let signed = '';
  let forged = '';
  let fromForged = '';
  try {
    const running = await sut.start(capture.port, [], auth);
    try {
      const a = await send(running.port, `load@${SENDER_DOMAIN}`, signedMsg);
      signed = a.reply;
      if (!a.accepted) problems.push(`signed message refused: ${a.reply}`);
      const b = await send(running.port, `ceo@${FORGED_DOMAIN}`, forgedMsg);
      forged = b.reply;
      if (auth.mode === 'enforce' && b.accepted) problems.push('forgery accepted in enforce mode');
      if (auth.mode === 'annotate' && !b.accepted)
        problems.push(`forgery refused in annotate mode: ${b.reply}`);
      const c = await send(running.port, `load@${SENDER_DOMAIN}`, fromForgedMsg);
      fromForged = c.reply;
      if (auth.mode === 'enforce' && c.accepted && CHECKS_DMARC.has(sut.name))
        problems.push('From: forgery accepted in enforce mode');
      if (auth.mode === 'annotate' && !c.accepted)
        problems.push(`From: forgery refused in annotate mode: ${c.reply}`);
      const expected = [a, b, c].filter((x) => x.accepted).length;
      // a queueing MTA delivers after acknowledging: wait (bounded) for the upstream to see them
      const got = await capture.waitForMessages(expected, 30_000).catch(() => capture.messages);
      const find = (subject: string) => got.find((m) => m.data.includes(`Subject: ${subject}`));
      const s = find('verdict signed');
      if (a.accepted && !s) problems.push('signed message not delivered');
      if (s) {
        authResults = headers(s.data, 'Authentication-Results');
        const all = authResults.join(' ');
        if (!/\bspf=pass\b/i.test(all)) problems.push('no spf=pass on the signed message');
        if (!/\bdkim=pass\b/i.test(all)) problems.push('no dkim=pass on the signed message');
      }
      const f = find('verdict forged');
      if (b.accepted && auth.mode === 'annotate') {
        if (!f) problems.push('annotated forgery not delivered');
        else if (!/\bspf=fail\b/i.test(headers(f.data, 'Authentication-Results').join(' ')))
          problems.push('no spf=fail on the forgery');
      }
      if (auth.mode === 'enforce' && f) problems.push('the upstream received the refused forgery');
    } finally {
      await running.stop();
    }
  } finally {
    await capture.close();
  }
  return {
    sut: sut.name,
    mode: auth.mode,
    signed,
    forged,
    fromForged,
    authResults,
    ok: problems.length === 0,
    problems,
  };
}
