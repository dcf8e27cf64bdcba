// Searching messages in the browser: the server's results for plain conversations and
// the browser's own among decrypted messages of encrypted ones, in one list (marked);
// a result opens its conversation at the message; the list passes the audit.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { audit, eventually, launchBrowser, person, say, startConversation, startServer } from './harness.mjs';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.close();
});

/** The search hits shown: [snippet text, found on this device]. */
async function hits(p) {
  return p.page.getByTestId('search-hit').evaluateAll((els) =>
    els.map((e) => [e.querySelector('.snippet').textContent, e.querySelector('.local') !== null]),
  );
}

test('messages are found in plain and encrypted conversations, and open in place', async () => {
  const ann = await person(browser, server, 'ann', 'Ann Finder');
  const bob = await person(browser, server, 'bob', 'Bob Plain');
  const cy = await person(browser, server, 'cy', 'Cy Secret');
  await startConversation(ann, bob, false);
  await say(ann, 'Shall we meet for lunch on Friday?');
  for (let i = 0; i < 30; i++) await say(ann, `filler ${i}`);
  await startConversation(ann, cy, true);
  await say(ann, 'The lunch code is 4711');
  await ann.page.locator('[role="log"] article[data-status="sent"]').filter({ hasText: '4711' }).waitFor();

  const box = ann.page.getByRole('searchbox', { name: 'Search messages' });
  await box.fill('lunch');
  await box.press('Enter');
  await eventually(() => hits(ann), [
    ['The lunch code is 4711', true],
    ['Shall we meet for lunch on Friday?', false],
  ]);
  const marked = await ann.page.getByTestId('search-hit').first().locator('mark').allInnerTexts();
  assert.deepEqual(marked, ['lunch']);
  await audit(ann, 'search results');

  // A word no message has; then the plain hit, which opens the conversation there.
  await box.fill('dinner');
  await box.press('Enter');
  await ann.page.getByRole('status').filter({ hasText: 'No messages found' }).waitFor();
  await box.fill('"on friday"');
  await box.press('Enter');
  await eventually(() => hits(ann), [['Shall we meet for lunch on Friday?', false]]);
  await ann.page.getByTestId('search-hit').click();
  await ann.page.getByRole('heading', { name: 'Bob Plain', level: 2 }).waitFor();
  await eventually(
    () => ann.page.evaluate(() => document.activeElement?.textContent?.includes('lunch on Friday') ?? false),
    true,
  );

  // Escape closes the search; the conversation list is back.
  await box.focus();
  await box.press('Escape');
  await ann.page.getByRole('navigation', { name: 'Conversation list' }).waitFor();
  assert.deepEqual(ann.problems, []);
  for (const p of [ann, bob, cy]) await p.context.close();
});
