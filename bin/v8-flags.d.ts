// Types for v8-flags.js (plain JavaScript: bin/mailplus.js loads it before type stripping is set up).
export declare const UNCONSTRAINED_OLD_SPACE_MB: number;
export declare function relayV8Flags(p: {
  execArgv: readonly string[];
  nodeOptions: string | undefined;
  constrainedMemory: number;
  totalMemory: number;
}): string[];
export declare function operatorV8Flags(p: {
  execArgv: readonly string[];
  nodeOptions: string | undefined;
}): string[];
export declare function operatorEnv(
  env: Readonly<Record<string, string | undefined>>,
): Record<string, string>;
