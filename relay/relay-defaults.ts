// The relay's defaults, stated once: startRelay() applies them to unset options and `mailplus relay`
// shows them in its help and uses them for unset flags (cli/relay-flags.ts). Fairness defaults
// are DEFAULT_FAIRNESS (relay/smtp/fairness.ts).

const MiB = 1024 * 1024;

export const RELAY_DEFAULTS = {
  listen: { host: '0.0.0.0', port: 2525 },
  admin: { host: '0.0.0.0', port: 9090 },
  /** Relay-wide limit, advertised as SIZE; raw (dot-stuffed) bytes. */
  maxMessageSize: 25 * MiB,
  /** Concurrent SMTP sessions. */
  maxClients: 1000,
  /** MAIL transactions per session before 421; senders reconnect for more. */
  maxTransactions: 1000,
  /** Commands per session before 421 (bounds a session that loops on junk commands). */
  maxCommands: 10_000,
  /** RFC 5321 allows 512, each ESMTP extension (SIZE, BODY, SMTPUTF8, DSN) may add more. */
  maxCommandLength: 2048,
  /** Session lifetime before 421 4.4.2. */
  maxSessionMs: 10 * 60_000,
  /** Idle timeout (the client owes us a command). */
  socketTimeoutMs: 60_000,
  /** How long smtp-server waits for sessions when it closes. */
  closeTimeoutMs: 5_000,
  /** Pause before the greeting, for early-talker detection. */
  greetPauseMs: 0,
  /** Received header fields that make a message a loop (Postfix's hopcount_limit). */
  maxHops: 50,
  /** How long a trusted proxy may take to send its PROXY header. */
  proxyHeaderTimeoutMs: 5000,
  /** On SIGTERM, how long in-flight transactions may finish (`mailplus relay`). */
  drainTimeoutMs: 30_000,
  /** Memory for trace entries while the trace store is unreachable. */
  traceBufferBytes: 8 * MiB,
  /** Per-try DNS timeout and tries per query. */
  dnsTimeoutMs: 2000,
  dnsTries: 2,
  /** Sum of listed zones' weights that refuses a client at connect. */
  dnsblThreshold: 1,
} as const;
