// Searching messages by the rules of PROTOCOL.md §5.4, exactly as chat_api::search in
// Rust applies them (both check chat-api/tests/data/search-vectors.json): the server
// searches conversations it can read; this searches what the browser decrypted, so
// results from encrypted conversations match the same way.

import type { SnippetPart } from './generated/api';

/** The longest query, in UTF-8 bytes, and the most terms. */
export const MAX_QUERY = 256;
export const MAX_TERMS = 16;

/** One term: words next to each other in order, the last a prefix. */
export interface Term {
  words: string[];
  negated: boolean;
  /** The words as typed (lowercased), for marking matches. */
  needles: string[];
}

export type QueryError = 'empty' | 'too_long';

const WHITE = /^\p{White_Space}$/u;
const ALNUM = /^[\p{Alphabetic}\p{N}]$/u;

function unspaced(c: string): boolean {
  const n = c.codePointAt(0) ?? 0;
  return (
    (n >= 0x3040 && n <= 0x30ff) ||
    (n >= 0x31f0 && n <= 0x31ff) ||
    (n >= 0x3400 && n <= 0x4dbf) ||
    (n >= 0x4e00 && n <= 0x9fff) ||
    (n >= 0xac00 && n <= 0xd7af) ||
    (n >= 0xf900 && n <= 0xfaff) ||
    (n >= 0x20000 && n <= 0x2fa1f)
  );
}

const MARKS: [number, number][] = [
  [0x0300, 0x036f], [0x0483, 0x0489], [0x0591, 0x05c7], [0x0610, 0x061a], [0x064b, 0x065f],
  [0x0900, 0x0903], [0x093a, 0x094f], [0x0951, 0x0957], [0x0962, 0x0963], [0x0981, 0x0983],
  [0x09bc, 0x09d7], [0x0e31, 0x0e3a], [0x0e47, 0x0e4e], [0x1ab0, 0x1aff], [0x1dc0, 0x1dff],
  [0x20d0, 0x20ff], [0xfe20, 0xfe2f],
];

function wordChar(c: string): boolean {
  if (ALNUM.test(c)) return true;
  const n = c.codePointAt(0) ?? 0;
  return MARKS.some(([a, b]) => n >= a && n <= b);
}

/** Runs of word characters, lowercased, split where a script without spaces starts or ends. */
function runs(text: string): [string, boolean][] {
  const out: [string, boolean][] = [];
  let current = '';
  let currentUnspaced = false;
  for (const c of text) {
    if (!wordChar(c)) {
      if (current) out.push([current, currentUnspaced]);
      current = '';
      continue;
    }
    const u = unspaced(c);
    if (current && u !== currentUnspaced) {
      out.push([current, currentUnspaced]);
      current = '';
    }
    currentUnspaced = u;
    current += c.toLowerCase();
  }
  if (current) out.push([current, currentUnspaced]);
  return out;
}

function pairs(run: string, lastAlone: boolean): string[] {
  const chars = [...run];
  const out: string[] = [];
  for (let i = 0; i + 1 < chars.length; i++) out.push(chars[i] + chars[i + 1]);
  if (lastAlone || chars.length === 1) out.push(chars[chars.length - 1]);
  return out;
}

/** The index words of a text, in order. */
export function tokens(text: string): string[] {
  const out: string[] = [];
  for (const [run, isUnspaced] of runs(text)) {
    if (isUnspaced) out.push(...pairs(run, true));
    else out.push(run);
  }
  return out;
}

function trimStart(s: string): string {
  const chars = [...s];
  let i = 0;
  while (i < chars.length && WHITE.test(chars[i])) i++;
  return chars.slice(i).join('');
}

export class Query {
  private constructor(readonly terms: Term[]) {}

  /** Parses a query typed by a person; an error says why it cannot be used. */
  static parse(q: string): Query | QueryError {
    if (new TextEncoder().encode(q).length > MAX_QUERY) return 'too_long';
    const terms: Term[] = [];
    let rest = trimStart(q);
    while (rest !== '') {
      const negated = rest.startsWith('-');
      if (negated) rest = rest.slice(1);
      let raw: string;
      if (rest.startsWith('"')) {
        const quoted = rest.slice(1);
        const end = quoted.indexOf('"');
        raw = end < 0 ? quoted : quoted.slice(0, end);
        rest = end < 0 ? '' : quoted.slice(end + 1);
      } else {
        const chars = [...rest];
        let end = chars.findIndex((c) => WHITE.test(c));
        if (end < 0) end = chars.length;
        raw = chars.slice(0, end).join('');
        rest = chars.slice(end).join('');
      }
      rest = trimStart(rest);
      const found = runs(raw);
      if (found.length === 0) continue;
      const words: string[] = [];
      for (const [run, isUnspaced] of found) {
        if (isUnspaced) words.push(...pairs(run, false));
        else words.push(run);
      }
      terms.push({ words, negated, needles: found.map(([r]) => r) });
    }
    if (terms.length > MAX_TERMS) return 'too_long';
    if (terms.every((t) => t.negated)) return 'empty';
    return new Query(terms);
  }

  /** Whether `text` matches. */
  matches(text: string): boolean {
    const doc = tokens(text);
    return this.terms.every((t) => (phraseAt(doc, t.words) !== null) !== t.negated);
  }
}

function phraseAt(doc: string[], words: string[]): number | null {
  if (words.length === 0) return null;
  const last = words[words.length - 1];
  const init = words.slice(0, -1);
  for (let i = 0; i < doc.length; i++) {
    if (doc.length < i + words.length) continue;
    if (init.every((w, k) => doc[i + k] === w) && doc[i + init.length].startsWith(last)) return i;
  }
  return null;
}

/** The part of `text` around the first match, about `width` characters, matches marked. */
export function snippet(text: string, query: Query, width: number): SnippetPart[] {
  const chars = [...text];
  const lower = chars.map((c) => [...c.toLowerCase()][0] ?? c);
  const marks: [number, number][] = [];
  for (const term of query.terms.filter((t) => !t.negated)) {
    for (const needle of term.needles) {
      const n = [...needle];
      if (n.length === 0) continue;
      const startsWord = !n.every(unspaced);
      let i = 0;
      while (i + n.length <= lower.length) {
        const atWordStart = !startsWord || i === 0 || !wordChar(lower[i - 1]);
        if (atWordStart && n.every((c, k) => lower[i + k] === c)) {
          marks.push([i, i + n.length]);
          i += n.length;
        } else {
          i += 1;
        }
      }
    }
  }
  marks.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  const merged: [number, number][] = [];
  for (const [a, b] of marks) {
    const last = merged[merged.length - 1];
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else merged.push([a, b]);
  }
  const first = merged[0]?.[0] ?? 0;
  let start = Math.max(0, first - Math.floor(width / 3));
  if (start > 0) {
    let back = start;
    for (let p = start - 1; p >= 0; p--) {
      if (WHITE.test(chars[p])) {
        back = p + 1;
        break;
      }
    }
    if (start - back < 15) start = back;
  }
  const end = Math.min(start + width, chars.length);
  const parts: SnippetPart[] = [];
  const push = (t: string, matched: boolean) => {
    if (t !== '') parts.push({ text: t, matched });
  };
  let at = start;
  let lead = start > 0 ? '…' : '';
  for (const [a0, b0] of merged.filter((m) => m[1] > start && m[0] < end)) {
    const a = Math.max(a0, start);
    const b = Math.min(b0, end);
    lead += chars.slice(at, a).join('');
    push(lead, false);
    lead = '';
    push(chars.slice(a, b).join(''), true);
    at = b;
  }
  lead += chars.slice(at, end).join('');
  if (end < chars.length) lead += '…';
  push(lead, false);
  return parts;
}
