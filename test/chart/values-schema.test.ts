// values.schema.json describes every value of the chart: values.yaml and each ci/*-values.yaml
// validate against it, every key of values.yaml has a schema entry, and typos are refused.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const chart = fileURLToPath(new URL('../../charts/mail-plus/', import.meta.url));
const schema = JSON.parse(readFileSync(join(chart, 'values.schema.json'), 'utf8')) as Schema;
const values = parse(readFileSync(join(chart, 'values.yaml'), 'utf8')) as Record<string, unknown>;
const ciFiles = readdirSync(join(chart, 'ci'))
  .filter((f) => f.endsWith('-values.yaml'))
  .sort();

interface Schema {
  type?: string | string[];
  description?: string;
  properties?: Record<string, Schema>;
  additionalProperties?: boolean | Schema;
  items?: Schema;
}

const ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true });
const validate = ajv.compile(schema);

function errorsOf(data: unknown): string[] {
  return validate(data) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message}`);
}

/** Helm merges a values file over values.yaml (maps merge, everything else is replaced). */
function merge(base: unknown, over: unknown): unknown {
  if (!isMap(base) || !isMap(over)) return over === undefined ? base : over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = v === null ? null : merge(base[k], v);
  return out;
}

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Every key path of values.yaml that the schema does not describe (with a description). */
function undescribed(node: unknown, s: Schema, path: string): string[] {
  if (!isMap(node)) return [];
  // A free-form object (labels, resources, securityContext...): its keys are Kubernetes' business.
  if (!s.properties) return [];
  const out: string[] = [];
  for (const [k, v] of Object.entries(node)) {
    const child = s.properties[k];
    const p = path ? `${path}.${k}` : k;
    if (!child) out.push(`${p}: not in values.schema.json`);
    else if (!child.description) out.push(`${p}: schema entry has no description`);
    else out.push(...undescribed(v, child, p));
  }
  return out;
}

describe('charts/mail-plus/values.schema.json', () => {
  it('compiles in strict mode', () => {
    expect(typeof validate).toBe('function');
  });

  it('accepts values.yaml', () => {
    expect(errorsOf(values)).toEqual([]);
  });

  it('has at least one ci/*-values.yaml example', () => {
    expect(ciFiles.length).toBeGreaterThan(0);
  });

  it.each(ciFiles)('accepts ci/%s merged over values.yaml', (file) => {
    const over = parse(readFileSync(join(chart, 'ci', file), 'utf8')) ?? {};
    expect(errorsOf(over)).toEqual([]);
    expect(errorsOf(merge(values, over))).toEqual([]);
  });

  it('describes every key of values.yaml', () => {
    expect(undescribed(values, schema, '')).toEqual([]);
  });

  it('closes every object that has declared properties (typos are errors, not silently ignored)', () => {
    const open: string[] = [];
    const walk = (s: Schema, path: string) => {
      if (s.properties) {
        if (s.additionalProperties !== false) open.push(path || '<root>');
        for (const [k, v] of Object.entries(s.properties)) walk(v, path ? `${path}.${k}` : k);
      }
    };
    walk(schema, '');
    expect(open).toEqual([]);
  });

  it('refuses misspelt and mistyped values', () => {
    expect(errorsOf(merge(values, { relay: { replicas: 3 } }))).toContain(
      '/relay must NOT have additional properties',
    );
    expect(errorsOf(merge(values, { relay: { service: { type: 'Ingress' } } })).length).toBeGreaterThan(0);
    expect(errorsOf(merge(values, { monitoring: { scrape: { kind: 'Both' } } })).length).toBeGreaterThan(0);
    expect(errorsOf(merge(values, { relay: { drainTimeoutSeconds: '30s' } })).length).toBeGreaterThan(0);
  });
});
