// End-to-end encryption in a real browser: encrypted chats between browsers, with the
// Rust SDK (both directions), fingerprints that match, keys that stay in the browser
// and a database that holds no plaintext.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { audit,
  eventually,
  launchBrowser,
  messages,
  openConversation,
  person,
  say,
  startConversation,
  startDirect,
  startEchoBot,
  startServer,
  username,
} from './harness.mjs';

let server;
let browser;
const keys = mkdtempSync(join(tmpdir(), 'chat-e2e-keys-'));

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.close();
  rmSync(keys, { recursive: true, force: true });
});

/** Every byte the server wrote to its SQLite database (main file and write-ahead log). */
function stored() {
  return Buffer.concat(
    readdirSync(server.dataDir)
      .filter((f) => f.startsWith('chat.db'))
      .map((f) => readFileSync(join(server.dataDir, f))),
  );
}

test('two browsers chat end-to-end encrypted; the server stores no plaintext', async () => {
  const alice = await person(browser, server, 'alice', 'Alice Crypto');
  const bob = await person(browser, server, 'bob', 'Bob Crypto');

  await startConversation(alice, bob, true);
  const secret = 'the vault code is 4417 🔐';
  await say(alice, secret);
  await alice.page.locator('article[data-status="sent"]').first().waitFor();

  const bobList = bob.page.getByRole('navigation', { name: 'Conversation list' });
  await bobList.getByLabel('End-to-end encrypted').waitFor();
  await openConversation(bob, 'Alice Crypto');
  await eventually(() => messages(bob), [secret]);
  await say(bob, 'received, burning it');
  await eventually(() => messages(alice), [secret, 'received, burning it']);

  // A reload keeps the device key (IndexedDB): old messages still open. Nothing is in
  // localStorage, and the stored private key is not extractable.
  await bob.page.reload();
  await openConversation(bob, 'Alice Crypto');
  await eventually(() => messages(bob), [secret, 'received, burning it']);
  assert.deepEqual(await bob.page.evaluate(() => Object.keys(localStorage)), []);
  const stored_key = await bob.page.evaluate(
    () =>
      new Promise((resolve, reject) => {
        const req = indexedDB.open('chat-e2e');
        req.onerror = () => reject(req.error);
        req.onsuccess = () => {
          const all = req.result.transaction('device-keys').objectStore('device-keys').getAll();
          all.onsuccess = () =>
            resolve(all.result.map((p) => [p.privateKey.extractable, p.privateKey.algorithm.name]));
        };
      }),
  );
  assert.deepEqual(stored_key, [[false, 'X25519']]);

  // Fingerprints: what Alice sees for Bob is what Bob's browser shows for itself.
  await alice.page.getByRole('heading', { name: 'Bob Crypto', level: 2 }).click();
  await alice.page.getByTestId('fingerprint').first().waitFor();
  const seenByAlice = await alice.page.getByTestId('fingerprint').allInnerTexts();
  await bob.page.getByRole('link', { name: 'Your profile' }).click();
  await bob.page.getByText('(this browser)').waitFor();
  const own = await bob.page.getByTestId('fingerprint').allInnerTexts();
  assert.equal(seenByAlice.length, 1);
  assert.deepEqual(seenByAlice, own);
  assert.match(own[0], /^(\d{5} ){7}\d{5}$/);
  await audit(bob, 'own profile with devices');

  // The database: ciphertext only. The same search finds a plain message.
  await startDirect(alice, bob);
  await say(alice, 'plain control message 9031');
  await alice.page.locator('article[data-status="sent"]').first().waitFor();
  await eventually(() => stored().includes('plain control message 9031'), true);
  assert.equal(stored().includes(secret), false);
  assert.equal(stored().includes('received, burning it'), false);

  for (const p of [alice, bob]) {
    assert.deepEqual(p.problems, []);
    await p.context.close();
  }
});

test('a browser and the Rust SDK read each other\'s sealed messages', async () => {
  const botName = username('echo');
  const bot = await startEchoBot(server, botName, join(keys, 'echo.key'));
  try {
    const carol = await person(browser, server, 'carol', 'Carol Crypto');
    // The bot registered with its username as display name default.
    await startConversation(carol, { username: botName, display: 'Echo bot' }, true);
    // Sealed in the browser (WebCrypto + HPKE), opened by the SDK (chat-crypto); the
    // echo is sealed by the SDK for Carol's browser and opened there.
    await say(carol, 'ping from Chromium ✓');
    await eventually(() => messages(carol), ['ping from Chromium ✓', 'echo: ping from Chromium ✓']);
    await say(carol, 'second');
    await eventually(() => messages(carol), ['ping from Chromium ✓', 'echo: ping from Chromium ✓', 'second', 'echo: second']);
    assert.equal(stored().includes('ping from Chromium'), false);
    assert.deepEqual(carol.problems, []);
    await carol.context.close();
  } finally {
    await bot.stop();
  }
});
