// The /client/ page in a real browser (Debian's chromium, driven by playwright-core) against
// the built proxy and a real Synapse: paste a token, see the user's rooms by recency with their
// names, watch a message arrive live, narrow the range and see the list follow. Screenshots go
// to test-artifacts/ (CI keeps them; the README shows one).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import { startE2eProxy } from '../support/e2e-proxy.js';
import { eventually, registerUser, requestJson } from '../support/matrix-users.js';
import { homeserverForFile } from '../support/synapse.js';
import { settle } from './oracle.js';

const CHROMIUM = process.env.SYNCV3_E2E_CHROMIUM ?? '/usr/bin/chromium';
const SCREENSHOT = path.resolve('test-artifacts/client-page.png');
const PHONE_SCREENSHOT = path.resolve('test-artifacts/client-page-phone.png');
// The machine has no outside network: nothing in the browser may try to reach it.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const hs = await homeserverForFile();
const noBrowser = existsSync(CHROMIUM) ? undefined : `no browser at ${CHROMIUM} (apt-get install chromium)`;
if (noBrowser && process.env.SYNCV3_E2E_REQUIRED === '1') throw new Error(`the browser test is required: ${noBrowser}`);

/** A fresh profile per run, removed afterwards. */
async function launchBrowser(): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  const profile = await mkdtemp(path.join(os.tmpdir(), 'syncv3-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    viewport: { width: 1400, height: 900 },
  });
  return {
    context,
    close: async () => {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/** The names the page shows in a list, top to bottom. */
const listNames = (page: Page, list: string) => page.$$eval(`[data-list="${list}"] .room-name`, (nodes) => nodes.map((n) => n.textContent));

async function expectNames(page: Page, list: string, expected: string[], what: string) {
  await eventually(
    what,
    async () => {
      const names = await listNames(page, list);
      return JSON.stringify(names) === JSON.stringify(expected) ? names : undefined;
    },
    20_000,
  ).catch(async (err) => {
    throw new Error(`${err.message}; the page shows ${JSON.stringify(await listNames(page, list))}`);
  });
}

test('the /client/ page in chromium', { skip: hs.skip ?? noBrowser, timeout: 240_000 }, async (t) => {
  const hsUrl = hs.url as string;
  const proxy = await startE2eProxy(t, hsUrl);
  const [alice, bob] = await Promise.all([registerUser(hsUrl, 'pagealice'), registerUser(hsUrl, 'pagebob')]);
  await settle(proxy.url, alice);
  const [alpha, bravo, charlie] = [
    await alice.createRoom({ name: 'Alpha' }),
    await alice.createRoom({ name: 'Bravo' }),
    await alice.createRoom({ name: 'Charlie' }),
  ];
  assert.ok(alpha && bravo && charlie);
  // Bob's room, where he mentions Alice: unread and highlight counts.
  const team = await bob.createRoom({ name: 'Team', invite: [alice.userId] });
  await alice.join(team);
  await bob.sendMessage(team, 'welcome');
  await bob.sendEvent(team, 'm.room.message', { msgtype: 'm.text', body: 'Alice, look', 'm.mentions': { user_ids: [alice.userId] } });
  // Recency is not creation order: Alpha's message makes it newer than Team.
  await alice.sendMessage(alpha, 'Alpha again');
  // And an invite, the newest of all.
  await bob.createRoom({ name: 'Invitation', invite: [alice.userId] });
  await settle(proxy.url, alice);

  const browser = await launchBrowser();
  t.after(() => browser.close());
  const page = await browser.context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
  });
  page.on('response', (response) => {
    if (response.status() >= 400) problems.push(`${response.status()} for ${new URL(response.url()).pathname}`);
  });

  const res = await page.goto(`${proxy.url}/client/`);
  assert.equal(res?.status(), 200);
  await page.getByLabel('Access token').fill(alice.accessToken);
  await page.getByRole('button', { name: 'Sync', exact: true }).click();

  await t.test('the rooms in recency order, with their names and the list count', async () => {
    await expectNames(page, 'all', ['Invitation', 'Alpha', 'Team', 'Charlie', 'Bravo'], 'the rooms by recency');
    assert.equal(await page.textContent('[data-list="all"] h3 .count'), '(5)');
    const badges = (roomId: string) => page.$$eval(`[data-room-id="${roomId}"] .badge`, (nodes) => nodes.map((n) => n.textContent));
    assert.deepEqual(await badges(team), ['1', '2'], 'one highlight, two unread');
    const invitation = await page.getAttribute('[data-list="all"] li:first-child .room', 'data-room-id');
    assert.deepEqual(await badges(invitation ?? ''), ['invite']);
    await eventually('the first-sync line', async () => ((await page.textContent('#first-sync'))?.includes('done') ? true : undefined));
    assert.match((await page.textContent('#whoami')) ?? '', new RegExp(alice.userId.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  });

  await t.test('a message sent through the homeserver arrives live, in the timeline and the order', async () => {
    await page.click(`[data-room-id="${bravo}"]`);
    await eventually('Bravo open', async () => ((await page.textContent('#room-title')) === 'Bravo' ? true : undefined));
    await alice.sendMessage(bravo, 'hello from the homeserver');
    await expectNames(page, 'all', ['Bravo', 'Invitation', 'Alpha', 'Team', 'Charlie'], 'Bravo on top');
    await eventually('the message in the timeline', async () =>
      (await page.$$eval('#timeline .body', (nodes) => nodes.map((n) => n.textContent))).includes('hello from the homeserver')
        ? true
        : undefined,
    );
  });

  await t.test("the open room's timeline holds each event once, oldest first", async () => {
    const ids = await page.$$eval('#timeline li', (nodes) => nodes.map((n) => n.getAttribute('data-event-id')));
    assert.equal(new Set(ids).size, ids.length, 'no event twice');
    const bodies = await page.$$eval('#timeline .body', (nodes) => nodes.map((n) => n.textContent));
    assert.equal(bodies[0], 'm.room.create');
    assert.equal(bodies.at(-1), 'hello from the homeserver');
  });

  // The README's picture: every room, the open room and the inspector.
  await mkdir(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });

  await t.test('a narrower range: the list follows, the count stays', async () => {
    await page.click('#request-editor summary');
    const lists = JSON.parse(await page.inputValue('#lists-json'));
    lists.all.ranges = [[0, 1]];
    await page.fill('#lists-json', JSON.stringify(lists, null, 2));
    await page.getByRole('button', { name: 'Apply' }).click();
    await expectNames(page, 'all', ['Bravo', 'Invitation'], 'the first two rooms only');
    assert.equal(await page.textContent('[data-list="all"] h3 .count'), '(5)');
  });

  await t.test('a request the proxy refuses is shown, not retried, until it is changed', async () => {
    const lists = JSON.parse(await page.inputValue('#lists-json'));
    await page.fill('#lists-json', JSON.stringify({ all: { ...lists.all, ranges: [[5, 1]] } }));
    await page.getByRole('button', { name: 'Apply' }).click();
    await eventually('the refusal shown', async () => ((await page.textContent('#status'))?.includes('refused') ? true : undefined));
    const exchanges = await page.$$eval('#inspector li', (nodes) => nodes.length);
    assert.match((await page.textContent('#inspector li:first-child summary')) ?? '', / 400 /);
    await page.fill('#lists-json', JSON.stringify(lists));
    await page.getByRole('button', { name: 'Apply' }).click();
    await expectNames(page, 'all', ['Bravo', 'Invitation'], 'the list back');
    assert.ok((await page.$$eval('#inspector li', (nodes) => nodes.length)) <= exchanges + 3, 'no retries of the refused request');
    // The browser reports the refused request as a failed load; that one was meant.
    assert.ok(
      problems.every((p) => p.includes('400')),
      JSON.stringify(problems),
    );
    problems.length = 0;
  });

  await t.test('to_device is off unless asked for', async () => {
    assert.equal(await page.isChecked('input[name="ext"][value="to_device"]'), false);
    const request = JSON.parse((await page.textContent('#inspector li:first-child pre')) ?? '{}');
    assert.deepEqual(request.request.body.extensions, {});
  });

  await t.test('the inspector shows the exchanges, newest first, and never the token', async () => {
    const summaries = await page.$$eval('#inspector summary', (nodes) => nodes.map((n) => n.textContent ?? ''));
    assert.ok(summaries.length >= 3, `${summaries.length} exchanges shown`);
    assert.match(summaries[0] ?? '', /200/);
    const html = await page.content();
    assert.equal(html.includes(alice.accessToken), false, 'the token is nowhere in the page');
    assert.deepEqual(problems, [], 'no script errors and no Content-Security-Policy violations');
  });

  await t.test('log in with a user and password through the proxy', async () => {
    const localpart = `pagecarol-${randomBytes(4).toString('hex')}`;
    const password = randomBytes(12).toString('hex');
    const carol = await requestJson('POST', `${hsUrl}/_matrix/client/v3/register`, {
      body: { username: localpart, password, auth: { type: 'm.login.dummy' } },
    });
    await requestJson('POST', `${hsUrl}/_matrix/client/v3/createRoom`, { token: carol.access_token, body: { name: 'Carol’s room' } });
    const second = await browser.context.newPage();
    await second.goto(`${proxy.url}/client/`);
    await second.getByText('Or log in with a user and password').click();
    await second.getByLabel('User').fill(localpart);
    await second.getByLabel('Password').fill(password);
    await second.getByRole('button', { name: 'Log in and sync' }).click();
    await expectNames(second, 'all', ['Carol’s room'], "Carol's rooms");
    assert.match((await second.textContent('#whoami')) ?? '', new RegExp(`^@${localpart}:`));
    assert.equal(await second.inputValue('#login-password'), '', 'the password is not kept in the form');
    await second.close();
  });

  await page.click('#request-editor summary');
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: PHONE_SCREENSHOT });
});
