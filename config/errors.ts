/**
 * What the running gateway needs of config/ without loading the validator: the error type and the
 * freeze. Kept apart from load.ts so that importing them does not load zod and yaml (load-isolated.ts).
 */

/** A configuration that cannot be used; `problems` lists every error at once, each with its key path. */
export class ConfigError extends Error {
  readonly code = 'EDGEWAY_ERR_CONFIG';
  constructor(
    readonly source: string,
    readonly problems: readonly string[],
  ) {
    super(`invalid configuration in ${source}:\n${problems.map((p) => `  ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value as Record<string, unknown>)) deepFreeze(child);
  }
  return value;
}
