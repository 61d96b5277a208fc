// Reads resources from files and directories: multi-document YAML or JSON. Keeps Mail-Plus kinds
// and core v1 Services (inputs for service upstreams); ignores every other kind.
import { readdir, readFile, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { MAILPLUS_API_VERSION, MAILPLUS_GROUP } from '../../contract/kube.ts';
import type { LoadedResource, ResourceError, ResourceKind } from './types.ts';
import { resourceLabel } from './types.ts';

const EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

async function expand(path: string, errors: ResourceError[]): Promise<string[]> {
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(path);
  } catch (err) {
    errors.push({
      file: path,
      resource: '',
      field: '',
      message: `cannot read: ${(err as NodeJS.ErrnoException).code ?? err}`,
    });
    return [];
  }
  if (!info.isDirectory()) return [path];
  const out: string[] = [];
  const entries = (await readdir(path, { withFileTypes: true })).sort((a, b) =>
    a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
  );
  for (const entry of entries) {
    const child = join(path, entry.name);
    if (entry.isDirectory()) out.push(...(await expand(child, errors)));
    else if (EXTENSIONS.has(extname(entry.name).toLowerCase())) out.push(child);
  }
  return out;
}

const MAILPLUS_KINDS = ['TenantPolicy', 'MailRoute'] as const;

/** 'MailRoutes', 'mailroute', 'Mailroute' -> 'MailRoute': what the author evidently meant. */
function meantKind(kind: string): string | undefined {
  const k = kind.toLowerCase().replace(/s$/, '');
  return MAILPLUS_KINDS.find((m) => m.toLowerCase() === k);
}

/**
 * Why a document cannot be a resource, or why it looks like a Mail-Plus resource that would be
 * skipped: what kubectl refuses (no apiVersion or kind), a Mail-Plus kind outside mailplus.io, an
 * unknown kind in mailplus.io, a misspelt Mail-Plus kind. Undefined for well-formed documents.
 */
export function documentShapeError(
  apiVersion: string,
  kind: string,
): { field: string; message: string } | undefined {
  const meant = meantKind(kind);
  if (kind === '')
    return { field: 'kind', message: 'missing: every document needs kind (e.g. MailRoute, TenantPolicy)' };
  if (apiVersion === '') {
    const hint = meant ? `; use ${MAILPLUS_API_VERSION}` : '';
    return { field: 'apiVersion', message: `missing for kind ${kind}${hint}` };
  }
  const group = apiVersion.includes('/') ? apiVersion.slice(0, apiVersion.indexOf('/')) : '';
  if (group === MAILPLUS_GROUP && !(MAILPLUS_KINDS as readonly string[]).includes(kind)) {
    const hint = meant ? `did you mean ${meant}?` : `use ${MAILPLUS_KINDS.join(' or ')}`;
    return { field: 'kind', message: `unknown kind ${kind} in ${apiVersion}; ${hint}` };
  }
  if (meant && meant !== kind)
    return { field: 'kind', message: `unknown kind ${kind}; did you mean ${meant}?` };
  if (meant && group !== MAILPLUS_GROUP)
    return { field: 'apiVersion', message: `${apiVersion} has no kind ${kind}; use ${MAILPLUS_API_VERSION}` };
  return undefined;
}

/** Classifies one parsed document; undefined for kinds Mail-Plus ignores. */
export function classify(
  doc: unknown,
  file: string | undefined,
  document: number,
  errors: ResourceError[],
): LoadedResource | undefined {
  if (doc === null || doc === undefined) return undefined;
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    errors.push({
      file,
      resource: '',
      field: '',
      message: `document ${document + 1} is not a Kubernetes object`,
    });
    return undefined;
  }
  const o = doc as Record<string, unknown>;
  const apiVersion = typeof o.apiVersion === 'string' ? o.apiVersion : '';
  const kind = typeof o.kind === 'string' ? o.kind : '';
  if (kind === 'List' && Array.isArray(o.items)) {
    // kubectl get -o yaml output; items are classified by the caller through flattenList.
    return undefined;
  }
  const shapeError = documentShapeError(apiVersion, kind);
  if (shapeError) {
    // Foreign kinds are skipped on purpose (a directory may hold Deployments too), so a typo in
    // kind or apiVersion would otherwise make a Mail-Plus resource vanish without a word.
    errors.push({
      file,
      resource: `document ${document + 1}`,
      field: shapeError.field,
      message: shapeError.message,
    });
    return undefined;
  }
  let k: ResourceKind;
  if ((kind === 'TenantPolicy' || kind === 'MailRoute') && apiVersion.startsWith('mailplus.io/')) {
    k = kind;
    if (apiVersion !== MAILPLUS_API_VERSION) {
      const md = (o.metadata ?? {}) as Record<string, unknown>;
      errors.push({
        file,
        resource: resourceLabel(kind, md.namespace as string | undefined, String(md.name ?? '<unnamed>')),
        field: 'apiVersion',
        message: `unsupported version ${apiVersion}; use ${MAILPLUS_API_VERSION}`,
      });
      return undefined;
    }
  } else if (kind === 'Service' && apiVersion === 'v1') {
    k = 'Service';
  } else {
    return undefined;
  }
  const md =
    typeof o.metadata === 'object' && o.metadata !== null ? (o.metadata as Record<string, unknown>) : {};
  const namespace = typeof md.namespace === 'string' && md.namespace !== '' ? md.namespace : 'default';
  if (typeof md.namespace !== 'string' || md.namespace === '') o.metadata = { ...md, namespace };
  const name = typeof md.name === 'string' ? md.name : '';
  const r: LoadedResource = { kind: k, apiVersion, namespace, name, object: o as never, document };
  if (file !== undefined) r.file = file;
  return r;
}

/** Parses one file's text (YAML, possibly multi-document, or JSON). Pure. */
export function parseResourceText(
  text: string,
  file?: string,
): { resources: LoadedResource[]; errors: ResourceError[] } {
  const resources: LoadedResource[] = [];
  const errors: ResourceError[] = [];
  const docs = parseAllDocuments(text, { prettyErrors: true });
  const list = Array.isArray(docs) ? docs : [docs];
  list.forEach((doc, index) => {
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        const line = e.linePos?.[0];
        errors.push({
          file: line ? `${file ?? '<input>'}:${line.line}:${line.col}` : file,
          resource: '',
          field: '',
          message: `YAML syntax error: ${e.message.split('\n')[0]}`,
        });
      }
      return;
    }
    const value = doc.toJS({ maxAliasCount: 100 }) as unknown;
    const o = value as Record<string, unknown> | null;
    const items = o && o.kind === 'List' && Array.isArray(o.items) ? (o.items as unknown[]) : [value];
    for (const item of items) {
      const r = classify(item, file, index, errors);
      if (r) resources.push(r);
    }
  });
  return { resources, errors };
}

/**
 * Loads files and directories (recursively; .yaml, .yml, .json, sorted by name). Missing
 * namespaces become 'default'. Errors name the file (and line for YAML syntax errors).
 */
export async function loadResourceFiles(
  paths: string[],
): Promise<{ resources: LoadedResource[]; errors: ResourceError[] }> {
  const resources: LoadedResource[] = [];
  const errors: ResourceError[] = [];
  for (const path of paths) {
    for (const file of await expand(path, errors)) {
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch (err) {
        errors.push({
          file,
          resource: '',
          field: '',
          message: `cannot read: ${(err as NodeJS.ErrnoException).code ?? err}`,
        });
        continue;
      }
      const r = parseResourceText(text, file);
      resources.push(...r.resources);
      errors.push(...r.errors);
    }
  }
  // The same object twice (e.g. a file given directly and through its directory) is an error.
  const seen = new Map<string, LoadedResource>();
  for (const r of resources) {
    const key = `${r.kind}/${r.namespace}/${r.name}`;
    const prev = seen.get(key);
    if (prev && (prev.file !== r.file || prev.document !== r.document)) {
      errors.push({
        file: r.file,
        resource: resourceLabel(r.kind, r.namespace, r.name),
        field: '',
        message: `defined more than once (also in ${prev.file ?? '<input>'}, document ${(prev.document ?? 0) + 1}); remove one`,
      });
    } else seen.set(key, r);
  }
  return { resources: [...seen.values()], errors };
}
