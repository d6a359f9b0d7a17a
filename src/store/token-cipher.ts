// Access tokens at rest: looked up by SHA-256, stored only encrypted with AES-256-GCM under a
// key derived from SYNCV3_SECRET, which lives outside the database (a stolen dump alone
// yields no usable token). Hashing alone would not do: pollers need the plaintext to poll.
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

const NONCE_BYTES = 12;
const TAG_BYTES = 16;

export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

export interface TokenCipher {
  encrypt(token: string): Buffer;
  /** Throws when the data was not encrypted with this secret (or was tampered with). */
  decrypt(data: Buffer): string;
}

export function createTokenCipher(secret: string): TokenCipher {
  const key = createHash('sha256').update(secret, 'utf8').digest();
  return {
    encrypt(token) {
      const nonce = randomBytes(NONCE_BYTES);
      const cipher = createCipheriv('aes-256-gcm', key, nonce);
      const body = Buffer.concat([cipher.update(token, 'utf8'), cipher.final()]);
      return Buffer.concat([nonce, body, cipher.getAuthTag()]);
    },
    decrypt(data) {
      const nonce = data.subarray(0, NONCE_BYTES);
      const tag = data.subarray(data.length - TAG_BYTES);
      const decipher = createDecipheriv('aes-256-gcm', key, nonce);
      decipher.setAuthTag(tag);
      return Buffer.concat([decipher.update(data.subarray(NONCE_BYTES, data.length - TAG_BYTES)), decipher.final()]).toString('utf8');
    },
  };
}
