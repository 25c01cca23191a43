import { ConfigError, validateConfig } from '../../config/load';

/** The problems a configuration document is refused with; fails the test if it is accepted. */
export function problemsOf(data: unknown): readonly string[] {
  try {
    validateConfig(data, 'test');
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError, but the configuration was accepted');
}
