// A scripted stand-in for the browser's WebSocket: tests play the server.

import type { SocketLike } from '../src/lib/connection';
import { DEFAULT_LIMITS } from '../src/lib/protocol';

export class FakeSocket implements SocketLike {
  readyState = 0;
  sent: Record<string, Record<string, unknown>>[] = [];
  closed: { code?: number; reason?: string } | null = null;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;

  constructor(
    readonly url: string,
    readonly protocol: string,
  ) {}

  send(data: string): void {
    if (this.readyState !== 1) throw new Error('not open');
    this.sent.push(JSON.parse(data));
  }

  close(code?: number, reason?: string): void {
    this.readyState = 3;
    this.closed = { code, reason };
  }

  /** The transport opened (the client then sends `hello`). */
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  /** A frame from the server. */
  receive(frame: unknown): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  /** The server or network dropped the connection. */
  drop(code = 1006): void {
    this.readyState = 3;
    this.onclose?.({ code, reason: '' });
  }

  /** Frames of one kind the client sent, by their fields. */
  sentOf(kind: string): Record<string, unknown>[] {
    return this.sent.filter((f) => kind in f).map((f) => f[kind]);
  }
}

/** A socket factory that keeps every socket it made. */
export function sockets(): { made: FakeSocket[]; create: (url: string, protocol: string) => FakeSocket } {
  const made: FakeSocket[] = [];
  return {
    made,
    create: (url, protocol) => {
      const s = new FakeSocket(url, protocol);
      made.push(s);
      return s;
    },
  };
}

export function welcome(
  user: number,
  heads: [number, number][] = [],
  limits: Partial<typeof DEFAULT_LIMITS> = {},
  minor = 3,
) {
  return {
    welcome: {
      version: { major: 1, minor },
      user,
      server_time: Date.now(),
      limits: { ...DEFAULT_LIMITS, ...limits },
      heads: heads.map(([conversation, seq]) => ({ conversation, seq })),
    },
  };
}

let nextId = 1000;

export function message(conversation: number, seq: number, sender = 2, text = `m${seq}`, key?: string) {
  return {
    conversation,
    seq,
    id: nextId++,
    sender,
    client_msg_id: key ?? `00000000-0000-4000-8000-${String(conversation).padStart(4, '0')}${String(seq).padStart(8, '0')}`,
    sent_at: 1795795200000 + seq,
    body: { text },
  };
}

/** An entry of the log (protocol 1.3) with the content given. */
export function entry(conversation: number, seq: number, content: Record<string, unknown>, sender = 2) {
  const { body: _body, ...rest } = message(conversation, seq, sender);
  return { ...rest, content };
}
