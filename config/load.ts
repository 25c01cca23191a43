import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { ConfigError, deepFreeze } from './errors';
import { configSchema, type Config } from './schema';

export { ConfigError };

/** `listeners[0].port` from ['listeners', 0, 'port']. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return out === '' ? '(top level)' : out;
}

function describeIssue(issue: z.core.$ZodIssue): string[] {
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => `${formatPath([...issue.path, key])}: unknown key`);
  }
  const message = issue.message.replace(/^Invalid (input|option): /, '');
  return [`${formatPath(issue.path)}: ${message}`];
}

/** Validates a parsed document (plain data) and returns a deeply frozen configuration. */
export function validateConfig(data: unknown, source: string): Config {
  const result = configSchema.safeParse(data ?? {});
  if (!result.success) throw new ConfigError(source, result.error.issues.flatMap(describeIssue));
  return deepFreeze(result.data);
}

/** The built-in configuration used when no file is given. */
export function defaultConfig(): Config {
  return validateConfig({}, 'built-in defaults');
}

/** Reads and validates a YAML file. Syntax errors are reported with line and column. */
export function loadConfigFile(path: string): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new ConfigError(path, [`cannot read the file: ${code}`]);
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(path, doc.errors.map((e) => `YAML syntax: ${e.message.split('\n')[0] ?? e.message}`));
  }
  const data: unknown = doc.toJS();
  if (data !== null && data !== undefined && (typeof data !== 'object' || Array.isArray(data))) {
    throw new ConfigError(path, ['(top level): expected a mapping of sections such as "listeners:"']);
  }
  return validateConfig(data, path);
}
