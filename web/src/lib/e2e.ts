// End-to-end encryption in the browser, byte for byte what chat-crypto does (see
// SECURITY.md): X25519 device keys, a fresh AES-256-GCM content key per message, wrapped
// for every recipient device with HPKE (RFC 9180 base mode, DHKEM(X25519, HKDF-SHA256),
// HKDF-SHA256, AES-256-GCM). Everything runs on WebCrypto; HPKE's key schedule is the
// @hpke/core package. The private key is a non-extractable CryptoKey kept in IndexedDB:
// page scripts can use it but never read it.

import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from '@hpke/core';

export const ENVELOPE_VERSION = 1;
export const MAX_RECIPIENTS = 400;
const DEVICE_ID_LEN = 16;
const HEADER_LEN = 1 + DEVICE_ID_LEN + 2;
const ENC_LEN = 32;
const WRAPPED_LEN = 32 + 16;
const ENTRY_LEN = DEVICE_ID_LEN + ENC_LEN + WRAPPED_LEN;
const TAG_LEN = 16;
const utf8 = new TextEncoder();
const WRAP_INFO = utf8.encode('chat/1 e2e content key');
const DEVICE_HASH_LABEL = utf8.encode('chat/1 device key\0');
const MESSAGE_AAD_LABEL = utf8.encode('chat/1 message\0');
const ZERO_IV = new Uint8Array(12);

const suite = new CipherSuite({
  kem: new DhkemX25519HkdfSha256(),
  kdf: new HkdfSha256(),
  aead: new Aes256Gcm(),
});

/** Why an envelope did not open (the same cases as chat-crypto's `OpenError`). */
export class OpenError extends Error {
  override name = 'OpenError';
  constructor(readonly reason: 'malformed' | 'not_a_recipient' | 'rejected' | 'no_device_key') {
    super(
      {
        malformed: 'malformed envelope',
        not_a_recipient: 'not sealed for this device',
        rejected: 'the envelope failed authentication',
        no_device_key: 'this browser has no device key',
      }[reason],
    );
  }
}

/** What an encrypted message looks like to the UI when it cannot be opened. */
export function unreadableText(reason: OpenError['reason']): string {
  return reason === 'not_a_recipient'
    ? 'Encrypted before this device was added'
    : reason === 'no_device_key'
      ? 'Encrypted message (this browser cannot decrypt)'
      : 'Encrypted message that failed verification';
}

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export function toBase64(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

export function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** A device's public key with the id and fingerprint derived from it. */
export interface PublicDevice {
  key: Uint8Array;
  /** 16 bytes: the first half of SHA-256("chat/1 device key" NUL ‖ key). */
  id: Uint8Array;
  idHex: string;
  /** Eight groups of five digits, as every client shows them. */
  fingerprint: string;
}

export async function describeKey(key: Uint8Array): Promise<PublicDevice> {
  if (key.length !== 32) throw new OpenError('malformed');
  const hash = new Uint8Array(await crypto.subtle.digest('SHA-256', concat(DEVICE_HASH_LABEL, key)));
  const id = hash.slice(0, DEVICE_ID_LEN);
  const view = new DataView(hash.buffer);
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(String(view.getUint32(i * 4) % 100000).padStart(5, '0'));
  return { key, id, idHex: toHex(id), fingerprint: groups.join(' ') };
}

/**
 * The associated data of a chat message: conversation, the sender the server
 * authenticated, and the client message id (a UUID string).
 */
export function messageAad(conversation: number, sender: number, clientMsgId: string): Uint8Array {
  const out = new Uint8Array(MESSAGE_AAD_LABEL.length + 16 + 16);
  out.set(MESSAGE_AAD_LABEL);
  const view = new DataView(out.buffer);
  view.setBigUint64(MESSAGE_AAD_LABEL.length, BigInt(conversation));
  view.setBigUint64(MESSAGE_AAD_LABEL.length + 8, BigInt(sender));
  const hex = clientMsgId.replace(/-/g, '');
  if (!/^[0-9a-f]{32}$/.test(hex)) throw new Error('a client message id is a UUID');
  for (let i = 0; i < 16; i++) out[MESSAGE_AAD_LABEL.length + 16 + i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

function context(aad: Uint8Array): Uint8Array {
  return concat(u32(aad.length), aad);
}

/** This browser's device: its key pair (private half non-extractable) and public identity. */
export class DeviceKey {
  private constructor(
    readonly pair: CryptoKeyPair,
    readonly device: PublicDevice,
  ) {}

  static async generate(): Promise<DeviceKey> {
    const pair = (await crypto.subtle.generateKey({ name: 'X25519' }, false, ['deriveBits'])) as CryptoKeyPair;
    return DeviceKey.from(pair);
  }

  static async from(pair: CryptoKeyPair): Promise<DeviceKey> {
    const raw = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
    return new DeviceKey(pair, await describeKey(raw));
  }

  /** Seals `body` for `recipients` (public keys; duplicates sealed for once) under `aad`. */
  async seal(body: Uint8Array, recipients: Uint8Array[], aad: Uint8Array): Promise<Uint8Array> {
    const byId = new Map<string, PublicDevice>();
    for (const key of recipients) {
      const d = await describeKey(key);
      byId.set(d.idHex, d);
    }
    const devices = [...byId.values()].sort((a, b) => (a.idHex < b.idHex ? -1 : a.idHex > b.idHex ? 1 : 0));
    if (devices.length === 0) throw new Error('a sealed message needs at least one recipient device');
    if (devices.length > MAX_RECIPIENTS) throw new Error(`too many recipient devices (at most ${MAX_RECIPIENTS})`);

    const contentKey = crypto.getRandomValues(new Uint8Array(32));
    const ctx = context(aad);
    const start = new Uint8Array(HEADER_LEN);
    start[0] = ENVELOPE_VERSION;
    start.set(this.device.id, 1);
    new DataView(start.buffer).setUint16(1 + DEVICE_ID_LEN, devices.length);
    const wrapAad = concat(ctx, start.subarray(0, 1 + DEVICE_ID_LEN));
    const entries: Uint8Array[] = [];
    for (const d of devices) {
      const recipientPublicKey = await suite.kem.deserializePublicKey(d.key);
      const { ct, enc } = await suite.seal({ recipientPublicKey, info: WRAP_INFO }, contentKey, wrapAad);
      entries.push(concat(d.id, new Uint8Array(enc), new Uint8Array(ct)));
    }
    const header = concat(start, ...entries);
    const key = await crypto.subtle.importKey('raw', contentKey, 'AES-GCM', false, ['encrypt']);
    contentKey.fill(0);
    const sealed = await crypto.subtle.encrypt(
      { name: 'AES-GCM', iv: ZERO_IV, additionalData: concat(ctx, header) },
      key,
      body.slice(),
    );
    return concat(header, new Uint8Array(sealed));
  }

  /** Opens an envelope sealed for this device under `aad`. */
  async open(envelope: Uint8Array, aad: Uint8Array): Promise<{ body: Uint8Array; senderDevice: string }> {
    const header = parseHeader(envelope);
    const index = header.recipients.indexOf(this.device.idHex);
    if (index < 0) throw new OpenError('not_a_recipient');
    const entry = envelope.subarray(HEADER_LEN + index * ENTRY_LEN, HEADER_LEN + (index + 1) * ENTRY_LEN);
    const ctx = context(aad);
    const wrapAad = concat(ctx, envelope.subarray(0, 1 + DEVICE_ID_LEN));
    let contentKey: Uint8Array<ArrayBuffer>;
    try {
      contentKey = new Uint8Array(
        await suite.open(
          {
            recipientKey: this.pair,
            enc: entry.slice(DEVICE_ID_LEN, DEVICE_ID_LEN + ENC_LEN),
            info: WRAP_INFO,
          },
          entry.slice(DEVICE_ID_LEN + ENC_LEN),
          wrapAad,
        ),
      );
    } catch {
      throw new OpenError('rejected');
    }
    const headerLen = HEADER_LEN + header.recipients.length * ENTRY_LEN;
    try {
      const key = await crypto.subtle.importKey('raw', contentKey, 'AES-GCM', false, ['decrypt']);
      const body = await crypto.subtle.decrypt(
        { name: 'AES-GCM', iv: ZERO_IV, additionalData: concat(ctx, envelope.subarray(0, headerLen)) },
        key,
        envelope.slice(headerLen),
      );
      return { body: new Uint8Array(body), senderDevice: header.senderDevice };
    } catch {
      throw new OpenError('rejected');
    } finally {
      contentKey.fill(0);
    }
  }
}

/** The public part of an envelope: the sealing device and the recipient device ids (hex). */
export function parseHeader(envelope: Uint8Array): { senderDevice: string; recipients: string[] } {
  if (envelope.length < HEADER_LEN || envelope[0] !== ENVELOPE_VERSION) throw new OpenError('malformed');
  const count = new DataView(envelope.buffer, envelope.byteOffset).getUint16(1 + DEVICE_ID_LEN);
  if (count === 0 || count > MAX_RECIPIENTS || envelope.length < HEADER_LEN + count * ENTRY_LEN + TAG_LEN) {
    throw new OpenError('malformed');
  }
  const recipients: string[] = [];
  for (let i = 0; i < count; i++) {
    const at = HEADER_LEN + i * ENTRY_LEN;
    recipients.push(toHex(envelope.subarray(at, at + DEVICE_ID_LEN)));
  }
  return { senderDevice: toHex(envelope.subarray(1, 1 + DEVICE_ID_LEN)), recipients };
}

/** Whether this browser's WebCrypto has X25519 (the device key's curve). */
export async function supported(): Promise<boolean> {
  try {
    await crypto.subtle.generateKey({ name: 'X25519' }, false, ['deriveBits']);
    return true;
  } catch {
    return false;
  }
}

/** Where device keys live between visits: one key pair per account on this browser. */
export interface KeyStore {
  load(user: number): Promise<CryptoKeyPair | null>;
  save(user: number, pair: CryptoKeyPair): Promise<void>;
}

/** Device keys in IndexedDB; CryptoKeys are stored as they are, non-extractable. */
export class IndexedDbKeyStore implements KeyStore {
  private db: Promise<IDBDatabase> | null = null;

  private open(): Promise<IDBDatabase> {
    this.db ??= new Promise((resolve, reject) => {
      const req = indexedDB.open('chat-e2e', 1);
      req.onupgradeneeded = () => req.result.createObjectStore('device-keys');
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error ?? new Error('IndexedDB is unavailable'));
    });
    return this.db;
  }

  private async run<T>(mode: IDBTransactionMode, act: (store: IDBObjectStore) => IDBRequest): Promise<T> {
    const db = await this.open();
    return new Promise<T>((resolve, reject) => {
      const tx = db.transaction('device-keys', mode);
      const req = act(tx.objectStore('device-keys'));
      tx.oncomplete = () => resolve(req.result as T);
      tx.onerror = () => reject(tx.error ?? new Error('IndexedDB transaction failed'));
    });
  }

  async load(user: number): Promise<CryptoKeyPair | null> {
    const pair = await this.run<CryptoKeyPair | undefined>('readonly', (s) => s.get(`user:${user}`));
    return pair ?? null;
  }

  async save(user: number, pair: CryptoKeyPair): Promise<void> {
    await this.run('readwrite', (s) => s.put(pair, `user:${user}`));
  }
}

/** This browser's device key for `user`: loaded, or created and saved on first use. */
export async function deviceKeyFor(user: number, store: KeyStore): Promise<DeviceKey> {
  const saved = await store.load(user);
  if (saved) return DeviceKey.from(saved);
  const fresh = await DeviceKey.generate();
  await store.save(user, fresh.pair);
  return fresh;
}
