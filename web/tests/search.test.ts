import { describe, expect, it } from 'vitest';
import vectors from '../../chat-api/tests/data/search-vectors.json';
import { Query, snippet, tokens } from '../src/lib/search';

// The browser searches what it decrypted by the same rules as the server's index:
// chat_api::search made these vectors.
describe('search rules shared with the server', () => {
  it('splits texts into the same index words', () => {
    for (const d of vectors.documents) expect(tokens(d.text), d.text).toEqual(d.tokens);
  });

  it('matches and marks snippets as chat_api::search does', () => {
    for (const c of vectors.cases) {
      const q = Query.parse(c.query);
      if (typeof q === 'string') throw new Error(`${c.query}: ${q}`);
      expect(q.matches(c.text), `${c.query} in ${c.text}`).toBe(c.matches);
      const parts = snippet(c.text, q, 40).map((p) => [p.text, p.matched]);
      expect(parts, `${c.query} in ${c.text}`).toEqual(c.snippet);
    }
  });

  it('says why a query cannot be used', () => {
    expect(Query.parse('')).toBe('empty');
    expect(Query.parse(' ?! -x')).toBe('empty');
    expect(Query.parse('a'.repeat(257))).toBe('too_long');
    expect(Query.parse('w '.repeat(17))).toBe('too_long');
  });
});
