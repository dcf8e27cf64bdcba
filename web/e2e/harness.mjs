// Test harness for the end-to-end tests: a real chat-server on a temporary database
// serving the built UI, and Debian's Chromium driven by playwright-core.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const webRoot = resolve(here, '..');
export const repoRoot = resolve(webRoot, '..');
export const artifacts = join(webRoot, 'e2e-artifacts');

/** A workspace binary: `$ENV`, else the debug build of `name` from `pkg`. */
function binary(name, pkg, env) {
  const bin = process.env[env] ?? join(repoRoot, 'target', 'debug', name);
  if (!existsSync(bin)) {
    throw new Error(`${bin} does not exist: run \`cargo build -p ${pkg} --bin ${name}\` first`);
  }
  return bin;
}

const serverBin = () => binary('chat-server', 'chat-server', 'CHAT_SERVER_BIN');

/**
 * Starts the Rust SDK's echo bot as a new account with an end-to-end encryption device
 * key; resolves once it is connected. `stop()` ends it.
 */
export async function startEchoBot(server, name, keyFile) {
  const child = spawn(
    binary('echo_bot', 'chat-examples', 'ECHO_BOT_BIN'),
    ['--url', server.url.replace(/^http/, 'ws'), '--username', name, '--register', '--device-key', keyFile],
    { env: { ...process.env, ECHO_BOT_PASSWORD: 'correct horse battery', RUST_LOG: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stderr.on('data', (chunk) => (output += chunk));
  await new Promise((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`echo_bot did not start:\n${output}`)), 30000);
    child.stdout.on('data', (chunk) => {
      output += chunk;
      if (/echo_bot ready/.test(output)) {
        clearTimeout(timer);
        resolveReady();
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`echo_bot exited with ${code}:\n${output}`));
    });
  });
  return {
    output: () => output,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * Starts chat-server with its data in a fresh temporary directory and the UI from
 * web/dist. `restart()` stops it and starts it again on the same port and data.
 */
export async function startServer() {
  const dataDir = mkdtempSync(join(tmpdir(), 'chat-e2e-'));
  const server = { dataDir, child: null, url: null, port: 0, log: [] };

  async function boot(port) {
    const child = spawn(
      serverBin(),
      [
        '--http-addr', `127.0.0.1:${port}`,
        '--quic-addr', '127.0.0.1:0',
        '--data-dir', dataDir,
        '--web-dir', join(webRoot, 'dist'),
        // Every test user signs up from 127.0.0.1.
        '--send-rate', '50',
      ],
      { env: { ...process.env, RUST_LOG: 'warn' }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    server.child = child;
    const address = await new Promise((resolveAddr, reject) => {
      let text = '';
      const timer = setTimeout(() => reject(new Error(`chat-server did not start:\n${text}`)), 30000);
      child.stderr.on('data', (chunk) => {
        text += chunk;
        server.log.push(String(chunk));
        const m = /HTTP API and WebSocket: http:\/\/([0-9.]+:\d+)\/api/.exec(text);
        if (m) {
          clearTimeout(timer);
          resolveAddr(m[1]);
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`chat-server exited with ${code}:\n${text}`));
      });
    });
    server.url = `http://${address}`;
    server.port = Number(address.split(':')[1]);
  }

  async function stop() {
    const child = server.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  }

  await boot(0);
  return {
    get url() {
      return server.url;
    },
    dataDir,
    log: () => server.log.join(''),
    async restart(downtimeMs = 0) {
      await stop();
      if (downtimeMs) await new Promise((r) => setTimeout(r, downtimeMs));
      await boot(server.port);
    },
    stop,
    async close() {
      await stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Headless Debian Chromium; never a downloaded browser. */
export async function launchBrowser() {
  const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
  if (!existsSync(executablePath)) {
    throw new Error(`${executablePath} is missing: apt-get install -y chromium`);
  }
  mkdirSync(artifacts, { recursive: true });
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-dev-shm-usage',
    ],
  });
}

/** A unique username for this run. */
export function username(base) {
  return `${base}_${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`.slice(0, 32);
}

/**
 * A person with their own browser context (own cookies), signed up through the UI.
 * Console errors and failed CSP checks are collected so a test can assert there are none.
 */
export async function person(browser, server, base, display, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 }, ...options });
  const page = await context.newPage();
  const problems = [];
  page.on('console', (msg) => {
    // Opening the app asks `POST /api/refresh` whether the refresh cookie holds a
    // session; without one the answer is 401, which Chromium logs. That is the
    // expected way to learn "not signed in" (the cookie is HttpOnly, invisible to
    // the page), so it is the one error not counted.
    const signedOut = /status of 401/.test(msg.text()) && msg.location().url.endsWith('/api/refresh');
    if (msg.type() === 'error' && !signedOut) problems.push(msg.text());
  });
  page.on('pageerror', (err) => problems.push(String(err)));
  // DEBUG_WS=1 prints every console message and WebSocket frame of the page.
  if (process.env.DEBUG_WS) {
    page.on('console', (msg) => console.log(base, 'CONSOLE', msg.type(), msg.text()));
    page.on('websocket', (ws) => {
      ws.on('framesent', (f) => console.log(base, 'SENT', String(f.payload).slice(0, 300)));
      ws.on('framereceived', (f) => console.log(base, 'RECV', String(f.payload).slice(0, 300)));
    });
  }
  const name = username(base);
  await page.goto(server.url);
  await page.getByRole('button', { name: 'Create an account' }).click();
  await page.getByLabel('Username').fill(name);
  await page.getByLabel('Display name').fill(display);
  await page.getByLabel('Password').fill('correct horse battery');
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByRole('link', { name: 'Your profile' }).waitFor();
  return { context, page, username: name, display, problems };
}

/** Opens the conversation list entry named `title`. */
export async function openConversation(p, title) {
  await p.page.getByRole('navigation', { name: 'Conversation list' }).getByRole('link', { name: title }).click();
  await p.page.getByRole('heading', { name: title, level: 2 }).waitFor();
}

/** Starts (or reopens) the direct conversation with `other` through "Find people". */
export async function startDirect(p, other) {
  await p.page.getByPlaceholder('Find people').fill(other.username);
  await p.page.getByRole('button', { name: `Message ${other.display}` }).click();
  await p.page.getByRole('heading', { name: other.display, level: 2 }).waitFor();
}

/** Starts the direct conversation with `other`, end-to-end encrypted if asked. */
export async function startConversation(p, other, encrypted) {
  if (!encrypted) return startDirect(p, other);
  await p.page.getByPlaceholder('Find people').fill(other.username);
  await p.page.getByRole('button', { name: `New encrypted chat with ${other.display}` }).click();
  await p.page.getByRole('heading', { name: other.display, level: 2 }).waitFor();
  await p.page.getByTestId('e2e-badge').waitFor();
}

/** The message bubble whose own text (not a quote of another) includes `text`. */
export function bubble(p, text) {
  return p.page
    .locator('[role="log"] article')
    .filter({ has: p.page.locator('.text', { hasText: text }) })
    .last();
}

/** Types and sends a message with the Enter key. */
export async function say(p, text) {
  const box = p.page.getByRole('textbox', { name: 'Message' });
  await box.fill(text);
  await box.press('Enter');
}

/** The texts of the messages shown in the open conversation, in order. */
export async function messages(p) {
  return p.page.locator('[role="log"] article .text').allInnerTexts();
}

/** Waits until `f()` deep-equals `expected`, or fails with the last value seen. */
export async function eventually(f, expected, timeout = 15000) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await f();
    try {
      assert.deepEqual(last, expected);
      return;
    } catch (e) {
      if (Date.now() > deadline) throw e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

const axeSource = await import('node:fs').then((fs) =>
  fs.readFileSync(join(webRoot, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8'),
);

/**
 * An axe-core audit of the page as it is now, in the light and the dark theme: fails on
 * any serious or critical violation (WCAG 2.1 A and AA rules), naming the rule and the
 * elements. axe is evaluated through the DevTools protocol, so the page's strict
 * Content-Security-Policy stays on.
 */
export async function audit(p, screen) {
  const found = [];
  for (const colorScheme of ['light', 'dark']) {
    await p.page.emulateMedia({ colorScheme });
    await p.page.evaluate(`${axeSource}\n;0`);
    const violations = await p.page.evaluate(async () => {
      // eslint-disable-next-line no-undef
      const result = await axe.run(document, {
        runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
      });
      return result.violations
        .filter((v) => v.impact === 'serious' || v.impact === 'critical')
        .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).slice(0, 5).join(', ')}`);
    });
    found.push(...violations.map((v) => `${screen}, ${colorScheme}: ${v}`));
  }
  await p.page.emulateMedia({ colorScheme: null });
  assert.deepEqual(found, [], 'accessibility violations');
}
