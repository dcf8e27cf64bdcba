import { describe, expect, it } from 'vitest';
import { FileOpenError, SEALED_CHUNK, newFileKey, openFile, plainLen, sealFile, sealedLen } from '../src/lib/files';
import { toHex } from '../src/lib/e2e';
// The vectors chat-crypto's tests check too (PROTOCOL.md §5.3.1).
import fixture from '../../chat-crypto/tests/data/file-interop.json';
import { unhex } from './hex';

function pattern(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = i % 251;
  return out;
}

async function reason(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof FileOpenError) return e.reason;
    throw e;
  }
  return 'opened';
}

describe('encrypted files', () => {
  it('seal exactly as chat-crypto does, so each side opens what the other sealed', async () => {
    const key = unhex(fixture.key);
    for (const v of fixture.vectors) {
      const { sealed, digest } = await sealFile(key, pattern(v.plain_len));
      expect(sealed.length).toBe(v.sealed_len);
      expect(toHex(sealed.subarray(0, 16))).toBe(v.sealed_first_16);
      expect(toHex(digest)).toBe(v.sealed_sha256);
      expect(plainLen(sealed.length)).toBe(v.plain_len);
      expect(await openFile(key, sealed, digest)).toEqual(pattern(v.plain_len));
    }
  });

  it('refuse changed, reordered, cut and foreign files', async () => {
    const key = newFileKey();
    const { sealed, digest } = await sealFile(key, pattern(3 * 65536 + 10));
    const flipped = sealed.slice();
    flipped[SEALED_CHUNK + 3] ^= 1;
    const flippedDigest = new Uint8Array(await crypto.subtle.digest('SHA-256', flipped));
    expect(await reason(openFile(key, flipped, digest))).toBe('digest');
    expect(await reason(openFile(key, flipped, flippedDigest))).toBe('chunk');
    const swapped = sealed.slice();
    swapped.set(sealed.subarray(SEALED_CHUNK, 2 * SEALED_CHUNK), 0);
    swapped.set(sealed.subarray(0, SEALED_CHUNK), SEALED_CHUNK);
    const swappedDigest = new Uint8Array(await crypto.subtle.digest('SHA-256', swapped));
    expect(await reason(openFile(key, swapped, swappedDigest))).toBe('chunk');
    const cut = sealed.slice(0, 2 * SEALED_CHUNK);
    const cutDigest = new Uint8Array(await crypto.subtle.digest('SHA-256', cut));
    expect(await reason(openFile(key, cut, cutDigest))).toBe('chunk');
    expect(await reason(openFile(newFileKey(), sealed, digest))).toBe('chunk');
    expect(await reason(openFile(key, sealed.slice(0, 15), digest))).toBe('length');
    expect(sealedLen(0)).toBe(16);
    expect(plainLen(SEALED_CHUNK + 16)).toBeNull();
  });
});
