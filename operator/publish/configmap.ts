// The relay config as a ConfigMap: plain JSON under data['relay-config.json'], or gzip under
// binaryData['relay-config.json.gz'] when the JSON is large (ConfigMaps hold at most 1 MiB), with
// only our own labels (never the resources' labels or Argo CD tracking annotations: Argo CD would
// adopt or prune the generated object). Written by server-side apply with force, so fields we
// stop sending (data ↔ binaryData) are removed and a hand edit is overwritten.
import { gzipSync } from 'node:zlib';
import { CONFIG_GZ_KEY, CONFIG_HASH_ANNOTATION, CONFIG_KEY } from '../../contract/config/configmap.ts';
import type { RelayConfig } from '../../contract/config/types.gen.ts';
import { MANAGED_LABELS } from '../../contract/kube.ts';
import { apiErrorText, type KubeClient, PATCH } from '../../platform/kube/client.ts';
import type { ConfigMap } from '../../platform/kube/objects.ts';
import { renderRelayConfig } from '../compile/compile.ts';

export const FIELD_MANAGER = 'mailplus-operator';
/** Above this many bytes of JSON the config is stored gzip-compressed. */
export const GZIP_THRESHOLD = 256 * 1024;
/** The API server refuses ConfigMaps over 1 MiB (data + binaryData + metadata). */
export const CONFIGMAP_LIMIT = 1024 * 1024;

export interface ConfigPayload {
  data?: Record<string, string>;
  binaryData?: Record<string, string>;
  /** Bytes stored (JSON, or gzip before base64). */
  bytes: number;
  jsonBytes: number;
  compressed: boolean;
}

export function encodeRelayConfig(config: RelayConfig, gzipThreshold = GZIP_THRESHOLD): ConfigPayload {
  const json = renderRelayConfig(config);
  const jsonBytes = Buffer.byteLength(json);
  if (jsonBytes <= gzipThreshold) {
    return { data: { [CONFIG_KEY]: json }, bytes: jsonBytes, jsonBytes, compressed: false };
  }
  const gz = gzipSync(json, { level: 9 });
  return {
    binaryData: { [CONFIG_GZ_KEY]: gz.toString('base64') },
    bytes: gz.length,
    jsonBytes,
    compressed: true,
  };
}

export function relayConfigMap(
  namespace: string,
  name: string,
  config: RelayConfig,
  payload: ConfigPayload,
): ConfigMap {
  const cm: ConfigMap = {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      name,
      namespace,
      labels: { ...MANAGED_LABELS },
      annotations: { [CONFIG_HASH_ANNOTATION]: config.hash },
    },
  };
  if (payload.data) cm.data = payload.data;
  if (payload.binaryData) cm.binaryData = payload.binaryData;
  return cm;
}

/** Does the stored ConfigMap carry exactly this payload and our labels (tampering check)? */
export function configMapMatches(cm: ConfigMap | undefined, want: ConfigMap): boolean {
  if (!cm) return false;
  const same = (a: Record<string, string> | undefined, b: Record<string, string> | undefined) => {
    const ka = Object.keys(a ?? {});
    const kb = Object.keys(b ?? {});
    return ka.length === kb.length && ka.every((k) => a?.[k] === b?.[k]);
  };
  if (!same(cm.data, want.data) || !same(cm.binaryData, want.binaryData)) return false;
  for (const [k, v] of Object.entries(want.metadata?.labels ?? {}))
    if (cm.metadata?.labels?.[k] !== v) return false;
  const hash = want.metadata?.annotations?.[CONFIG_HASH_ANNOTATION];
  return cm.metadata?.annotations?.[CONFIG_HASH_ANNOTATION] === hash;
}

export async function applyConfigMap(
  client: KubeClient,
  cm: ConfigMap,
  signal?: AbortSignal,
): Promise<ConfigMap> {
  const name = cm.metadata?.name as string;
  const namespace = cm.metadata?.namespace as string;
  try {
    return await client.request<ConfigMap>(
      'PATCH',
      `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps/${encodeURIComponent(name)}`,
      { query: { fieldManager: FIELD_MANAGER, force: true }, body: cm, contentType: PATCH.apply, signal },
    );
  } catch (err) {
    // the cause keeps the HTTP status: a refusal retrying cannot fix is told from a transient failure
    throw new Error(`applying ConfigMap ${namespace}/${name}: ${apiErrorText(err)}`, { cause: err });
  }
}
