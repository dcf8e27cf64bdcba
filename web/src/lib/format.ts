// How times, days and names are shown.

const DAY_MS = 86400000;

function startOfDay(t: number): number {
  const d = new Date(t);
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}

/** `14:05` in the user's locale. */
export function clock(t: number): string {
  return new Date(t).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
}

/** The label of a day separator: Today, Yesterday, a weekday this week, else a date. */
export function dayLabel(t: number, now = Date.now()): string {
  const days = Math.round((startOfDay(now) - startOfDay(t)) / DAY_MS);
  if (days === 0) return 'Today';
  if (days === 1) return 'Yesterday';
  const d = new Date(t);
  if (days > 1 && days < 7) return d.toLocaleDateString(undefined, { weekday: 'long' });
  const sameYear = d.getFullYear() === new Date(now).getFullYear();
  return d.toLocaleDateString(undefined, {
    day: 'numeric',
    month: 'long',
    year: sameYear ? undefined : 'numeric',
  });
}

/** True when `a` and `b` fall on different days (a separator goes between them). */
export function newDay(a: number, b: number): boolean {
  return startOfDay(a) !== startOfDay(b);
}

/** A short time for the conversation list: the clock today, else the date. */
export function shortTime(t: number, now = Date.now()): string {
  if (!newDay(t, now)) return clock(t);
  const days = Math.round((startOfDay(now) - startOfDay(t)) / DAY_MS);
  if (days < 7) return new Date(t).toLocaleDateString(undefined, { weekday: 'short' });
  return new Date(t).toLocaleDateString(undefined, { day: 'numeric', month: 'short' });
}

/** "last seen 5 minutes ago" style wording. */
export function lastSeen(t: number | null, now = Date.now()): string {
  if (t === null) return 'offline';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return 'last seen just now';
  const m = Math.round(s / 60);
  if (m < 60) return `last seen ${m} minute${m === 1 ? '' : 's'} ago`;
  const h = Math.round(m / 60);
  if (h < 24) return `last seen ${h} hour${h === 1 ? '' : 's'} ago`;
  return `last seen ${dayLabel(t, now).toLowerCase()}`;
}

/** Up to two initials for an avatar. */
export function initials(name: string): string {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  const letters = parts.length > 1 ? [parts[0], parts[parts.length - 1]] : parts;
  return letters
    .map((p) => Array.from(p)[0] ?? '')
    .join('')
    .toUpperCase();
}

/** One of twelve avatar colours (CSS classes `hue-0` … `hue-11`), stable per user. */
export function hue(id: number): number {
  return (id * 7) % 12;
}
