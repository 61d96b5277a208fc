// How a relay config travels in a ConfigMap: the JSON in data, or gzip in binaryData when it is
// large, and the hash annotation. The operator writes it (operator/publish/configmap.ts), relays
// and `mailplus route --configmap` read it (relay/config/configmap-watch.ts).
import { gunzipSync } from 'node:zlib';
import { parseRelayConfig } from './load.ts';
import type { RelayConfig } from './types.gen.ts';

export const CONFIG_KEY = 'relay-config.json';
export const CONFIG_GZ_KEY = 'relay-config.json.gz';
export const CONFIG_HASH_ANNOTATION = 'mailplus.io/config-hash';

export interface ConfigMapLike {
  metadata?: { name?: string; namespace?: string; resourceVersion?: string };
  data?: Record<string, string>;
  binaryData?: Record<string, string>;
}

/** The relay-config JSON text held by a ConfigMap (gzip binaryData preferred). Throws naming the keys. */
export function relayConfigText(cm: ConfigMapLike): string {
  const where = `ConfigMap ${cm.metadata?.namespace}/${cm.metadata?.name}`;
  const gz = cm.binaryData?.[CONFIG_GZ_KEY];
  if (gz !== undefined) {
    try {
      return gunzipSync(Buffer.from(gz, 'base64')).toString('utf8');
    } catch (err) {
      throw new Error(`${where}: binaryData["${CONFIG_GZ_KEY}"] is not gzip: ${(err as Error).message}`);
    }
  }
  const text = cm.data?.[CONFIG_KEY];
  if (text !== undefined) return text;
  throw new Error(
    `${where} has neither data["${CONFIG_KEY}"] nor binaryData["${CONFIG_GZ_KEY}"]; is the operator publishing to it?`,
  );
}

/** Decodes and verifies (schema, hash) the relay config in a ConfigMap. Throws RelayConfigError / Error. */
export function decodeRelayConfigMap(cm: ConfigMapLike): RelayConfig {
  const source = `configmap/${cm.metadata?.namespace}/${cm.metadata?.name}`;
  return parseRelayConfig(relayConfigText(cm), source);
}
