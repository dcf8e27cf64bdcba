import { describe, expect, it } from 'vitest';
import { blocks, inlines, isLong, plainText, safeHref } from '../src/lib/markup';

describe('markup', () => {
  it('turns http(s) URLs into links and leaves sentence punctuation out', () => {
    expect(inlines('see https://example.org/a?b=1. ok')).toEqual([
      { kind: 'text', text: 'see ' },
      { kind: 'link', href: 'https://example.org/a?b=1', text: 'https://example.org/a?b=1' },
      { kind: 'text', text: '. ok' },
    ]);
    expect(inlines('(at http://example.org)')).toEqual([
      { kind: 'text', text: '(at ' },
      { kind: 'link', href: 'http://example.org/', text: 'http://example.org' },
      { kind: 'text', text: ')' },
    ]);
  });

  it('never links other schemes', () => {
    for (const raw of ['javascript:alert(1)', 'data:text/html,x', 'file:///etc/passwd', 'ftp://x']) {
      expect(safeHref(raw)).toBeNull();
      expect(inlines(raw).every((s) => s.kind !== 'link')).toBe(true);
    }
  });

  it('reads bold, italic and inline code, and keeps snake_case and markup text as text', () => {
    expect(inlines('**bold** and *it* and `x *y*`')).toEqual([
      { kind: 'bold', children: [{ kind: 'text', text: 'bold' }] },
      { kind: 'text', text: ' and ' },
      { kind: 'italic', children: [{ kind: 'text', text: 'it' }] },
      { kind: 'text', text: ' and ' },
      { kind: 'code', text: 'x *y*' },
    ]);
    expect(inlines('a snake_case_name')).toEqual([{ kind: 'text', text: 'a snake_case_name' }]);
    expect(inlines('<b>not bold</b> & <script>')).toEqual([{ kind: 'text', text: '<b>not bold</b> & <script>' }]);
    expect(inlines('2 * 3 * 4')).toEqual([{ kind: 'text', text: '2 * 3 * 4' }]);
  });

  it('splits quotes, fenced code blocks and paragraphs', () => {
    expect(blocks('> quoted\n> more\nplain\n```\ncode **not bold**\n```\nend')).toEqual([
      { kind: 'quote', inlines: [{ kind: 'text', text: 'quoted\nmore' }] },
      { kind: 'paragraph', inlines: [{ kind: 'text', text: 'plain' }] },
      { kind: 'code', text: 'code **not bold**' },
      { kind: 'paragraph', inlines: [{ kind: 'text', text: 'end' }] },
    ]);
    // An unclosed fence is text.
    expect(blocks('```\nno end')).toEqual([{ kind: 'paragraph', inlines: [{ kind: 'text', text: '```\nno end' }] }]);
  });

  it('folds long messages', () => {
    expect(isLong('short')).toBe(false);
    expect(isLong('x'.repeat(701))).toBe(true);
    expect(isLong('line\n'.repeat(15))).toBe(true);
  });
  it('gives the plain text of a message for quotes and previews', () => {
    expect(plainText('Lunch at **noon**? See `code` and _this_.\n> quoted\n```\nx = 1\n```')).toBe(
      'Lunch at noon? See code and this. quoted x = 1',
    );
  });
});
