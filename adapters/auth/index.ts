/**
 * Public API of the auth adapter (adapters/auth, issue 8): password file, Mosquitto-style ACL and
 * the `edgeway passwd` command. It imports from gateway/broker's public index only; gateway/app.ts
 * wires it when the config has an `auth` section.
 */
export { AuthAdapter, AuthFileError, authFileProblems, type AuthAdapterOptions, type AuthReloadResult, type AuthSettings, type AuthStats } from './auth-adapter';
export { Acl, filterCovers, filtersIntersect, type AclClient } from './acl';
export { parsePasswordFile, userNameError, withUser, withoutUser } from './password-file';
export { decoyHash, hashPassword, parsePasswordHash, verifyPassword, SCRYPT_DEFAULTS, type PasswordHash, type ScryptParameters } from './password-hash';
export { runPasswd } from './passwd-command';
