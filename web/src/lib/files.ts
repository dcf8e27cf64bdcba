// End-to-end encrypted files (PROTOCOL.md §5.3.1) with WebCrypto: a file is sealed in
// 64 KiB chunks, each AES-256-GCM under the file's own key with its index and a
// final-chunk flag in the nonce, so it can be opened as it streams in while chunks
// cannot be reordered, dropped, appended or moved between files. chat-crypto's `file`
// module is the same format; both check the vectors in
// chat-crypto/tests/data/file-interop.json.

/** Plaintext bytes per chunk. */
export const FILE_CHUNK = 64 * 1024;
/** Bytes of an AES-GCM tag. */
export const TAG_LEN = 16;
/** Stored bytes per full chunk. */
export const SEALED_CHUNK = FILE_CHUNK + TAG_LEN;
/** Bytes of a file key. */
export const FILE_KEY_LEN = 32;
const AAD = new TextEncoder().encode('chat/1 file');

/** Why a sealed file does not open. */
export class FileOpenError extends Error {
  constructor(readonly reason: 'chunk' | 'length' | 'digest' | 'key') {
    super(`the file does not open (${reason})`);
  }
}

function nonce(index: number, last: boolean): Uint8Array<ArrayBuffer> {
  const n = new Uint8Array(12);
  new DataView(n.buffer).setBigUint64(3, BigInt(index));
  n[11] = last ? 1 : 0;
  return n;
}

/** How many bytes the sealed form of `plain` bytes takes. */
export function sealedLen(plain: number): number {
  return plain + Math.max(1, Math.ceil(plain / FILE_CHUNK)) * TAG_LEN;
}

/** How many plaintext bytes a sealed file of `sealed` bytes holds, or null if none can. */
export function plainLen(sealed: number): number | null {
  const full = Math.floor(sealed / SEALED_CHUNK);
  const rest = sealed % SEALED_CHUNK;
  let plain: number;
  if (rest === 0 && full > 0) plain = full * FILE_CHUNK;
  else if (rest >= TAG_LEN) plain = full * FILE_CHUNK + rest - TAG_LEN;
  else return null;
  return sealedLen(plain) === sealed ? plain : null;
}

async function aesKey(key: Uint8Array<ArrayBuffer>, use: KeyUsage): Promise<CryptoKey> {
  if (key.length !== FILE_KEY_LEN) throw new FileOpenError('key');
  return crypto.subtle.importKey('raw', key, 'AES-GCM', false, [use]);
}

/** A fresh random file key. */
export function newFileKey(): Uint8Array<ArrayBuffer> {
  return crypto.getRandomValues(new Uint8Array(FILE_KEY_LEN));
}

/** Seals a whole file: its stored bytes and their SHA-256. */
export async function sealFile(
  key: Uint8Array<ArrayBuffer>,
  plain: Uint8Array,
): Promise<{ sealed: Uint8Array<ArrayBuffer>; digest: Uint8Array<ArrayBuffer> }> {
  const k = await aesKey(key, 'encrypt');
  const chunks = Math.max(1, Math.ceil(plain.length / FILE_CHUNK));
  const sealed = new Uint8Array(sealedLen(plain.length));
  for (let i = 0; i < chunks; i++) {
    const part = plain.subarray(i * FILE_CHUNK, Math.min(plain.length, (i + 1) * FILE_CHUNK));
    const out = await crypto.subtle.encrypt(
      { name: 'AES-GCM', iv: nonce(i, i === chunks - 1), additionalData: AAD },
      k,
      part.slice(),
    );
    sealed.set(new Uint8Array(out), i * SEALED_CHUNK);
  }
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', sealed));
  return { sealed, digest };
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/**
 * Opens a whole sealed file whose SHA-256 the message names. Throws FileOpenError on
 * any change, reordering, truncation or extension, or the wrong key.
 */
export async function openFile(
  key: Uint8Array<ArrayBuffer>,
  sealed: Uint8Array<ArrayBuffer>,
  digest: Uint8Array,
): Promise<Uint8Array<ArrayBuffer>> {
  const length = plainLen(sealed.length);
  if (length === null) throw new FileOpenError('length');
  const actual = new Uint8Array(await crypto.subtle.digest('SHA-256', sealed));
  if (!equal(actual, digest)) throw new FileOpenError('digest');
  const k = await aesKey(key, 'decrypt');
  const chunks = Math.ceil(sealed.length / SEALED_CHUNK);
  const plain = new Uint8Array(length);
  for (let i = 0; i < chunks; i++) {
    const part = sealed.subarray(i * SEALED_CHUNK, Math.min(sealed.length, (i + 1) * SEALED_CHUNK));
    let out: ArrayBuffer;
    try {
      out = await crypto.subtle.decrypt(
        { name: 'AES-GCM', iv: nonce(i, i === chunks - 1), additionalData: AAD },
        k,
        part.slice(),
      );
    } catch {
      throw new FileOpenError('chunk');
    }
    plain.set(new Uint8Array(out), i * FILE_CHUNK);
  }
  return plain;
}
