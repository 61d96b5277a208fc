import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { decodeRelayConfigMap, relayConfigText } from './configmap.ts';
import { hashConfig } from './hash.ts';
import type { RelayConfig } from './types.gen.ts';

const config: RelayConfig = {
  apiVersion: 'relay.mailplus.io/v1alpha1',
  kind: 'RelayConfig',
  hash: '',
  sources: {},
  tenants: [],
};
config.hash = hashConfig(config);
const json = JSON.stringify(config);
const md = { namespace: 'mailplus-system', name: 'mailplus-relay-config', resourceVersion: '1' };

describe('relay config from a ConfigMap', () => {
  it('reads data["relay-config.json"] or gzip binaryData["relay-config.json.gz"] (preferred)', () => {
    expect(relayConfigText({ metadata: md, data: { 'relay-config.json': json } })).toBe(json);
    const gz = gzipSync(json).toString('base64');
    expect(
      relayConfigText({
        metadata: md,
        data: { 'relay-config.json': '{}' },
        binaryData: { 'relay-config.json.gz': gz },
      }),
    ).toBe(json);
    expect(decodeRelayConfigMap({ metadata: md, binaryData: { 'relay-config.json.gz': gz } }).hash).toBe(
      config.hash,
    );
  });

  it('refuses a tampered config (hash) and names the ConfigMap', () => {
    const tampered = json.replace('"tenants":[]', '"tenants":[],"x":1');
    expect(() => decodeRelayConfigMap({ metadata: md, data: { 'relay-config.json': tampered } })).toThrow(
      /configmap\/mailplus-system\/mailplus-relay-config/,
    );
    expect(() =>
      relayConfigText({ metadata: md, binaryData: { 'relay-config.json.gz': 'bm90IGd6aXA=' } }),
    ).toThrow(/binaryData\["relay-config.json.gz"\] is not gzip/);
  });
});
