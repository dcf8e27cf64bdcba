// Files in messages in real browsers, through tus-js-client against the real server:
// attach by the button, by dropping and by pasting; images inline and opened large,
// other files as cards that download; in a plain and in an end-to-end encrypted
// conversation (where the server stores only ciphertext); an upload whose connection
// drops resumes where it stopped, and after a reload too; a cancelled one ends on the
// server too; every screen passes the accessibility audit in both themes.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync, crc32 } from 'node:zlib';
import { audit, bubble, eventually, launchBrowser, person, startConversation, startDirect, startServer } from './harness.mjs';

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

/** A real PNG of `width` × `height` pixels: a colour gradient. */
function png(width, height) {
  const chunk = (type, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, 'latin1');
    data.copy(out, 8);
    out.writeUInt32BE(crc32(Buffer.concat([Buffer.from(type, 'latin1'), data])), 8 + data.length);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  const rows = Buffer.alloc(height * (1 + width * 3));
  for (let y = 0; y < height; y++) {
    const row = y * (1 + width * 3);
    for (let x = 0; x < width; x++) {
      rows.set([(x * 255) / width, (y * 255) / height, 128], row + 1 + x * 3);
    }
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(rows)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

async function conversationWith(alice, bob, encrypted) {
  await startConversation(alice, bob, encrypted);
  await alice.page.getByRole('textbox', { name: 'Message' }).fill('hello');
  await alice.page.getByRole('textbox', { name: 'Message' }).press('Enter');
  await bob.page.getByRole('navigation', { name: 'Conversation list' }).getByRole('link', { name: alice.display }).click();
  await bob.page.getByRole('heading', { name: alice.display, level: 2 }).waitFor();
}

/** Puts files into the composer by dropping them on the conversation, or by pasting. */
async function dropOrPaste(p, how, name, type, text) {
  await p.page.evaluate(
    ({ how, name, type, text }) => {
      const dt = new DataTransfer();
      dt.items.add(new File([text], name, { type }));
      if (how === 'paste') {
        const box = document.querySelector('textarea');
        box.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
      } else {
        const section = document.querySelector('section.chat');
        section.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
        section.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
      }
    },
    { how, name, type, text },
  );
}

/** Every stored file's bytes under the server's data directory. */
function storedFiles() {
  const dir = join(server.dataDir, 'files');
  return readdirSync(dir).map((f) => readFileSync(join(dir, f)));
}

for (const encrypted of [false, true]) {
  test(`an image and a file in one message, shown, opened and downloaded${encrypted ? ' (end-to-end encrypted)' : ''}`, async () => {
    const alice = await person(browser, server, 'alice', 'Alice Liddell');
    const bob = await person(browser, server, 'bob', 'Bob Builder');
    await conversationWith(alice, bob, encrypted);

    // The attach button (the file chooser), then a file dropped or pasted.
    const notes = `Notes for the trip ${encrypted ? 'sealed' : 'plain'} ${Date.now()}`;
    const chooser = alice.page.waitForEvent('filechooser');
    await alice.page.getByRole('button', { name: 'Attach files' }).click();
    await (await chooser).setFiles([{ name: 'view.png', mimeType: 'image/png', buffer: png(320, 200) }]);
    await dropOrPaste(alice, encrypted ? 'paste' : 'drop', 'notes.txt', 'text/plain', notes);
    const attached = alice.page.getByRole('list', { name: 'Files to send' });
    await eventually(async () => (await attached.locator('.attached-name').allInnerTexts()), ['view.png', 'notes.txt']);
    await audit(alice, 'composer with files');
    const box = alice.page.getByRole('textbox', { name: 'Message' });
    await box.fill('Our holiday');
    await box.press('Enter');

    for (const p of [alice, bob]) {
      const m = bubble(p, 'Our holiday');
      const image = m.getByRole('button', { name: 'Open image view.png' });
      await image.waitFor();
      await eventually(() => image.getAttribute('data-loaded'), 'true');
      const size = await image.locator('img').evaluate((img) => [img.naturalWidth, img.naturalHeight]);
      assert.deepEqual(size, [320, 200]);
      await m.getByTestId('attachment-file').filter({ hasText: 'notes.txt' }).waitFor();
    }

    // Bob downloads the file and gets its bytes.
    const download = bob.page.waitForEvent('download');
    await bubble(bob, 'Our holiday').getByRole('button', { name: 'Download notes.txt' }).click();
    const saved = await download;
    assert.equal(saved.suggestedFilename(), 'notes.txt');
    assert.equal(readFileSync(await saved.path(), 'utf8'), notes);

    // He opens the image large by keyboard, and closes it with Escape.
    await bubble(bob, 'Our holiday').getByRole('button', { name: 'Open image view.png' }).focus();
    await bob.page.keyboard.press('Enter');
    const viewer = bob.page.getByRole('dialog', { name: 'view.png' });
    await viewer.getByRole('img', { name: 'view.png' }).waitFor();
    await audit(bob, 'image viewer');
    await bob.page.keyboard.press('Escape');
    await viewer.waitFor({ state: 'hidden' });
    await audit(bob, 'conversation with files');

    // In an encrypted conversation the server holds ciphertext only.
    const plainStored = storedFiles().some((bytes) => bytes.includes(Buffer.from(notes)));
    assert.equal(plainStored, !encrypted);

    // After a reload both still see the files.
    await bob.page.reload();
    await bob.page.getByRole('navigation', { name: 'Conversation list' }).getByRole('link', { name: alice.display }).click();
    await bubble(bob, 'Our holiday').getByRole('button', { name: 'Open image view.png' }).waitFor();
    assert.deepEqual(alice.problems, []);
    assert.deepEqual(bob.problems, []);
    await alice.context.close();
    await bob.context.close();
  });
}

test('an upload resumes where it stopped after a dropped connection or a reload; a cancelled one ends on the server', async () => {
  const ann = await person(browser, server, 'ann', 'Ann Sender');
  const ben = await person(browser, server, 'ben', 'Ben Receiver');
  await startDirect(ann, ben);
  const requests = [];
  let dropped = false;
  let holding = false;
  let stallSecond = false;
  await ann.page.route('**/api/uploads**', async (route) => {
    const req = route.request();
    const offset = req.headers()['upload-offset'] ?? '';
    requests.push(`${req.method()} ${offset}`.trim());
    // The connection of the second chunk's request breaks once.
    if (req.method() === 'PATCH' && offset !== '0' && !dropped) {
      dropped = true;
      await route.abort('connectionreset');
      return;
    }
    // While `holding`, requests hang, as on a stalled network; with `stallSecond`, from
    // the second chunk on.
    if (req.method() === 'PATCH' && (holding || (stallSecond && offset !== '0'))) return;
    await route.continue();
  });

  // 10 MiB: two chunks of the app's 8 MiB.
  const big = Buffer.alloc(10 * 1024 * 1024);
  for (let i = 0; i < big.length; i += 4096) big.writeUInt32BE(i, i);
  await ann.page.getByTestId('file-input').setInputFiles([{ name: 'big.bin', mimeType: 'application/octet-stream', buffer: big }]);
  const box = ann.page.getByRole('textbox', { name: 'Message' });
  await box.fill('the big one');
  await box.press('Enter');
  await bubble(ann, 'the big one').getByRole('button', { name: 'Download big.bin' }).waitFor({ timeout: 30000 });
  // Created, first chunk, the broken second, where does it stand, the second again.
  assert.deepEqual(
    requests.filter((r) => !r.startsWith('OPTIONS')),
    ['POST', 'PATCH 0', 'PATCH 8388608', 'HEAD', 'PATCH 8388608'],
  );
  const download = ann.page.waitForEvent('download');
  await bubble(ann, 'the big one').getByRole('button', { name: 'Download big.bin' }).click();
  assert.ok(readFileSync(await (await download).path()).equals(big), 'the download is the file');

  // A stalled upload shows its progress; Cancel ends it on the server too.
  holding = true;
  requests.length = 0;
  await ann.page.getByTestId('file-input').setInputFiles([{ name: 'stalled.bin', mimeType: 'application/octet-stream', buffer: big }]);
  await box.fill('never mind');
  await box.press('Enter');
  const uploads = bubble(ann, 'never mind').getByTestId('uploads');
  await uploads.getByText('stalled.bin').waitFor();
  await audit(ann, 'upload in progress');
  const ended = ann.page.waitForResponse((r) => r.request().method() === 'DELETE' && /\/api\/uploads\//.test(r.url()));
  await uploads.getByRole('button', { name: 'Cancel sending these files' }).click();
  assert.equal((await ended).status(), 204);
  await bubble(ann, 'never mind').waitFor({ state: 'detached' });

  // The page is reloaded while a file from disk is half uploaded: choosing the same file
  // again goes on from what the server has instead of starting over.
  holding = false;
  stallSecond = true;
  const onDisk = join(mkdtempSync(join(tmpdir(), 'chat-upload-')), 'resume.bin');
  writeFileSync(onDisk, big);
  await ann.page.getByTestId('file-input').setInputFiles(onDisk);
  await box.fill('after a reload');
  await box.press('Enter');
  await eventually(() => requests.includes('PATCH 8388608'), true);
  stallSecond = false;
  requests.length = 0;
  await ann.page.reload();
  await ann.page.getByRole('navigation', { name: 'Conversation list' }).getByRole('link', { name: ben.display }).click();
  await ann.page.getByTestId('file-input').setInputFiles(onDisk);
  await ann.page.getByRole('textbox', { name: 'Message' }).fill('after a reload');
  await ann.page.getByRole('textbox', { name: 'Message' }).press('Enter');
  await bubble(ann, 'after a reload').getByRole('button', { name: 'Download resume.bin' }).waitFor({ timeout: 30000 });
  assert.deepEqual(
    requests.filter((r) => r !== 'OPTIONS'),
    ['HEAD', 'PATCH 8388608'],
    'resumed from the stored half, not uploaded again',
  );
  assert.deepEqual(ann.problems.filter((p) => !/ERR_CONNECTION_RESET|net::ERR_FAILED/.test(p)), []);
  await ann.context.close();
  await ben.context.close();
});
