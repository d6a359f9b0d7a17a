// The /client/ page: one MSC4186 connection of its own (its own conn_id, so the device's real
// clients keep theirs), drawn live. Everything it receives is text to the DOM (textContent),
// never markup. The token goes only to this proxy, in the Authorization header.
import {
  applyResponse,
  buildRequest,
  createState,
  DEFAULT_LISTS,
  EXTENSIONS,
  eventText,
  formatBytes,
  formatJson,
  keepLists,
  listRooms,
  parseEditedObject,
  roomDisplayName,
  summarizeExchange,
} from './sync-state.js';

const SYNC_PATH = '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync';
const LOGIN_PATH = '/_matrix/client/v3/login';
const STATUS_PATH = 'status';
const TOKEN_KEY = 'syncv3-client-page-token';
const INSPECTOR_KEPT = 50;
const STATUS_EVERY_MS = 1000;

const $ = (id) => document.getElementById(id);

function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('data-') || key.startsWith('aria-')) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children.filter((c) => c !== undefined));
  return node;
}

const session = {
  token: undefined,
  connId: `client-page-${crypto.randomUUID().slice(0, 8)}`,
  pos: undefined,
  state: createState(),
  lists: DEFAULT_LISTS,
  roomSubscriptions: {},
  extensions: {},
  timeoutMs: 30_000,
  selectedRoom: undefined,
  running: false,
  /** Each (re)start of the loop gets a new generation; an older loop that wakes up stops. */
  generation: 0,
  inFlight: undefined,
  exchanges: 0,
  /** Aborted by the first answer, so the first-sync line updates at once rather than on its next poll. */
  firstAnswer: new AbortController(),
};

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    });
  });

const authHeaders = () => ({ authorization: `Bearer ${session.token}` });

function setStatus(text) {
  $('status').textContent = text;
}

// ---- the sync loop ----

function restart() {
  session.inFlight?.abort();
  if (session.running) void syncLoop();
}

async function syncLoop() {
  const generation = ++session.generation;
  let failures = 0;
  // The first request after a change answers at once, so the change shows without waiting.
  let timeoutMs = 0;
  while (session.running && generation === session.generation) {
    const controller = new AbortController();
    session.inFlight = controller;
    const body = buildRequest({ ...session, toDeviceSince: session.state.toDeviceSince });
    const params = new URLSearchParams({ timeout: String(timeoutMs) });
    const pos = session.pos;
    if (pos) params.set('pos', pos);
    const started = performance.now();
    let res;
    let text;
    try {
      res = await fetch(`${SYNC_PATH}?${params}`, {
        method: 'POST',
        headers: { ...authHeaders(), 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      text = await res.text();
    } catch (err) {
      if (controller.signal.aborted || generation !== session.generation) return;
      failures++;
      setStatus(`Cannot reach the proxy (${err.message}); retrying.`);
      await sleep(Math.min(30_000, 1000 * 2 ** failures), controller.signal);
      continue;
    }
    if (generation !== session.generation) return;
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    record({ pos, params: Object.fromEntries(params), request: body, status: res.status, ms: performance.now() - started, text, json });
    if (res.ok && json) {
      failures = 0;
      timeoutMs = session.timeoutMs;
      session.pos = json.pos;
      session.firstAnswer.abort();
      applyResponse(session.state, json);
      setStatus(`Connected as ${session.connId}; pos ${session.pos}.`);
      render();
      continue;
    }
    if (json?.errcode === 'M_UNKNOWN_POS') {
      // The proxy forgot the connection (expiry, restart without it): start it afresh.
      session.pos = undefined;
      session.state = createState();
      timeoutMs = 0;
      setStatus('The proxy reset the connection (M_UNKNOWN_POS); starting again.');
      continue;
    }
    if (res.status === 401) {
      signOut(`The token was rejected (${json?.errcode ?? res.status}).`);
      return;
    }
    if (res.status >= 400 && res.status < 500 && res.status !== 429) {
      // The request itself is wrong (an edited list, say): sending it again cannot help.
      setStatus(`The proxy refused the request: ${json?.errcode ?? res.status} ${json?.error ?? ''}. Change it and Apply.`);
      return;
    }
    failures++;
    setStatus(`Sync failed: ${json?.errcode ?? res.status} ${json?.error ?? ''}; retrying.`);
    await sleep(Math.min(30_000, 1000 * 2 ** failures), controller.signal);
  }
}

/** Polls the device's own first-sync progress until it is done. */
async function watchFirstSync(token) {
  const line = $('first-sync');
  while (session.token === token) {
    let status;
    try {
      const res = await fetch(STATUS_PATH, { headers: authHeaders() });
      if (!res.ok) return;
      status = await res.json();
    } catch {
      return;
    }
    $('whoami').textContent = `${status.user_id} · device ${status.device_id} · connection ${session.connId}`;
    const progress = status.initial_sync;
    if (!progress) return;
    line.hidden = false;
    const seconds = progress.waited_ms === undefined ? undefined : (progress.waited_ms / 1000).toFixed(1);
    if (progress.done) {
      const rooms = progress.rooms === undefined ? '' : `; it held ${progress.rooms} rooms`;
      line.textContent = `The device's first sync is done${seconds === undefined ? '' : ` (took ${seconds} s${rooms})`}.`;
      return;
    }
    line.textContent = `Waiting for the device's first sync from the homeserver: ${seconds ?? '?'} s, ${formatBytes(progress.bytes_received)} received so far.`;
    await sleep(STATUS_EVERY_MS, session.firstAnswer.signal);
  }
}

// ---- the inspector ----

function record({ pos, params, request, status, ms, text, json }) {
  const bytes = new TextEncoder().encode(text).length;
  const exchange = {
    at: new Date().toISOString(),
    request: { method: 'POST', path: SYNC_PATH, query: params, body: request },
    response: { status, ms: Math.round(ms), bytes, body: json ?? text },
  };
  const copy = element('button', { type: 'button', class: 'plain', text: 'Copy as JSON' });
  const pre = element('pre', { text: JSON.stringify(exchange, null, 2) });
  copy.addEventListener('click', () => {
    navigator.clipboard?.writeText(pre.textContent).then(
      () => (copy.textContent = 'Copied'),
      () => (copy.textContent = 'Copy failed: select the text'),
    );
  });
  const summary = element('summary', {
    text: `${exchange.at.slice(11, 23)} · ${summarizeExchange({ pos, status, ms, bytes, response: json })}`,
  });
  const item = element('li', { class: 'exchange' }, element('details', {}, summary, copy, pre));
  const list = $('inspector');
  list.prepend(item);
  session.exchanges++;
  list.start = session.exchanges;
  while (list.children.length > INSPECTOR_KEPT) list.lastElementChild.remove();
}

// ---- rendering ----

const avatarUrls = new Map();

/** An mxc avatar, fetched with the token (authenticated media) and shown from memory. */
function avatarImage(mxc) {
  const match = /^mxc:\/\/([^/]+)\/([^/?#]+)$/.exec(mxc ?? '');
  if (!match) return undefined;
  if (!avatarUrls.has(mxc)) {
    const path = `/_matrix/client/v1/media/thumbnail/${encodeURIComponent(match[1])}/${encodeURIComponent(match[2])}?width=64&height=64&method=crop`;
    avatarUrls.set(
      mxc,
      fetch(path, { headers: authHeaders() })
        .then((res) => (res.ok ? res.blob() : undefined))
        .then((blob) => blob && URL.createObjectURL(blob))
        .catch(() => undefined),
    );
  }
  const img = element('img', { alt: '' });
  void avatarUrls.get(mxc).then((url) => {
    if (url) img.src = url;
    else img.remove();
  });
  return img;
}

function avatar(room, name) {
  const mxc = room?.avatar ?? (room?.heroes?.length === 1 ? room.heroes[0].avatar_url : undefined);
  const box = element('span', { class: 'avatar', 'aria-hidden': 'true', text: [...name.replace(/^[#!@]/, '')][0]?.toUpperCase() ?? '?' });
  const img = avatarImage(mxc);
  if (img) box.append(img);
  return box;
}

function roomButton({ index, roomId, room }) {
  const name = roomDisplayName(roomId, room);
  const meta = element('span', { class: 'room-meta' });
  const badges = [];
  if (room?.invite_state) badges.push(['tag', 'invite']);
  if (room?.is_dm) badges.push(['tag', 'DM']);
  if (room?.highlight_count) badges.push(['highlight', String(room.highlight_count), `${room.highlight_count} highlights`]);
  if (room?.notification_count) badges.push(['', String(room.notification_count), `${room.notification_count} unread`]);
  for (const [kind, text, label] of badges) meta.append(element('span', { class: `badge ${kind}`, text, title: label ?? text }));
  const button = element(
    'button',
    {
      type: 'button',
      class: 'room',
      'data-room-id': roomId,
      'aria-current': String(roomId === session.selectedRoom),
      title: `${index}: ${roomId}`,
    },
    avatar(room, name),
    element('span', { class: 'room-name', text: name }),
    meta,
  );
  button.addEventListener('click', () => selectRoom(roomId));
  return element('li', {}, button);
}

function renderLists() {
  const focused = document.activeElement?.dataset?.roomId;
  const container = $('lists');
  const lists = Object.keys(session.lists).map((name) => {
    const count = session.state.lists.get(name)?.count;
    const heading = element('h3', {}, `${name} `, element('span', { class: 'count', text: `(${count ?? '…'})` }));
    const rooms = element('ol', { class: 'rooms', 'aria-label': `list ${name}` }, ...listRooms(session.state, name).map(roomButton));
    return element('section', { class: 'list', 'data-list': name }, heading, rooms);
  });
  container.replaceChildren(...lists);
  if (focused) container.querySelector(`[data-room-id="${CSS.escape(focused)}"]`)?.focus();
}

function renderRoom() {
  const roomId = session.selectedRoom;
  const room = roomId ? session.state.rooms.get(roomId) : undefined;
  $('room-title').textContent = roomId ? roomDisplayName(roomId, room) : 'No room selected';
  const events = room?.timeline ?? [];
  $('timeline').replaceChildren(
    ...events.map((event) =>
      element(
        'li',
        { 'data-event-id': event.event_id ?? '' },
        element('span', { class: 'sender', text: event.sender ?? '' }),
        element('span', { class: 'body', text: eventText(event) }),
      ),
    ),
  );
  const rows = [...(room?.state?.values() ?? [])]
    .sort((a, b) => `${a.type}\u0000${a.state_key}`.localeCompare(`${b.type}\u0000${b.state_key}`))
    .map((event) =>
      element(
        'tr',
        {},
        element('td', { text: event.type }),
        element('td', { text: event.state_key }),
        element('td', { text: JSON.stringify(event.content) }),
      ),
    );
  $('state').tBodies[0].replaceChildren(...rows);
}

function render() {
  renderLists();
  renderRoom();
}

function selectRoom(roomId) {
  session.selectedRoom = roomId;
  render();
  restart();
}

// ---- signing in and out, and editing the request ----

function start(token) {
  session.token = token;
  session.firstAnswer = new AbortController();
  sessionStorage.setItem(TOKEN_KEY, token);
  session.running = true;
  $('sign-in').hidden = true;
  $('session').hidden = false;
  $('panes').hidden = false;
  $('pause').textContent = 'Pause';
  setStatus('Waiting for the first response…');
  restart();
  void watchFirstSync(token);
}

function signOut(message = '') {
  session.running = false;
  session.generation++;
  session.inFlight?.abort();
  session.token = undefined;
  session.pos = undefined;
  session.state = createState();
  session.selectedRoom = undefined;
  sessionStorage.removeItem(TOKEN_KEY);
  $('sign-in').hidden = false;
  $('session').hidden = true;
  $('panes').hidden = true;
  $('sign-in-error').textContent = message;
  setStatus('Not connected.');
}

$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const token = $('token').value.trim();
  $('token').value = '';
  if (token) start(token);
});

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('sign-in-error').textContent = '';
  try {
    const res = await fetch(LOGIN_PATH, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        type: 'm.login.password',
        identifier: { type: 'm.id.user', user: $('login-user').value },
        password: $('login-password').value,
        initial_device_display_name: 'Sliding sync proxy /client/ page',
      }),
    });
    const json = await res.json().catch(() => ({}));
    if (!res.ok || typeof json.access_token !== 'string') throw new Error(json.error ?? `login failed (${res.status})`);
    $('login-password').value = '';
    start(json.access_token);
  } catch (err) {
    $('sign-in-error').textContent = err.message;
  }
});

$('sign-out').addEventListener('click', () => signOut());

$('pause').addEventListener('click', () => {
  session.running = !session.running;
  $('pause').textContent = session.running ? 'Pause' : 'Resume';
  if (session.running) restart();
  else {
    session.generation++;
    session.inFlight?.abort();
    setStatus('Paused.');
  }
});

function showRequestSettings() {
  $('lists-json').value = formatJson(session.lists);
  $('subscriptions-json').value = formatJson(session.roomSubscriptions);
  for (const box of document.querySelectorAll('input[name="ext"]')) box.checked = Boolean(session.extensions[box.value]);
  $('timeout').value = String(session.timeoutMs);
}

$('request-form').addEventListener('submit', (e) => {
  e.preventDefault();
  try {
    const lists = parseEditedObject($('lists-json').value, 'Lists');
    const roomSubscriptions = parseEditedObject($('subscriptions-json').value, 'Room subscriptions');
    const timeoutMs = Number($('timeout').value);
    if (!Number.isInteger(timeoutMs) || timeoutMs < 0) throw new Error('Timeout: a whole number of milliseconds');
    const extensions = {};
    for (const box of document.querySelectorAll('input[name="ext"]'))
      if (EXTENSIONS.includes(box.value)) extensions[box.value] = box.checked;
    Object.assign(session, { lists, roomSubscriptions, timeoutMs, extensions });
    keepLists(session.state, Object.keys(lists));
    $('request-error').textContent = '';
    render();
    restart();
  } catch (err) {
    $('request-error').textContent = err.message;
  }
});

showRequestSettings();
const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) start(saved);
