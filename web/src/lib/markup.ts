// The text people expect, safely: a message's text parsed into a small tree of blocks
// (paragraphs, quotes, code blocks) and inline spans (bold, italic, inline code, links)
// that components render as elements. Nothing here ever becomes HTML: a `<b>` typed in
// a message stays text, and only http(s) URLs become links.

export type Inline =
  | { kind: 'text'; text: string }
  | { kind: 'code'; text: string }
  | { kind: 'bold'; children: Inline[] }
  | { kind: 'italic'; children: Inline[] }
  | { kind: 'link'; href: string; text: string };

export type Block =
  | { kind: 'paragraph'; inlines: Inline[] }
  | { kind: 'quote'; inlines: Inline[] }
  | { kind: 'code'; text: string };

/** A URL a link may point to: http or https only, whatever the text claims. */
export function safeHref(raw: string): string | null {
  try {
    const url = new URL(raw);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}

const URL_RE = /\bhttps?:\/\/[^\s<>"']+/g;

/** Plain text with its URLs as links; punctuation that ends a sentence stays text. */
function links(text: string): Inline[] {
  const out: Inline[] = [];
  let at = 0;
  for (const match of text.matchAll(URL_RE)) {
    let url = match[0];
    // "see https://example.org/a." — the period ends the sentence, not the URL; a
    // closing parenthesis belongs to the URL only if it opened one.
    while (/[.,;:!?]$/.test(url) || (url.endsWith(')') && !url.includes('('))) url = url.slice(0, -1);
    const href = safeHref(url);
    const start = match.index ?? 0;
    if (!href) continue;
    if (start > at) out.push({ kind: 'text', text: text.slice(at, start) });
    out.push({ kind: 'link', href, text: url });
    at = start + url.length;
  }
  if (at < text.length) out.push({ kind: 'text', text: text.slice(at) });
  return out;
}

/** Finds the closing `marker` for an opening at `from`, on the same text, not empty. */
function closing(text: string, marker: string, from: number): number {
  const end = text.indexOf(marker, from);
  return end > from ? end : -1;
}

/** Inline spans: `code`, **bold**, *italic* or _italic_, and links in the rest. */
export function inlines(text: string, depth = 0): Inline[] {
  const out: Inline[] = [];
  let plain = '';
  const flush = () => {
    if (plain) out.push(...links(plain));
    plain = '';
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '`') {
      const end = closing(text, '`', i + 1);
      if (end > 0) {
        flush();
        out.push({ kind: 'code', text: text.slice(i + 1, end) });
        i = end + 1;
        continue;
      }
    }
    if (depth < 4 && text.startsWith('**', i)) {
      const end = closing(text, '**', i + 2);
      if (end > 0 && text[i + 2] !== ' ') {
        flush();
        out.push({ kind: 'bold', children: inlines(text.slice(i + 2, end), depth + 1) });
        i = end + 2;
        continue;
      }
    }
    if (depth < 4 && (c === '*' || c === '_') && text[i + 1] !== c && text[i + 1] !== ' ') {
      // `_` only at a word boundary, so snake_case_names stay as they are.
      const before = i === 0 ? ' ' : text[i - 1];
      const end = closing(text, c, i + 1);
      const after = end > 0 && end + 1 < text.length ? text[end + 1] : ' ';
      if (end > 0 && (c === '*' || (/\W/.test(before) && /\W/.test(after))) && text[end - 1] !== ' ') {
        flush();
        out.push({ kind: 'italic', children: inlines(text.slice(i + 1, end), depth + 1) });
        i = end + 1;
        continue;
      }
    }
    plain += c;
    i += 1;
  }
  flush();
  return out;
}

/** The blocks of a message: fenced code blocks, `>` quotes, and paragraphs. */
export function blocks(text: string): Block[] {
  const out: Block[] = [];
  const lines = text.split('\n');
  let para: string[] = [];
  let quote: string[] = [];
  const flushPara = () => {
    if (para.length) out.push({ kind: 'paragraph', inlines: inlines(para.join('\n')) });
    para = [];
  };
  const flushQuote = () => {
    if (quote.length) out.push({ kind: 'quote', inlines: inlines(quote.join('\n')) });
    quote = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.trimStart().startsWith('```')) {
      const end = lines.findIndex((l, j) => j > i && l.trim() === '```');
      if (end > i) {
        flushPara();
        flushQuote();
        out.push({ kind: 'code', text: lines.slice(i + 1, end).join('\n') });
        i = end;
        continue;
      }
    }
    if (line.startsWith('>')) {
      flushPara();
      quote.push(line.replace(/^> ?/, ''));
      continue;
    }
    flushQuote();
    para.push(line);
  }
  flushPara();
  flushQuote();
  return out;
}

/** Whether a text is long enough to fold behind "Show more". */
export function isLong(text: string): boolean {
  return text.length > 700 || text.split('\n').length > 14;
}

/** The text of inline spans without their markup. */
function flat(list: Inline[]): string {
  return list
    .map((span) => (span.kind === 'bold' || span.kind === 'italic' ? flat(span.children) : span.text))
    .join('');
}

/**
 * A message's text without its markup, on one line: for quotes, previews and the
 * conversation list.
 */
export function plainText(text: string): string {
  return blocks(text)
    .map((b) => (b.kind === 'code' ? b.text : flat(b.inlines)))
    .join(' ')
    .replace(/\s+/g, ' ')
    .trim();
}
