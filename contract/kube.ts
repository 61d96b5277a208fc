// The Kubernetes names both sides agree on: the API group of the resources, the relay config's
// apiVersion, the default ConfigMap, namespace and Lease, and the labels that mark what the
// operator publishes and which pods are relays (the chart sets the same).

export const MAILPLUS_GROUP = 'mailplus.io';
export const MAILPLUS_VERSION = 'v1alpha1';
/** apiVersion of TenantPolicy and MailRoute (crds/). */
export const MAILPLUS_API_VERSION = `${MAILPLUS_GROUP}/${MAILPLUS_VERSION}`;
/** apiVersion of the relay config document (contract/config/schema.json). */
export const RELAY_CONFIG_API_VERSION = 'relay.mailplus.io/v1alpha1' as const;

/** Where the operator runs and publishes when nothing else is said. */
export const DEFAULT_NAMESPACE = 'mailplus-system';
/** The relay-config ConfigMap (shards: `<name>-shard-<i>`). */
export const DEFAULT_CONFIGMAP_NAME = 'mailplus-relay-config';
/** The operator's leader-election Lease. */
export const DEFAULT_LEASE_NAME = 'mailplus-operator';

/** Labels of every ConfigMap the operator publishes. */
export const MANAGED_LABELS = {
  'app.kubernetes.io/managed-by': 'mailplus-operator',
  'app.kubernetes.io/part-of': 'mail-plus',
  'app.kubernetes.io/component': 'relay-config',
} as const;

/** The chart labels relay pods app.kubernetes.io/component=relay (plus name and instance). */
export const DEFAULT_RELAY_SELECTOR = 'app.kubernetes.io/component=relay';
