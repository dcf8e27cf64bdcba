import { describe, expect, it } from 'vitest';
import { type Relation, applyRelation, emptyRelations, fold } from '../src/lib/timeline';

const own = { text: 'hello', unreadable: false, purged: false };

/** A log of relations on message 1 (and a reaction taken back). */
const log: Relation[] = [
  { kind: 'edit', seq: 2, target: 1, content: { text: 'hello all', unreadable: null }, at: 20 },
  { kind: 'reaction', seq: 3, target: 1, user: 2, emoji: '👍' },
  { kind: 'reaction', seq: 4, target: 1, user: 3, emoji: '👍' },
  { kind: 'reaction', seq: 5, target: 1, user: 1, emoji: '🎉' },
  { kind: 'delete', seq: 6, target: 5 },
  { kind: 'edit', seq: 7, target: 1, content: { text: 'hello everyone', unreadable: null }, at: 70 },
  { kind: 'reaction', seq: 8, target: 1, user: 2, emoji: '👍' },
];

function folded(order: number[]) {
  const r = emptyRelations();
  for (const i of order) applyRelation(r, log[i]);
  return fold(r, 1, own, 1);
}

describe('timeline fold', () => {
  it('shows the latest edit, live reactions once per person, and who reacted', () => {
    const f = folded(log.map((_, i) => i));
    expect([f.text, f.edited, f.editedAt, f.deleted]).toEqual(['hello everyone', true, 70, false]);
    expect(f.reactions).toEqual([{ emoji: '👍', users: [2, 3], mine: null }]);
  });

  it('gives the same view whatever order the relations arrive in', () => {
    const expected = folded(log.map((_, i) => i));
    const orders = [
      [6, 5, 4, 3, 2, 1, 0],
      [4, 0, 6, 2, 5, 1, 3],
      [3, 3, 4, 0, 0, 1, 2, 5, 6],
    ];
    for (const order of orders) expect(folded(order)).toEqual(expected);
  });

  it('marks the viewer’s own reaction with the entry to delete', () => {
    const r = emptyRelations();
    applyRelation(r, { kind: 'reaction', seq: 9, target: 1, user: 1, emoji: '❤️' });
    expect(fold(r, 1, own, 1).reactions).toEqual([{ emoji: '❤️', users: [1], mine: 9 }]);
  });

  it('a deleted message is a tombstone, whether the deletion or a purged copy says so', () => {
    const r = emptyRelations();
    for (const rel of log) applyRelation(r, rel);
    applyRelation(r, { kind: 'delete', seq: 10, target: 1 });
    expect(fold(r, 1, own, 1)).toMatchObject({ deleted: true, text: '', reactions: [], edited: false });
    expect(fold(emptyRelations(), 1, { ...own, purged: true }, 1).deleted).toBe(true);
  });
});
