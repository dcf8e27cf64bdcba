// Folding a conversation's relations into the messages they change (PROTOCOL.md §5.2,
// "Folding"): the latest edit's text, deletion, reactions with who gave them. The fold
// does not depend on the order entries arrive in (live, replayed, or from history pages
// loaded newest first), so what a reloaded page shows is what a page that stayed open
// shows. Pure functions over plain data, so the UI's store and the tests share them.

import type { ShownFile } from './attachments';

/** One reaction on a message and who gave it. */
export interface ReactionGroup {
  emoji: string;
  /** Who reacted with it, earliest first. */
  users: number[];
  /** The seq of the viewer's own reaction entry with it (what to delete to take it back). */
  mine: number | null;
}

/** What relations change about a message, as the UI shows it. */
export interface Folded {
  /** The text to show: the latest edit's, else the message's own. */
  text: string;
  /** The text could not be opened (`text` says why). */
  unreadable: boolean;
  edited: boolean;
  editedAt: number | null;
  deleted: boolean;
  reactions: ReactionGroup[];
}

/** An edit's or a reaction's content, opened: `null` when purged or unreadable. */
export interface Opened {
  text: string | null;
  /** Why a sealed content could not be opened, if it could not. */
  unreadable: string | null;
  /** A message's files (protocol 1.4), described and, for sealed ones, with their keys. */
  files?: ShownFile[];
}

/** The relations of one conversation seen so far, whatever their targets. */
export interface Relations {
  /** Per target message: its edits by seq. */
  edits: Record<number, Record<number, { content: Opened; at: number }>>;
  /** Seqs of deleted entries (messages and reactions). */
  deleted: Record<number, true>;
  /** Per reaction entry: its target, author and emoji. */
  reactions: Record<number, { target: number; user: number; emoji: string | null }>;
  /** Per target message: its reaction entries' seqs. */
  reactionsOf: Record<number, number[]>;
}

export function emptyRelations(): Relations {
  return { edits: {}, deleted: {}, reactions: {}, reactionsOf: {} };
}

/** The relation part of an entry, as the store hands it over. */
export type Relation =
  | { kind: 'edit'; seq: number; target: number; content: Opened; at: number }
  | { kind: 'delete'; seq: number; target: number }
  | { kind: 'reaction'; seq: number; target: number; user: number; emoji: string | null };

/**
 * Records a relation; returns the seq of the message whose view it changes (for a
 * deleted reaction, the message it was on), or `null` if none is known yet.
 */
export function applyRelation(r: Relations, rel: Relation): number | null {
  switch (rel.kind) {
    case 'edit': {
      const edits = (r.edits[rel.target] ??= {});
      const known = edits[rel.seq];
      // A purged copy (a deletion happened since) replaces what was known.
      if (!known || rel.content.text === null) edits[rel.seq] = { content: rel.content, at: rel.at };
      return rel.target;
    }
    case 'delete':
      r.deleted[rel.target] = true;
      return r.reactions[rel.target]?.target ?? rel.target;
    case 'reaction': {
      const known = r.reactions[rel.seq];
      if (!known) {
        (r.reactionsOf[rel.target] ??= []).push(rel.seq);
        r.reactionsOf[rel.target].sort((a, b) => a - b);
      }
      if (!known || rel.emoji === null) {
        r.reactions[rel.seq] = { target: rel.target, user: rel.user, emoji: rel.emoji };
      }
      return rel.target;
    }
  }
}

/**
 * The view of the message at `seq` whose own text is `own` (`purged` when a deletion
 * removed it on the server), for viewer `me`.
 */
export function fold(
  r: Relations,
  seq: number,
  own: { text: string; unreadable: boolean; purged: boolean },
  me: number | null,
): Folded {
  const deleted = own.purged || r.deleted[seq] === true;
  if (deleted) {
    return { text: '', unreadable: false, edited: false, editedAt: null, deleted, reactions: [] };
  }
  let text = own.text;
  let unreadable = own.unreadable;
  let edited = false;
  let editedAt: number | null = null;
  const edits = r.edits[seq];
  if (edits) {
    const latest = Math.max(...Object.keys(edits).map(Number));
    const e = edits[latest];
    edited = true;
    editedAt = e.at;
    if (e.content.text !== null) {
      text = e.content.text;
      unreadable = false;
    } else if (e.content.unreadable !== null) {
      text = e.content.unreadable;
      unreadable = true;
    }
  }
  const reactions: ReactionGroup[] = [];
  for (const at of r.reactionsOf[seq] ?? []) {
    const rx = r.reactions[at];
    if (!rx || rx.emoji === null || r.deleted[at]) continue;
    let group = reactions.find((g) => g.emoji === rx.emoji);
    if (!group) {
      group = { emoji: rx.emoji, users: [], mine: null };
      reactions.push(group);
    }
    if (group.users.includes(rx.user)) continue;
    group.users.push(rx.user);
    if (rx.user === me) group.mine = at;
  }
  return { text, unreadable, edited, editedAt, deleted, reactions };
}
