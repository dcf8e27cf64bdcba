// End to end in a real browser: people sign up, find each other, chat in real time,
// see typing and read receipts, reload, form a group, and ride out a server restart.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  artifacts,
  audit,
  eventually,
  launchBrowser,
  messages,
  openConversation,
  person,
  repoRoot,
  say,
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

test('two people chat in a direct conversation, with typing, receipts and a reload', async () => {
  const alice = await person(browser, server, 'alice', 'Alice Liddell');
  const bob = await person(browser, server, 'bob', 'Bob Builder');

  // The UI is served with a strict policy and the usual security headers.
  const response = await alice.page.request.get(server.url + '/');
  assert.match(response.headers()['content-security-policy'], /script-src 'self'/);
  assert.equal(response.headers()['x-frame-options'], 'DENY');

  await audit(alice, 'empty conversation list');
  await startDirect(alice, bob);
  await say(alice, 'Hello Bob! <b>not bold</b>');
  // Sent: the message is stored (has a seq) and shows no error.
  await alice.page.locator('article[data-status="sent"]').first().waitFor();

  // Bob sees the conversation appear with one unread message, then opens it.
  const bobList = bob.page.getByRole('navigation', { name: 'Conversation list' });
  await bobList.getByLabel('1 unread').waitFor();
  await openConversation(bob, 'Alice Liddell');
  await eventually(() => messages(bob), ['Hello Bob! <b>not bold</b>']);
  // User content is text, never markup.
  assert.equal(await bob.page.locator('[role="log"] b').count(), 0);

  // Alice sees that Bob read it.
  await eventually(() => alice.page.getByTestId('receipt').innerText(), 'Seen');

  // Bob types: Alice sees the indicator; Bob sends: it goes away and the reply arrives.
  await bob.page.getByRole('textbox', { name: 'Message' }).pressSequentially('Hi Al');
  await alice.page.getByTestId('typing').filter({ hasText: 'Bob Builder is typing' }).waitFor();
  await bob.page.getByRole('textbox', { name: 'Message' }).fill('Hi Alice,\nhow are you?');
  await bob.page.getByRole('textbox', { name: 'Message' }).press('Enter');
  await eventually(() => messages(alice), ['Hello Bob! <b>not bold</b>', 'Hi Alice,\nhow are you?']);
  await alice.page.getByTestId('typing').waitFor({ state: 'detached' });

  // Shift+Enter is a new line, not a send.
  const box = alice.page.getByRole('textbox', { name: 'Message' });
  await box.fill('Fine,');
  await box.press('Shift+Enter');
  await box.pressSequentially('thanks!');
  await box.press('Enter');
  await eventually(() => messages(bob), ['Hello Bob! <b>not bold</b>', 'Hi Alice,\nhow are you?', 'Fine,\nthanks!']);

  // Presence: each sees the other online.
  assert.equal(await alice.page.getByTestId('chat-subtitle').innerText(), 'online');

  // A reload keeps the session (refresh cookie, nothing in storage) and the history.
  await bob.page.reload();
  await bob.page.getByRole('heading', { name: 'Alice Liddell', level: 2 }).waitFor();
  await eventually(() => messages(bob), ['Hello Bob! <b>not bold</b>', 'Hi Alice,\nhow are you?', 'Fine,\nthanks!']);
  assert.deepEqual(await bob.page.evaluate(() => Object.keys(localStorage)), []);
  assert.deepEqual(await bob.page.evaluate(() => document.cookie), '');

  // Profiles: Alice writes a bio; Bob sees it on her page.
  await alice.page.getByRole('link', { name: 'Your profile' }).click();
  await alice.page.getByLabel('Bio').fill('Curiouser and curiouser.');
  await alice.page.getByRole('button', { name: 'Save' }).click();
  await alice.page.getByRole('status').filter({ hasText: 'Saved' }).waitFor();
  await audit(alice, 'own profile');
  await bob.page.getByRole('heading', { name: 'Alice Liddell', level: 2 }).click();
  await bob.page.getByText('Curiouser and curiouser.').waitFor();
  await audit(bob, "someone's profile");

  mkdirSync(artifacts, { recursive: true });
  await alice.page.goBack();
  await alice.page.getByRole('heading', { name: 'Bob Builder', level: 2 }).waitFor();
  const shot = join(artifacts, 'conversation.png');
  await alice.page.screenshot({ path: shot });
  if (process.env.UPDATE_SCREENSHOT) {
    mkdirSync(join(repoRoot, 'docs'), { recursive: true });
    copyFileSync(shot, join(repoRoot, 'docs', 'screenshot.png'));
  }

  // Signing out ends the session: a reload shows the sign-in page.
  await bob.page.getByRole('button', { name: 'Sign out' }).click();
  await bob.page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await audit(bob, 'sign in');
  await bob.page.reload();
  await bob.page.getByRole('heading', { name: 'Sign in' }).waitFor();

  assert.deepEqual(alice.problems, []);
  assert.deepEqual(bob.problems, []);
  await alice.context.close();
  await bob.context.close();
});

test('a group of three chats, and members can be added and leave', async () => {
  const ann = await person(browser, server, 'ann', 'Ann');
  const ben = await person(browser, server, 'ben', 'Ben');
  const cat = await person(browser, server, 'cat', 'Cat');

  await ann.page.getByRole('button', { name: 'New group' }).click();
  await ann.page.getByLabel('Name').fill('Book club');
  await ann.page.getByPlaceholder('Add people').fill(ben.username);
  await ann.page.getByRole('button', { name: 'Add Ben' }).click();
  await audit(ann, 'new group');
  await ann.page.getByRole('button', { name: 'Create group' }).click();
  await ann.page.getByRole('heading', { name: 'Book club', level: 2 }).waitFor();

  // Cat joins later, added from the members panel.
  await ann.page.getByRole('button', { name: 'Members' }).click();
  await ann.page.getByPlaceholder('Add someone').fill(cat.username);
  await ann.page.getByRole('button', { name: 'Add Cat' }).click();
  await ann.page.getByRole('complementary', { name: 'Members of Book club' }).getByRole('link', { name: 'Cat' }).waitFor();
  await audit(ann, 'group with its members');

  await say(ann, 'Welcome to the book club');
  for (const p of [ben, cat]) {
    await openConversation(p, 'Book club');
    await eventually(() => messages(p), ['Welcome to the book club']);
  }
  await say(ben, 'Glad to be here');
  await say(cat, 'Me too');
  for (const p of [ann, ben, cat]) {
    await eventually(async () => (await messages(p)).sort(), ['Glad to be here', 'Me too', 'Welcome to the book club']);
  }
  // Authors are named in a group.
  await ann.page.locator('article .author', { hasText: 'Ben' }).waitFor();
  await audit(ann, 'group conversation');

  // Everyone has read Ann's message.
  await eventually(async () => (await ann.page.getByTestId('receipt').innerText()).trim(), 'Seen by everyone');

  // Cat leaves: the group is gone from her list, and the others keep chatting.
  cat.page.once('dialog', (d) => d.accept());
  await cat.page.getByRole('button', { name: 'Members' }).click();
  await cat.page.getByRole('button', { name: 'Leave group' }).click();
  await cat.page
    .getByRole('navigation', { name: 'Conversation list' })
    .getByRole('link', { name: 'Book club' })
    .waitFor({ state: 'detached' });
  await say(ann, 'See you next week');
  await eventually(async () => (await messages(ben)).includes('See you next week'), true);

  // The owner removes Ben: the group leaves his list too.
  const panel = ann.page.getByRole('complementary', { name: 'Members of Book club' });
  if (!(await panel.isVisible())) await ann.page.getByRole('button', { name: 'Members' }).click();
  const benRow = panel.getByRole('listitem').filter({ hasText: 'Ben' });
  await benRow.getByRole('button', { name: 'Remove' }).click();
  await benRow.waitFor({ state: 'detached' });
  await ben.page
    .getByRole('navigation', { name: 'Conversation list' })
    .getByRole('link', { name: 'Book club' })
    .waitFor({ state: 'detached' });

  for (const p of [ann, ben, cat]) {
    assert.deepEqual(p.problems, []);
    await p.context.close();
  }
});

test('a server restart: the UI shows it is reconnecting, then resumes without loss or duplicates', async () => {
  const dan = await person(browser, server, 'dan', 'Dan');
  const eve = await person(browser, server, 'eve', 'Eve');
  await startDirect(dan, eve);
  await say(dan, 'before the restart');
  await eve.page.getByRole('navigation', { name: 'Conversation list' }).getByLabel('1 unread').waitFor();
  await openConversation(eve, 'Dan');

  // The server goes down: both pages say so, and Dan's message waits as "Sending…".
  const restart = server.restart(1500);
  await dan.page.getByRole('status').filter({ hasText: 'Reconnecting' }).waitFor();
  await eve.page.getByRole('status').filter({ hasText: 'Reconnecting' }).waitFor();
  await say(dan, 'during the restart');
  await dan.page.locator('article[data-status="sending"]').waitFor();
  await restart;

  // Back up: the queued message is sent exactly once and reaches Eve.
  await dan.page.getByRole('status').filter({ hasText: 'Reconnecting' }).waitFor({ state: 'detached', timeout: 30000 });
  await eventually(() => messages(eve), ['before the restart', 'during the restart'], 30000);
  await say(eve, 'after the restart');
  await eventually(() => messages(dan), ['before the restart', 'during the restart', 'after the restart']);
  await eventually(() => messages(eve), ['before the restart', 'during the restart', 'after the restart']);
  assert.equal(await dan.page.locator('article[data-status="sending"]').count(), 0);

  // The stored history agrees: a reload shows each message once.
  await eve.page.reload();
  await eve.page.getByRole('heading', { name: 'Dan', level: 2 }).waitFor();
  await eventually(() => messages(eve), ['before the restart', 'during the restart', 'after the restart']);

  for (const p of [dan, eve]) {
    // The browser logs the refused WebSocket while the server is down; nothing else.
    assert.deepEqual(
      p.problems.filter((m) => !/WebSocket connection to .* failed|ERR_CONNECTION_REFUSED/.test(m)),
      [],
    );
    await p.context.close();
  }
});

test('on a phone-sized screen in the dark theme, the list and the chat take turns', async () => {
  const fay = await person(browser, server, 'fay', 'Fay', {
    viewport: { width: 375, height: 740 },
    colorScheme: 'dark',
    isMobile: true,
    hasTouch: true,
  });
  const gus = await person(browser, server, 'gus', 'Gus');
  await startDirect(gus, fay);
  await say(gus, 'Are you on your phone?');

  const list = fay.page.getByRole('navigation', { name: 'Conversation list' });
  await list.getByLabel('1 unread').waitFor();
  await openConversation(fay, 'Gus');
  // The chat replaces the list, which comes back with the back button.
  assert.equal(await list.isVisible(), false);
  await say(fay, 'Yes, and it is dark in here');
  await eventually(() => messages(gus), ['Are you on your phone?', 'Yes, and it is dark in here']);
  const background = await fay.page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const [r, g, b] = background.match(/\d+/g).map(Number);
  assert.ok(r + g + b < 150, `a dark background, got ${background}`);
  // Nothing is wider than the screen.
  assert.equal(await fay.page.evaluate(() => document.documentElement.scrollWidth), 375);
  await fay.page.screenshot({ path: join(artifacts, 'phone-dark.png') });
  await audit(fay, 'phone-sized conversation');
  await fay.page.getByRole('button', { name: 'Back to conversations' }).click();
  await list.waitFor();

  for (const p of [fay, gus]) {
    assert.deepEqual(p.problems, []);
    await p.context.close();
  }
});

test('a long conversation loads older messages while scrolling back', async () => {
  const hal = await person(browser, server, 'hal', 'Hal');
  const ivy = await person(browser, server, 'ivy', 'Ivy');
  await startDirect(hal, ivy);

  // 130 messages from a second device of Hal's: a plain WebSocket client in his page,
  // signed in with its own session.
  const login = await fetch(`${server.url}/api/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: hal.username, password: 'correct horse battery' }),
  }).then((r) => r.json());
  const total = 130;
  const stored = await hal.page.evaluate(
    async ({ token, total }) => {
      const ws = new WebSocket(`ws://${location.host}/ws`, 'chat.v1.json');
      const frames = [];
      let wake = () => {};
      ws.onmessage = (e) => {
        frames.push(JSON.parse(e.data));
        wake();
      };
      const until = async (pred) => {
        for (;;) {
          const hit = frames.find(pred);
          if (hit) return hit;
          await new Promise((r) => (wake = r));
        }
      };
      await new Promise((r) => (ws.onopen = r));
      ws.send(JSON.stringify({ hello: { version: { major: 1, minor: 0 }, token, client: 'e2e', resume: [] } }));
      const welcome = (await until((f) => f.welcome)).welcome;
      const conversation = welcome.heads[0].conversation;
      const sends = new Map();
      for (let i = 1; i <= total; i++) {
        const frame = JSON.stringify({
          send: { request_id: i, conversation, client_msg_id: crypto.randomUUID(), body: { text: `line ${i}` } },
        });
        sends.set(i, frame);
        ws.send(frame);
      }
      // Past the burst, sends are refused as rate limited with a delay: send those again
      // in order, one at a time, as a well-behaved client does.
      const acks = new Map();
      while (acks.size < total) {
        const f = await until((f) => f.ack || f.error);
        frames.splice(frames.indexOf(f), 1);
        if (f.ack) {
          acks.set(f.ack.request_id, f.ack.seq);
        } else if (f.error.code === 'rate_limited') {
          await new Promise((r) => setTimeout(r, f.error.retry_after_ms));
          ws.send(sends.get(f.error.request_id));
        } else {
          throw new Error(JSON.stringify(f));
        }
      }
      ws.close();
      // The texts in the order the server stored them (retries can reorder sends).
      return [...acks].sort((a, b) => a[1] - b[1]).map(([i]) => `line ${i}`);
    },
    { token: login.access_token, total },
  );
  assert.equal(new Set(stored).size, total);

  // Ivy got them live; after a reload her app knows only what it fetches.
  await ivy.page.reload();
  await openConversation(ivy, 'Hal');
  // The newest page first, then older ones as the list is scrolled to the top.
  await eventually(async () => (await messages(ivy)).at(-1), stored.at(-1));
  assert.ok((await messages(ivy)).length < total);
  const log = ivy.page.getByRole('log', { name: 'Messages' });
  for (let i = 0; i < 10 && (await messages(ivy)).length < total; i++) {
    await log.evaluate((el) => el.scrollTo(0, 0));
    await ivy.page.waitForTimeout(200);
  }
  assert.deepEqual(await messages(ivy), stored);
  await ivy.page.getByText('This is the beginning of the conversation.').waitFor();

  for (const p of [hal, ivy]) {
    assert.deepEqual(p.problems, []);
    await p.context.close();
  }
});
