// Validates TenantPolicy and MailRoute objects the way the API server would (CRD openAPIV3Schema
// with defaults), then re-checks in code every rule the CRDs express in CEL (older API servers
// and `mailplus validate` cannot rely on CEL), then the address/domain grammar. Pure.
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { parseCidr, parseIp } from '../../contract/grammar/cidr.ts';
import { dnsblZoneError, matchPatternError } from '../../contract/grammar/dnsbl.ts';
import { normalizeDomain, normalizeDomainClaim, parsePattern } from '../../contract/grammar/match.ts';
import { parseRewriteTemplate } from '../../contract/grammar/rewrite.ts';
import { crdSchemas } from '../api/schemas.gen.ts';
import type { MailRoute, TenantPolicy } from '../api/types.gen.ts';
import { type LoadedResource, type ResourceError, resourceLabel } from './types.ts';
import { parseByteQuantity, parseDurationSeconds } from './units.ts';

export interface ValidationResult<T> {
  errors: ResourceError[];
  /** A defaulted deep copy (CRD defaults applied), present when there are no errors. */
  value?: T;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** OpenAPI v3 (Kubernetes flavour) -> a JSON Schema ajv can run; unknown fields become errors. */
export function toAjvSchema(schema: unknown, path: string[] = []): unknown {
  if (Array.isArray(schema)) return schema.map((s) => toAjvSchema(s, path));
  if (!isObj(schema)) return schema;
  const out: Obj = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key.startsWith('x-kubernetes-')) continue;
    if (key === 'properties' && isObj(value)) {
      const props: Obj = {};
      for (const [name, sub] of Object.entries(value)) props[name] = toAjvSchema(sub, [...path, name]);
      out.properties = props;
    } else {
      out[key] = toAjvSchema(value, path);
    }
  }
  // metadata is validated in code; everything else is closed like server-side strict field validation.
  const isMetadata = path.length === 1 && path[0] === 'metadata';
  if (out.type === 'object' && out.additionalProperties === undefined && !isMetadata) {
    out.additionalProperties = false;
  }
  return out;
}

const addFormats =
  (addFormatsModule as unknown as { default: typeof addFormatsModule }).default ?? addFormatsModule;
const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false });
(addFormats as unknown as (a: Ajv, f: string[]) => void)(ajv, ['date-time']);
ajv.addFormat('int64', { type: 'number', validate: (n: number) => Number.isSafeInteger(n) });
// the API server's `format: cidr` (clientCIDRs), checked the same way on servers and in files
ajv.addFormat('cidr', { type: 'string', validate: (c: string) => parseCidr(c).ok });

const validators: Record<'TenantPolicy' | 'MailRoute', ValidateFunction> = {
  TenantPolicy: ajv.compile(toAjvSchema(crdSchemas.TenantPolicy) as object),
  MailRoute: ajv.compile(toAjvSchema(crdSchemas.MailRoute) as object),
};

/** 'spec.match.recipients[2]' from '/spec/match/recipients/2'. */
export function fieldPath(instancePath: string, child?: string): string {
  const segs = instancePath === '' ? [] : instancePath.split('/').slice(1);
  if (child !== undefined) segs.push(child);
  let out = '';
  for (const raw of segs) {
    const s = raw.replaceAll('~1', '/').replaceAll('~0', '~');
    if (/^[0-9]+$/.test(s)) out += `[${s}]`;
    else out += out === '' ? s : `.${s}`;
  }
  return out;
}

function schemaErrors(errors: ErrorObject[]): Array<{ field: string; message: string; weak?: boolean }> {
  const anyOfPaths = new Set(errors.filter((e) => e.keyword === 'anyOf').map((e) => e.instancePath));
  const out: Array<{ field: string; message: string; weak?: boolean }> = [];
  for (const e of errors) {
    const weak = e.keyword === 'pattern' || e.keyword === 'minLength' || e.keyword === 'format';
    if (anyOfPaths.has(e.instancePath) && e.schemaPath.includes('/anyOf/')) continue;
    const p = e.params as Record<string, unknown>;
    switch (e.keyword) {
      case 'required':
        out.push({
          field: fieldPath(e.instancePath, String(p.missingProperty)),
          message: 'required field is missing',
        });
        break;
      case 'additionalProperties':
        out.push({
          field: fieldPath(e.instancePath, String(p.additionalProperty)),
          message: 'unknown field (check the spelling against the CRD: kubectl explain)',
        });
        break;
      case 'enum':
        out.push({
          field: fieldPath(e.instancePath),
          message: `must be one of: ${(p.allowedValues as unknown[]).map(String).join(', ')}`,
        });
        break;
      case 'anyOf':
        out.push({ field: fieldPath(e.instancePath), message: 'must be an integer or a string' });
        break;
      case 'pattern':
        out.push({
          field: fieldPath(e.instancePath),
          message: `does not match the pattern ${String(p.pattern)}`,
          weak,
        });
        break;
      default:
        out.push({ field: fieldPath(e.instancePath), message: e.message ?? e.keyword, weak });
    }
  }
  return out;
}

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function metadataErrors(obj: Obj): Array<{ field: string; message: string }> {
  const out: Array<{ field: string; message: string }> = [];
  const md = obj.metadata;
  if (!isObj(md)) return [{ field: 'metadata', message: 'required field is missing' }];
  if (typeof md.name !== 'string' || md.name === '') {
    out.push({ field: 'metadata.name', message: 'required field is missing' });
  } else if (md.name.length > 253 || !DNS1123_SUBDOMAIN.test(md.name)) {
    out.push({ field: 'metadata.name', message: 'must be a lower-case DNS subdomain (a-z, 0-9, "-", ".")' });
  }
  if (
    md.namespace !== undefined &&
    (typeof md.namespace !== 'string' || md.namespace.length > 63 || !DNS1123_LABEL.test(md.namespace))
  ) {
    out.push({ field: 'metadata.namespace', message: 'must be a lower-case DNS label (a-z, 0-9, "-")' });
  }
  if (
    md.generation !== undefined &&
    (!Number.isSafeInteger(md.generation) || (md.generation as number) < 0)
  ) {
    out.push({ field: 'metadata.generation', message: 'must be a non-negative integer' });
  }
  return out;
}

function tenantPolicySemantics(spec: Obj): Array<{ field: string; message: string }> {
  const out: Array<{ field: string; message: string }> = [];
  if (Array.isArray(spec.domains)) {
    const seen = new Map<string, number>();
    spec.domains.forEach((d, i) => {
      if (typeof d !== 'string') return;
      const r = normalizeDomainClaim(d);
      if (!r.ok) {
        out.push({ field: `spec.domains[${i}]`, message: `${r.error}; use example.com or *.example.com` });
        return;
      }
      const first = seen.get(r.value);
      if (first !== undefined) {
        out.push({
          field: `spec.domains[${i}]`,
          message: `duplicate of spec.domains[${first}] (${r.value})`,
        });
      } else seen.set(r.value, i);
    });
  }
  if (Array.isArray(spec.clientCIDRs)) {
    spec.clientCIDRs.forEach((c, i) => {
      if (typeof c !== 'string') return;
      const r = parseCidr(c);
      if (!r.ok) out.push({ field: `spec.clientCIDRs[${i}]`, message: `${r.error}` });
    });
  }
  if (isObj(spec.dnsbl)) out.push(...dnsblSemantics(spec.dnsbl));
  const limits = spec.limits;
  if (isObj(limits)) {
    const size = limits.maxMessageSize;
    if (typeof size === 'number' || typeof size === 'string') {
      const r = parseByteQuantity(size);
      if (!r.ok) out.push({ field: 'spec.limits.maxMessageSize', message: r.error });
    }
    if (isObj(limits.rate) && typeof limits.rate.per === 'string') {
      const r = parseDurationSeconds(limits.rate.per);
      if (!r.ok) out.push({ field: 'spec.limits.rate.per', message: r.error });
    }
  }
  return out;
}

/** spec.dnsbl: zone names, return-code patterns, allow-list CIDRs, a zone that can refuse at all. */
function dnsblSemantics(dnsbl: Obj): Array<{ field: string; message: string }> {
  const out: Array<{ field: string; message: string }> = [];
  const zones = Array.isArray(dnsbl.zones) ? dnsbl.zones : [];
  const seen = new Map<string, number>();
  let positive = 0;
  zones.forEach((z, i) => {
    if (!isObj(z)) return;
    const f = `spec.dnsbl.zones[${i}]`;
    if (typeof z.zone === 'string') {
      const err = dnsblZoneError(z.zone);
      if (err) out.push({ field: `${f}.zone`, message: err });
      const key = z.zone.toLowerCase().replace(/\.$/, '');
      const first = seen.get(key);
      if (first !== undefined) {
        out.push({
          field: `${f}.zone`,
          message: `duplicate of spec.dnsbl.zones[${first}] (${key}); list each zone once`,
        });
      } else seen.set(key, i);
    }
    // ajv applied the CRD's default weight; a weight of the wrong type is a schema error already
    if (typeof z.weight !== 'number' || z.weight > 0) positive++;
    if (Array.isArray(z.match)) {
      z.match.forEach((m, j) => {
        if (typeof m !== 'string') return;
        const err = matchPatternError(m);
        if (err) out.push({ field: `${f}.match[${j}]`, message: err });
      });
    }
  });
  if (zones.length > 0 && positive === 0) {
    out.push({
      field: 'spec.dnsbl.zones',
      message:
        'every zone has a negative weight, so nothing can ever be refused; give a blocklist a positive weight',
    });
  }
  if (Array.isArray(dnsbl.allow)) {
    dnsbl.allow.forEach((c, i) => {
      if (typeof c !== 'string') return;
      const r = parseCidr(c);
      if (!r.ok) out.push({ field: `spec.dnsbl.allow[${i}]`, message: r.error });
    });
  }
  return out;
}

function isValidHost(host: string): boolean {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (parseIp(bare) !== undefined) return true;
  if (bare.includes(':')) return false;
  return normalizeDomain(bare).ok;
}

function mailRouteSemantics(spec: Obj): Array<{ field: string; message: string }> {
  const out: Array<{ field: string; message: string }> = [];
  const match = spec.match;
  if (isObj(match)) {
    for (const key of ['recipients', 'senders'] as const) {
      const list = match[key];
      if (!Array.isArray(list)) continue;
      const seen = new Map<string, number>();
      list.forEach((p, i) => {
        if (typeof p !== 'string') return;
        const r = parsePattern(p, { allowNull: key === 'senders' });
        if (!r.ok) {
          out.push({ field: `spec.match.${key}[${i}]`, message: r.error });
          return;
        }
        const first = seen.get(r.value.text);
        if (first !== undefined) {
          out.push({
            field: `spec.match.${key}[${i}]`,
            message: `duplicate of spec.match.${key}[${first}] (${r.value.text})`,
          });
        } else seen.set(r.value.text, i);
      });
    }
  }
  const hasForward = spec.forward !== undefined;
  const hasReject = spec.reject !== undefined;
  if (hasForward === hasReject) {
    out.push({
      field: 'spec',
      message: hasForward
        ? 'set exactly one action: forward or reject, not both'
        : 'set exactly one action: forward or reject',
    });
  }
  if (isObj(spec.forward) && Array.isArray(spec.forward.upstreams)) {
    spec.forward.upstreams.forEach((u, i) => {
      if (!isObj(u)) return;
      const at = `spec.forward.upstreams[${i}]`;
      if ((u.host !== undefined) === (u.service !== undefined)) {
        out.push({ field: at, message: 'set exactly one of host or service' });
      }
      if (u.service !== undefined && u.port !== undefined) {
        out.push({
          field: `${at}.port`,
          message: 'port applies to host; a service upstream names its port in service.port',
        });
      }
      if (typeof u.host === 'string' && !isValidHost(u.host)) {
        out.push({ field: `${at}.host`, message: `"${u.host}" is not a DNS name or IP address` });
      }
      if (
        isObj(u.service) &&
        typeof u.service.port === 'number' &&
        (u.service.port < 1 || u.service.port > 65535 || !Number.isInteger(u.service.port))
      ) {
        out.push({ field: `${at}.service.port`, message: 'must be a port number 1-65535 or a port name' });
      }
      if (
        isObj(u.service) &&
        typeof u.service.port === 'string' &&
        !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(u.service.port)
      ) {
        out.push({ field: `${at}.service.port`, message: 'must be a port number 1-65535 or a port name' });
      }
    });
  }
  if (
    isObj(spec.forward) &&
    isObj(spec.forward.rewrite) &&
    typeof spec.forward.rewrite.recipient === 'string'
  ) {
    const r = parseRewriteTemplate(spec.forward.rewrite.recipient);
    if (!r.ok) out.push({ field: 'spec.forward.rewrite.recipient', message: r.error });
  }
  if (isObj(spec.reject)) {
    // ajv applied the CRD's default code; a code of the wrong type is a schema error already
    const code = spec.reject.code;
    const enhanced = spec.reject.enhancedCode;
    if (
      typeof code === 'number' &&
      typeof enhanced === 'string' &&
      enhanced[0] !== String(Math.floor(code / 100))
    ) {
      out.push({
        field: 'spec.reject.enhancedCode',
        message: `${enhanced} does not agree with code ${code}: use ${Math.floor(code / 100)}.x.x`,
      });
    }
    const message = spec.reject.message;
    if (typeof message === 'string' && !/^[\x20-\x7e]*$/.test(message)) {
      out.push({ field: 'spec.reject.message', message: 'only printable ASCII, no line breaks or tabs' });
    }
  }
  return out;
}

/** Deep copy of JSON-shaped data (much cheaper than structuredClone for many small objects). */
function cloneJson(v: unknown): unknown {
  if (typeof v !== 'object' || v === null) return v;
  if (Array.isArray(v)) return v.map(cloneJson);
  const out: Obj = {};
  for (const k in v) out[k] = cloneJson((v as Obj)[k]);
  return out;
}

function validateKind<T>(
  kind: 'TenantPolicy' | 'MailRoute',
  input: unknown,
  file?: string,
): ValidationResult<T> {
  const copy = cloneJson(input);
  const md = isObj(copy) && isObj(copy.metadata) ? copy.metadata : {};
  const resource = resourceLabel(
    kind,
    typeof md.namespace === 'string' ? md.namespace : undefined,
    typeof md.name === 'string' ? md.name : '<unnamed>',
  );
  const problems: Array<{ field: string; message: string; weak?: boolean }> = [];
  if (!isObj(copy)) {
    problems.push({ field: '', message: 'not an object' });
  } else {
    problems.push(...metadataErrors(copy));
    const validate = validators[kind];
    if (!validate(copy)) problems.push(...schemaErrors(validate.errors ?? []));
    const spec = copy.spec;
    if (isObj(spec)) {
      // The grammar checks in code explain more than a regex does: they replace the schema's
      // pattern/length messages for the same field; other schema errors win over them.
      const semantic = kind === 'TenantPolicy' ? tenantPolicySemantics(spec) : mailRouteSemantics(spec);
      const semanticFields = new Set(semantic.map((p) => p.field));
      const kept = problems.filter((p) => !(p.weak && semanticFields.has(p.field)));
      const taken = new Set(kept.map((p) => p.field));
      problems.length = 0;
      problems.push(...kept);
      for (const p of semantic) if (!taken.has(p.field)) problems.push(p);
    }
  }
  const errors = problems.map((p) => ({
    ...(file !== undefined ? { file } : {}),
    resource,
    field: p.field,
    message: p.message,
  }));
  return errors.length > 0 ? { errors } : { errors, value: copy as T };
}

export function validateTenantPolicy(input: unknown, file?: string): ValidationResult<TenantPolicy> {
  return validateKind<TenantPolicy>('TenantPolicy', input, file);
}

export function validateMailRoute(input: unknown, file?: string): ValidationResult<MailRoute> {
  return validateKind<MailRoute>('MailRoute', input, file);
}

/** Errors for every loaded Mail-Plus resource (Services are not validated). */
export function validateResources(resources: LoadedResource[]): ResourceError[] {
  const errors: ResourceError[] = [];
  for (const r of resources) {
    if (r.kind === 'TenantPolicy') errors.push(...validateTenantPolicy(r.object, r.file).errors);
    else if (r.kind === 'MailRoute') errors.push(...validateMailRoute(r.object, r.file).errors);
  }
  return errors;
}
