// Parses and verifies a RelayConfig document: JSON syntax, the schema.json contract, then the hash.
// The relay refuses (and keeps its previous config) when any of these fail.
import { Ajv, type ErrorObject } from 'ajv';
import { hashConfig } from './hash.ts';
import schema from './schema.json' with { type: 'json' };
import type { RelayConfig } from './types.gen.ts';

export { canonicalJson, hashConfig } from './hash.ts';

export class RelayConfigError extends Error {
  readonly source: string;
  readonly problems: string[];
  constructor(source: string, problems: string[]) {
    super(`${source}: invalid relay config:\n  ${problems.join('\n  ')}`);
    this.name = 'RelayConfigError';
    this.source = source;
    this.problems = problems;
  }
}

const ajv = new Ajv({ allErrors: true, strict: true });
const validate = ajv.compile<RelayConfig>(schema);

/** '$.tenants[0].routes[3].action' style path from an ajv instancePath. */
export function jsonPath(instancePath: string): string {
  if (instancePath === '') return '$';
  return `$${instancePath
    .split('/')
    .slice(1)
    .map((seg) => {
      const s = seg.replaceAll('~1', '/').replaceAll('~0', '~');
      return /^[0-9]+$/.test(s)
        ? `[${s}]`
        : /^[A-Za-z_][A-Za-z0-9_]*$/.test(s)
          ? `.${s}`
          : `[${JSON.stringify(s)}]`;
    })
    .join('')}`;
}

function describe(e: ErrorObject): string {
  const at = jsonPath(e.instancePath);
  switch (e.keyword) {
    case 'additionalProperties':
      return `${at}: unknown field "${(e.params as { additionalProperty: string }).additionalProperty}"`;
    case 'required':
      return `${at}: missing field "${(e.params as { missingProperty: string }).missingProperty}"`;
    case 'enum':
      return `${at}: ${e.message} (${(e.params as { allowedValues: unknown[] }).allowedValues.join(', ')})`;
    default:
      return `${at}: ${e.message}`;
  }
}

/** Validates a parsed document against schema.json; returns problems (empty when valid). */
export function validateRelayConfig(doc: unknown): string[] {
  if (validate(doc)) return [];
  const seen = new Set<string>();
  const problems: string[] = [];
  for (const e of validate.errors ?? []) {
    // oneOf failures repeat for every branch; keep each distinct message once.
    const text = describe(e);
    if (!seen.has(text)) {
      seen.add(text);
      problems.push(text);
    }
  }
  return problems;
}

/**
 * Documents this process has already verified. A config read from a file or a ConfigMap is
 * verified when it is parsed and then handed to the relay, which verifies whatever it is given:
 * remembering the verified objects (configs are never modified once built) keeps the schema check and the content hash (a full canonical
 * serialisation, hundreds of milliseconds for tens of thousands of routes) to once per reload.
 */
const verified = new WeakSet<object>();

/**
 * Schema validation (errors name the JSON path) and hash verification of a parsed document.
 * `source` names the file or ConfigMap key in error messages. Throws RelayConfigError.
 */
export function verifyRelayConfig(doc: unknown, source: string): RelayConfig {
  if (typeof doc === 'object' && doc !== null && verified.has(doc)) return doc as RelayConfig;
  const problems = validateRelayConfig(doc);
  if (problems.length > 0) throw new RelayConfigError(source, problems);
  const config = doc as RelayConfig;
  const expected = hashConfig(config);
  if (expected !== config.hash) {
    throw new RelayConfigError(source, [
      `$.hash: ${config.hash} does not match the content (${expected}); the file was edited or truncated, re-render it with mailplus render`,
    ]);
  }
  verified.add(config);
  return config;
}

/** JSON parse, then verifyRelayConfig. Throws RelayConfigError. */
export function parseRelayConfig(text: string, source: string): RelayConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new RelayConfigError(source, [`not valid JSON: ${(err as Error).message}`]);
  }
  return verifyRelayConfig(doc, source);
}

/**
 * Marks a document this process assembled from verified documents, with its hash freshly computed
 * from its content (the union of verified shards): the relay then does not validate and hash the
 * whole union a second time on apply.
 */
export function assembledFromVerified(config: RelayConfig): RelayConfig {
  verified.add(config);
  return config;
}
