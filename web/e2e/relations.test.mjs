// Replies, edits, deletions and reactions in real browsers: two people use the message
// menu by mouse and keyboard, see each other's changes live and after a reload, in a
// plain and in an end-to-end encrypted conversation; rich text stays text; every screen
// passes the accessibility audit in both themes.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  audit,
  bubble,
  eventually,
  launchBrowser,
  messages,
  openConversation,
  person,
  say,
  startConversation,
  startDirect,
  startServer,
} from './harness.mjs';

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

/** Opens a message's menu by hovering it and runs `action` on it. */
async function menu(p, text, action) {
  const m = bubble(p, text);
  await m.hover();
  await m.getByRole('toolbar', { name: 'Message actions' }).getByRole('button', { name: action }).click();
}

/** The reaction chips of a message, as "emoji count" strings. */
async function chips(p, text) {
  return (await bubble(p, text).locator('.reactions .chip').allInnerTexts()).map((t) => t.replace(/\s+/g, ''));
}

for (const encrypted of [false, true]) {
  test(`two people reply, edit, react and delete, live and after a reload${encrypted ? ' (end-to-end encrypted)' : ''}`, async () => {
    const alice = await person(browser, server, 'alice', 'Alice Liddell');
    const bob = await person(browser, server, 'bob', 'Bob Builder');
    await startConversation(alice, bob, encrypted);
    await say(alice, 'Lunch at **noon**? See https://example.org/menu.');
    await openConversation(bob, 'Alice Liddell');
    await eventually(() => messages(bob), ['Lunch at noon? See https://example.org/menu.']);
    // Rich text as elements, links safe and in a new tab.
    const link = bubble(bob, 'Lunch').getByRole('link', { name: 'https://example.org/menu' });
    assert.equal(await link.getAttribute('rel'), 'noopener noreferrer');
    assert.equal(await link.getAttribute('target'), '_blank');
    assert.equal(await bubble(bob, 'Lunch').locator('strong').innerText(), 'noon');

    // Bob replies through the menu; both see the quote.
    await menu(bob, 'Lunch', 'Reply');
    await bob.page.getByTestId('composer-mode').filter({ hasText: 'Replying to' }).waitFor();
    await say(bob, 'Yes, the usual place');
    for (const p of [alice, bob]) {
      await bubble(p, 'usual place').getByTestId('reply-quote').filter({ hasText: 'Lunch at' }).waitFor();
    }

    // Bob reacts 👍 by mouse; Alice reacts 👍 by keyboard alone.
    await menu(bob, 'Lunch', 'React');
    await bob.page.getByRole('button', { name: 'React with 👍' }).click();
    await eventually(() => chips(alice, 'Lunch'), ['👍1']);
    await audit(alice, 'conversation with reactions');
    const box = alice.page.getByRole('textbox', { name: 'Message' });
    const first = bubble(alice, 'Lunch');
    await first.focus();
    // Tab through the message (past its link) to the 👍 chip, and press it.
    for (let i = 0; i < 5; i++) {
      await alice.page.keyboard.press('Tab');
      if (await alice.page.evaluate(() => document.activeElement?.classList.contains('chip'))) break;
    }
    await alice.page.keyboard.press('Enter');
    await eventually(() => chips(bob, 'Lunch'), ['👍2']);
    assert.equal(await first.locator('.chip').getAttribute('aria-pressed'), 'true');
    assert.match(await first.locator('.chip').getAttribute('title'), /You, Bob Builder reacted with 👍|Bob Builder, You reacted with 👍/);
    // Clicking her own chip takes it back.
    await first.locator('.chip').click();
    await eventually(() => chips(bob, 'Lunch'), ['👍1']);

    // Alice edits with the Up arrow in the empty composer.
    await box.focus();
    await box.press('ArrowUp');
    await alice.page.getByTestId('composer-mode').filter({ hasText: 'Editing' }).waitFor();
    await box.fill('Lunch at one instead?');
    await box.press('Enter');
    for (const p of [alice, bob]) {
      await bubble(p, 'one instead').locator('.edited').waitFor();
    }
    // The quote follows the edit.
    await bubble(bob, 'usual place').getByTestId('reply-quote').filter({ hasText: 'one instead' }).waitFor();

    // The picker and the delete dialog pass the audit too.
    await menu(alice, 'one instead', 'React');
    await alice.page.getByRole('toolbar', { name: 'Choose a reaction' }).waitFor();
    await audit(alice, 'reaction picker');
    await alice.page.keyboard.press('Escape');
    await menu(bob, 'usual place', 'Delete');
    await bob.page.getByRole('dialog', { name: 'Delete this message?' }).waitFor();
    await audit(bob, 'delete dialog');
    await bob.page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
    for (const p of [alice, bob]) {
      await eventually(() => messages(p), ['Lunch at one instead?', 'Message deleted']);
    }

    // After a reload both see the same: edited, one 👍 (Bob's), the tombstone.
    for (const p of [alice, bob]) {
      await p.page.reload();
      await openConversation(p, p === alice ? 'Bob Builder' : 'Alice Liddell');
      await eventually(() => messages(p), ['Lunch at one instead?', 'Message deleted']);
      await bubble(p, 'one instead').locator('.edited').waitFor();
      await eventually(() => chips(p, 'one instead'), ['👍1']);
    }
    // Clicking the quote of a reply scrolls to the original (loaded here).
    assert.deepEqual(alice.problems, []);
    assert.deepEqual(bob.problems, []);
    await alice.context.close();
    await bob.context.close();
  });
}

test('long messages fold behind "Show more", and a reply quote jumps to its original', async () => {
  const ann = await person(browser, server, 'ann', 'Ann Author');
  const ben = await person(browser, server, 'ben', 'Ben Reader');
  await startDirect(ann, ben);
  const long = Array.from({ length: 20 }, (_, i) => `line ${i + 1}`).join('\n');
  await say(ann, long);
  for (let i = 0; i < 25; i++) await say(ann, `filler ${i}`);
  await openConversation(ben, 'Ann Author');
  const folded = bubble(ben, 'line 1');
  await folded.getByRole('button', { name: 'Show more' }).click();
  assert.equal(await folded.getByRole('button', { name: 'Show less' }).getAttribute('aria-expanded'), 'true');
  await menu(ben, 'filler 24', 'Reply');
  await say(ben, 'about the first one');
  // Reply to the long message through its quote: focus moves there.
  await menu(ben, 'line 1', 'Reply');
  await say(ben, 'this one');
  await bubble(ben, 'this one').getByTestId('reply-quote').click();
  await eventually(() => ben.page.evaluate(() => document.activeElement?.textContent?.includes('line 20') ?? false), true);
  await audit(ben, 'long message and replies');
  assert.deepEqual(ann.problems, []);
  assert.deepEqual(ben.problems, []);
  await ann.context.close();
  await ben.context.close();
});
