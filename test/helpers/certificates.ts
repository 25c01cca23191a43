/**
 * Certificates for the TLS tests, made with the `openssl` CLI into a folder of the test: a CA, a
 * server certificate for 127.0.0.1 and localhost, client certificates with a subject CN, and one
 * without a CN. RSA 2048 keeps generation fast enough (well under a second each).
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface KeyPair {
  readonly cert: string;
  readonly key: string;
}

export interface TestPki {
  readonly dir: string;
  /** The CA certificate (signs the server and the clients). */
  readonly ca: string;
  readonly caKey: string;
  /** For 127.0.0.1 and localhost (subjectAltName). */
  readonly server: KeyPair;
  /** Makes another server certificate (for reload tests: a different fingerprint). */
  serverCert(name: string): KeyPair;
  /** A client certificate with subject CN `cn`, or without any CN when null. */
  clientCert(name: string, cn: string | null): KeyPair;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], timeout: 20_000 });
}

/** A fresh CA and server certificate in `dir`. */
export function makeTestPki(dir: string): TestPki {
  const ca = join(dir, 'ca.crt');
  const caKey = join(dir, 'ca.key');
  openssl(dir, ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', caKey, '-out', ca, '-days', '2', '-subj', '/CN=edgeway test CA']);
  const sign = (name: string, subject: string, extensions: string): KeyPair => {
    const key = join(dir, `${name}.key`);
    const csr = join(dir, `${name}.csr`);
    const cert = join(dir, `${name}.crt`);
    const ext = join(dir, `${name}.ext`);
    writeFileSync(ext, extensions);
    openssl(dir, ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', subject]);
    openssl(dir, ['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial', '-out', cert, '-days', '2', '-extfile', ext]);
    return { cert, key };
  };
  const serverCert = (name: string): KeyPair => sign(name, `/CN=${name}`, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  return {
    dir,
    ca,
    caKey,
    server: serverCert('server'),
    serverCert,
    clientCert: (name, cn) => sign(name, cn === null ? '/O=edgeway test clients' : `/O=edgeway test clients/CN=${cn}`, 'extendedKeyUsage=clientAuth\n'),
  };
}

/** The SHA-256 fingerprint of a PEM certificate file (as tls's getPeerCertificate().fingerprint256). */
export function fingerprint(certPath: string): string {
  return new X509Certificate(readFileSync(certPath)).fingerprint256;
}
