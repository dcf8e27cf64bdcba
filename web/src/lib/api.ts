// The HTTP API (openapi.yaml) as the browser uses it. The access token lives in this
// object's memory only; the refresh token is an HttpOnly cookie the page never sees, so
// a reload resumes the session through `POST /api/refresh` and nothing secret is ever
// written to storage.

import type {
  Conversation,
  ConversationList,
  ConversationSummary,
  Device,
  EntryList,
  SearchPage,
  Session,
  User,
  UserPage,
} from './generated/api';
import { HISTORY_PROTOCOL } from './protocol';

// Every body and shared type comes from the Rust definitions (chat-api), generated
// into ./generated/api.ts.
export type * from './generated/api';

/** A page of history, newest first: messages and relations (PROTOCOL.md §5.2). */
export type HistoryPage = EntryList;

/** An answer of the API other than success: HTTP status, stable code, human message. */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The session is over: the refresh cookie is missing, expired or revoked. */
export class SignedOutError extends Error {
  override name = 'SignedOutError';
}

type Fetch = (input: string, init?: RequestInit) => Promise<Response>;

/** Seconds before expiry at which the access token is renewed ahead of use. */
const RENEW_BEFORE_S = 30;

export class Api {
  private accessToken: string | null = null;
  private expiresAt = 0;
  private refreshing: Promise<Session> | null = null;
  private readonly fetch: Fetch;

  /** Called when the session ends on its own (revoked elsewhere, expired). */
  onSignedOut: (() => void) | null = null;

  constructor(
    private readonly base = '',
    fetchImpl?: Fetch,
  ) {
    this.fetch = fetchImpl ?? ((input, init) => globalThis.fetch(input, init));
  }

  get signedIn(): boolean {
    return this.accessToken !== null;
  }

  private adopt(session: Session): Session {
    this.accessToken = session.access_token;
    this.expiresAt = Date.now() + session.expires_in * 1000;
    return session;
  }

  private async call<T>(method: string, path: string, body?: unknown, token?: string): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (token) headers.authorization = `Bearer ${token}`;
    let response: Response;
    try {
      response = await this.fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch {
      throw new ApiError(0, 'network', 'The server cannot be reached. Check your connection.');
    }
    if (response.status === 204) return undefined as T;
    let json: unknown = null;
    try {
      json = await response.json();
    } catch {
      // Not JSON: handled below.
    }
    if (!response.ok) {
      const err = (json as { error?: { code?: string; message?: string } } | null)?.error;
      throw new ApiError(
        response.status,
        err?.code ?? 'http_error',
        err?.message ?? `The server answered ${response.status}.`,
      );
    }
    return json as T;
  }

  /** Creates an account and signs in; the refresh token goes into the HttpOnly cookie. */
  async register(username: string, password: string, displayName?: string): Promise<Session> {
    const body = { username, password, display_name: displayName || null, cookie: true };
    return this.adopt(await this.call<Session>('POST', '/api/register', body));
  }

  async login(username: string, password: string): Promise<Session> {
    return this.adopt(await this.call<Session>('POST', '/api/login', { username, password, cookie: true }));
  }

  /**
   * A new token pair from the refresh cookie; concurrent callers share one request (a
   * refresh token is single-use: two racing refreshes would revoke the session).
   * Rejects with `SignedOutError` when there is no session to resume.
   */
  refresh(): Promise<Session> {
    this.refreshing ??= this.call<Session>('POST', '/api/refresh', { cookie: true })
      .then((s) => this.adopt(s))
      .catch((e: unknown) => {
        if (e instanceof ApiError && (e.status === 401 || e.status === 400)) {
          this.accessToken = null;
          throw new SignedOutError('Your session has ended. Please sign in again.');
        }
        throw e;
      })
      .finally(() => {
        this.refreshing = null;
      });
    return this.refreshing;
  }

  /** A valid access token, renewed first when it is about to expire or `force` is set. */
  async token(force = false): Promise<string> {
    if (!force && this.accessToken && Date.now() < this.expiresAt - RENEW_BEFORE_S * 1000) {
      return this.accessToken;
    }
    return (await this.refresh()).access_token;
  }

  /** Ends the session on the server and clears the cookie. */
  async logout(): Promise<void> {
    const token = this.accessToken ?? undefined;
    this.accessToken = null;
    await this.call<void>('POST', '/api/logout', {}, token).catch(() => {});
  }

  /** An authenticated call; an expired or revoked access token is renewed once. */
  private async authed<T>(method: string, path: string, body?: unknown): Promise<T> {
    try {
      return await this.call<T>(method, path, body, await this.guard(false));
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        return this.call<T>(method, path, body, await this.guard(true));
      }
      throw e;
    }
  }

  private async guard(force: boolean): Promise<string> {
    try {
      return await this.token(force);
    } catch (e) {
      if (e instanceof SignedOutError) this.onSignedOut?.();
      throw e;
    }
  }

  me(): Promise<User> {
    return this.authed('GET', '/api/me');
  }

  updateMe(changes: { display_name?: string; bio?: string }): Promise<User> {
    return this.authed('PATCH', '/api/me', changes);
  }

  changePassword(oldPassword: string, newPassword: string): Promise<void> {
    return this.authed('PUT', '/api/me/password', {
      old_password: oldPassword,
      new_password: newPassword,
    });
  }

  user(id: number): Promise<User> {
    return this.authed('GET', `/api/users/${id}`);
  }

  async searchUsers(prefix: string, limit = 20): Promise<User[]> {
    const q = new URLSearchParams({ q: prefix, limit: String(limit) });
    const page = await this.authed<UserPage>('GET', `/api/users?${q}`);
    return page.users;
  }

  async conversations(): Promise<ConversationSummary[]> {
    const list = await this.authed<ConversationList>('GET', '/api/conversations');
    return list.conversations;
  }

  conversation(id: number): Promise<Conversation> {
    return this.authed('GET', `/api/conversations/${id}`);
  }

  /** The pair's plain direct conversation, or with `encrypted` its end-to-end encrypted one. */
  createDirect(userId: number, encrypted = false): Promise<Conversation> {
    return this.authed('POST', '/api/conversations', { kind: 'direct', members: [userId], encrypted });
  }

  createGroup(title: string, members: number[], encrypted = false): Promise<Conversation> {
    return this.authed('POST', '/api/conversations', { kind: 'group', title, members, encrypted });
  }

  registerDevice(publicKey: string, name: string): Promise<Device> {
    return this.authed('POST', '/api/devices', { public_key: publicKey, name });
  }

  myDevices(): Promise<Device[]> {
    return this.authed('GET', '/api/devices');
  }

  /** A contact's devices (404 for people who share no conversation with the user). */
  userDevices(userId: number): Promise<Device[]> {
    return this.authed('GET', `/api/users/${userId}/devices`);
  }

  /** Every device of every member: what an encrypted message is sealed for. */
  conversationDevices(conversation: number): Promise<Device[]> {
    return this.authed('GET', `/api/conversations/${conversation}/devices`);
  }

  addMember(conversation: number, userId: number): Promise<Conversation> {
    return this.authed('POST', `/api/conversations/${conversation}/members`, { user_id: userId });
  }

  removeMember(conversation: number, userId: number): Promise<void> {
    return this.authed('DELETE', `/api/conversations/${conversation}/members/${userId}`);
  }

  /** A page of the log, newest first: entries with a seq below `before` (all when null). */
  history(conversation: number, before: number | null, limit: number): Promise<HistoryPage> {
    const q = new URLSearchParams({ limit: String(limit), protocol: HISTORY_PROTOCOL });
    if (before !== null) q.set('before', String(before));
    return this.authed('GET', `/api/conversations/${conversation}/entries?${q}`);
  }

  leave(conversation: number): Promise<void> {
    return this.authed('POST', `/api/conversations/${conversation}/leave`);
  }

  /** Messages of the user's conversations that match `q`, newest first (PROTOCOL.md §5.4). */
  searchMessages(q: string, before: string | null, limit = 20): Promise<SearchPage> {
    const params = new URLSearchParams({ q, limit: String(limit) });
    if (before !== null) params.set('before', before);
    return this.authed('GET', `/api/search?${params}`);
  }

  /** A file's bytes (`GET /api/files/{id}`); an expired token is renewed once. */
  async file(id: string): Promise<Blob> {
    let retried = false;
    for (;;) {
      let response: Response;
      try {
        response = await this.fetch(`${this.base}/api/files/${encodeURIComponent(id)}`, {
          headers: { authorization: `Bearer ${await this.guard(retried)}` },
          credentials: 'same-origin',
        });
      } catch {
        throw new ApiError(0, 'network', 'The server cannot be reached. Check your connection.');
      }
      if (response.status === 401 && !retried) {
        retried = true;
        continue;
      }
      if (!response.ok) {
        throw new ApiError(
          response.status,
          response.status === 404 ? 'not_found' : 'http_error',
          response.status === 404 ? 'This file is gone.' : `The server answered ${response.status}.`,
        );
      }
      return response.blob();
    }
  }
}

