/* wsserver browser client; docs/CLIENTS.md. A classic script, or `import "./client.js"`
 * (client.mjs has the named export): both define globalThis.WsServerClient.
 * A Link holds one WebSocket for its ports (tabs), in the page, in a SharedWorker
 * (client-worker.js) or in a leader tab; a WsServerClient is one tab's view of it. */
(() => {
"use strict";
const G = globalThis;
const VERSION = "1"; // of the tab <-> link messages: tabs only share a worker of their version
const FINAL = [4003, 4004]; // kicked, replaced: a retry cannot fix them
const REFUSED = [1002, 1003, 1007, 1008, 1009, 1010]; // the hub refused a frame we sent
const DEFAULTS = {
  queueLimit: 1000, requestTimeout: 10000, backoffBase: 500, backoffCap: 30000,
  maxRetries: null, stableAfter: 10000, liveness: 65000, probeTimeout: 5000,
  connectTimeout: 10000, autoAck: false, lastSeq: null,
};
const LINK_OPTIONS = Object.keys(DEFAULTS).concat("url", "deviceId", "deviceInfo");

class WsServerError extends Error {
  constructor(name, message, extra) { super(message); this.name = name; Object.assign(this, extra); }
}
const fail = (name, code, reason) =>
  new WsServerError(name, reason || name, { code: code ?? null, reason: reason || "" });

const hex = (n) => Array.from(G.crypto.getRandomValues(new Uint8Array(n)),
  (b) => b.toString(16).padStart(2, "0")).join("");
const key = (v) => (v == null ? null : String(v));
const undelivered = (m) => ("status" in m.data ? m.data.status : "sent") === "sent";
const later = (fn) => Promise.resolve().then(fn);
const claims = (jwt) => JSON.parse(atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
const exp = (jwt) => { // a JWT's exp (unverified): which of the tabs' tokens lives longest
  try { return claims(jwt).exp ?? Infinity; } catch { return jwt ? 0 : -1; }
};

// seq bookkeeping as wsserver/client/inbox.py: each message once, in seq order
class Inbox {
  constructor(last) { this.last = last ?? null; this.syncing = false; this.me = null; this.held = new Map(); this.recent = new Set(); }
  start() { this.syncing = true; this.fresh = this.last == null; this.held = new Map(); }
  lost() { this.syncing = false; this.held = new Map(); }
  seen(id) {
    if (id == null) return false;
    if (this.recent.has(id)) return true;
    this.recent.add(id);
    if (this.recent.size > 4096) this.recent.delete(this.recent.values().next().value);
    return false;
  }
  receive(m) { // -> [deliver, ack]
    const d = m.data;
    if (!d || typeof d !== "object") return [[m], []];
    const seq = d.seq, me = this.me;
    if (!me || key(d.to_user_id) !== me[0] || key(d.to_user_type) !== me[1] || !Number.isInteger(seq)) {
      return [this.seen(d.message_id) ? [] : [m], []];
    }
    if (this.syncing) {
      if (!this.held.has(seq) || undelivered(m)) this.held.set(seq, m);
      return [[], []];
    }
    if (this.last != null && seq <= this.last) return [[], undelivered(m) ? [d.message_id] : []];
    this.last = seq;
    return [[m], [d.message_id]];
  }
  finish() { // the sync ended: what was held, in seq order
    this.syncing = false;
    const held = this.held, floor = this.last, out = [], ack = [];
    this.held = new Map();
    for (const seq of [...held.keys()].sort((a, b) => a - b)) {
      const m = held.get(seq);
      if (floor != null && seq <= floor) { if (undelivered(m)) ack.push(m.data.message_id); continue; }
      if (this.fresh && !undelivered(m)) continue; // read or delivered before this client's time
      out.push(m); ack.push(m.data.message_id);
    }
    if (held.size) this.last = Math.max(this.last || 0, ...held.keys());
    return [out, ack];
  }
}

// one connection kept up for its ports; the rules of wsserver/client/policy.py
class Link {
  constructor(o) {
    this.o = { ...DEFAULTS, ...o };
    this.random = o.random || Math.random;
    this.ports = new Set();
    this.book = new Map(); // request id -> {id, t, port | cb, resend, sent, done}
    this.queue = []; // encoded frames and book entries
    this.rooms = new Map(); // room -> Set of ports that joined it
    this.inbox = new Inbox(this.o.lastSeq);
    this.state = o.resume ? "reconnecting" : "connecting";
    this.tasks = new Map(); // task_id -> the latest *_start / *_progress of a running task
    this.n = 0; this.c = 0; this.prefix = hex(4); this.up = 0; this.user = null; this.asks = [];
  }

  handle(port, op) {
    switch (op.o) {
      case "hello":
        this.ports.add(port);
        port.gt = op.gt;
        if (op.token && exp(op.token) >= exp(this.token)) this.token = op.token; // the longest-lived
        port.post({ o: "state", hi: 1, s: { state: this.state }, user: this.user, seq: this.inbox.last });
        for (const m of this.tasks.values()) port.post({ o: "msg", m }); // as the hub does at connect
        if (!this.started) { this.started = 1; this.token ? this._open() : this._ask((t, r) => this._openWith(t, r)); }
        return;
      case "send":
        if (!this._push(op.t)) port.post({ o: "fail", name: "QueueFull" });
        return;
      case "req": {
        if (op.room != null) this._hold(port, op.room);
        const e = { id: op.id, t: op.t, port, resend: op.resend, room: op.room };
        this.book.set(op.id, e);
        if (!this._push(e)) { this._drop(e); this._reply(e, null, fail("QueueFull", null, "outbound queue full")); }
        return;
      }
      case "join": // a re-join after a tab re-attached
        if (this._hold(port, op.room) && this.up) this._internal("join_room", { room: op.room });
        return;
      case "leave": {
        const holders = this.rooms.get(op.room);
        holders?.delete(port);
        if (holders?.size) { // another tab still holds the room: the connection stays in it
          port.post({ o: "reply", id: op.id, m: { type: "room_left", data: { room: op.room, shared: true }, id: op.id, timestamp: Date.now() } });
          return;
        }
        this.rooms.delete(op.room);
        return this.handle(port, { o: "req", id: op.id, t: op.t });
      }
      case "cancel": { // the tab stopped waiting: a request not yet written never is
        const e = this.book.get(op.id);
        if (e) this._drop(e);
        return;
      }
      case "token": {
        const asks = this.asks;
        this.asks = [];
        if (op.token) this.token = op.token;
        for (const fn of asks) fn(op.token, op.reason);
        return;
      }
      case "wake": return this.wake();
      case "bye": return this.detach(port);
    }
  }

  detach(port) {
    if (!this.ports.delete(port)) return;
    for (const e of this.book.values()) if (e.port === port) this._drop(e);
    for (const [room, holders] of this.rooms) {
      if (holders.delete(port) && !holders.size) {
        this.rooms.delete(room);
        if (this.up) this._internal("leave_room", { room });
      }
    }
    if (this.asker === port && this.asks.length) { const asks = this.asks; this.asks = []; for (const fn of asks) this._ask(fn); }
    if (!this.ports.size) this.close();
  }

  close() {
    if (this.ended) return;
    const ws = this.ws;
    if (ws) { this._forget(ws); try { ws.close(1000, "closed by the client"); } catch { /* already closing */ } }
    this._end(1000, "closed by the client");
  }

  // the browser came back online or a tab became visible: retry now, or check the link
  wake() {
    if (this.waiting) { clearTimeout(this.waiting); this.waiting = 0; this._open(); }
    else if (this.up && !this.probe && Date.now() - this.last > this.o.probeTimeout) this._probe();
  }

  // -- one connection

  _open() {
    if (this.ended) return;
    let ws;
    try { ws = this.ws = new WebSocket(this.o.url); } catch (e) { return this._end(null, String(e)); }
    this.inbox.start();
    this.up = this.probe = 0;
    this.t0 = this.last = Date.now();
    const o = this.o, reg = o.deviceId != null || o.deviceInfo != null;
    ws.onopen = () => {
      const data = { token: this.token };
      if (o.deviceId != null) data.device_id = o.deviceId;
      if (o.deviceInfo != null) data.device_info = o.deviceInfo;
      ws.send(JSON.stringify({ type: reg ? "register" : "auth", data }));
    };
    ws.onmessage = (e) => { this.last = Date.now(); this._frame(e.data); };
    ws.onclose = (e) => this._lost(ws, e.code, e.reason);
    this._tick();
  }

  _forget(ws) { ws.onopen = ws.onmessage = ws.onclose = null; if (ws === this.ws) this.ws = null; }

  // the connect timeout, then liveness: no data for `liveness` ms sends a `ping` that
  // must bring data within `probeTimeout` (a throttled timer only checks late)
  _tick() {
    clearTimeout(this.timer);
    if (!this.ws) return;
    const o = this.o, now = Date.now();
    let due;
    if (!this.up) due = this.t0 + o.connectTimeout;
    else if (this.probe && this.last < this.probe) due = this.probe + o.probeTimeout;
    else {
      this.probe = 0;
      if (!o.liveness) return;
      due = this.last + o.liveness;
      if (now >= due) return this._probe();
    }
    if (now >= due) {
      const ws = this.ws;
      this._forget(ws);
      try { ws.close(); } catch { /* closing anyway */ }
      return this._lost(ws, null, this.up ? "no data from the hub" : "no answer from the hub");
    }
    this.timer = setTimeout(() => this._tick(), due - now);
  }

  _probe() {
    this.probe = Date.now();
    this.queue.unshift(this._entry("ping"));
    this._flush();
    this._tick();
  }

  _lost(ws, code, reason) {
    if (this.ended || (this.ws && this.ws !== ws)) return;
    this._forget(ws);
    clearTimeout(this.timer);
    const o = this.o, up = this.up;
    this.up = 0;
    this.inbox.lost();
    if (up) { this.asked = 0; if (Date.now() - up >= o.stableAfter) this.n = 0; }
    let next = "retry", delay = 0;
    if (FINAL.includes(code)) next = "stop";
    else if (code === 4001) next = this.asked || !this._asker() ? "stop" : "token";
    else if (o.maxRetries != null && this.n >= o.maxRetries) next = "stop";
    else {
      const high = Math.min(o.backoffCap, o.backoffBase * 2 ** Math.min(this.n++, 62));
      delay = Math.min(high, Math.max(0, this.random() * high));
    }
    // requests written on the lost connection: sent again when they may be, else failed
    const resend = next !== "stop" && !REFUSED.includes(code), again = [];
    for (const e of [...this.book.values()]) {
      if (e.cb) this._drop(e); // sync, re-joins, probes: the next connection makes its own
      else if (e.sent) {
        e.sent = false;
        if (resend && e.resend) again.push(e);
        else { this._drop(e); this._reply(e, null, fail("ConnectionLost", code, reason)); }
      }
    }
    this.queue.unshift(...again);
    if (next === "stop") return this._end(code, reason);
    this._state("reconnecting", { code, reason, delay, attempt: this.n });
    if (next === "token") { this.asked = 1; this._ask((t, r) => this._openWith(t, r)); }
    else this.waiting = setTimeout(() => { this.waiting = 0; this._open(); }, delay);
  }

  _end(code, reason) {
    if (this.ended) return;
    this.ended = 1;
    clearTimeout(this.timer); clearTimeout(this.waiting);
    for (const e of [...this.book.values()]) { this._drop(e); this._reply(e, null, fail("ClientClosed", code, reason)); }
    this.queue = [];
    this._state("disconnected", { code, reason });
    this.onend?.();
  }

  _state(state, info) {
    const s = { state, previous: this.state, code: null, reason: "", delay: null, attempt: 0, ...info };
    this.state = state;
    this._all({ o: "state", s, user: this.user, seq: this.inbox.last });
  }

  // -- tokens: a port with getToken is asked; its answer comes back as a "token" op

  _asker() { for (const p of this.ports) if (p.gt) return p; }

  _ask(fn) {
    const port = this._asker();
    if (!port) return fn(null, "no token and no getToken");
    this.asks.push(fn);
    if (this.asks.length === 1) { this.asker = port; port.post({ o: "ask" }); }
  }

  _openWith(token, reason) { token ? this._open() : this._end(null, reason || "getToken returned no token"); }

  // -- inbound

  _frame(raw) {
    let m;
    try { m = JSON.parse(raw); } catch { return; } // binary or not JSON: ignored
    if (!m || typeof m !== "object") return;
    const type = m.type, e = typeof m.id === "string" && this.book.get(m.id);
    if (type === "connected" && !this.up) return this._greeted(m);
    if (e) {
      this.book.delete(e.id);
      e.done = true;
      return e.cb ? e.cb(m) : this._reply(e, m);
    }
    if (type === "new_message") return this._out(this.inbox.receive(m));
    if (type === "token_expiring" && this._asker()) {
      this._ask((token) => token && this._internal("refresh", { token }, (r) => this._msg(r)));
    }
    this._msg(m);
  }

  _greeted(m) {
    this.up = Date.now();
    this.user = m.data && typeof m.data === "object" ? m.data : {};
    this.inbox.me = [key(this.user.user_id), key(this.user.user_type)];
    const first = [this._sync(this.inbox.last || 0)];
    for (const room of this.rooms.keys()) first.push(this._entry("join_room", { room }));
    this.queue.unshift(...first);
    this._state("connected");
    this._msg(m);
    this._flush();
    this._tick();
  }

  _sync(last) {
    return this._entry("sync", { last_seq: last }, (m) => {
      const d = m.data;
      if (m.type === "sync_done" && d && d.has_more && Number.isInteger(d.last_seq)) {
        this.queue.unshift(this._sync(d.last_seq)); // the next page
        return this._flush();
      }
      this._out(this.inbox.finish());
    });
  }

  _out([deliver, ack]) {
    for (const m of deliver) this._msg(m);
    if (this.o.autoAck) {
      for (const id of ack) if (id != null) this._push(JSON.stringify({ type: "message_delivered", data: { message_id: id } }), 1);
    }
  }

  _msg(m) {
    const task = /_(start|progress|complete)$/.exec(m.type), id = m.data?.task_id;
    if (task && id != null) {
      this.tasks.delete(id);
      if (task[1] !== "complete") this.tasks.set(id, m);
      if (this.tasks.size > 100) this.tasks.delete(this.tasks.keys().next().value);
    }
    this._all({ o: "msg", m, seq: this.inbox.last });
  }

  // to every port; ports of one BroadcastChannel get one message for all of them
  _all(msg) {
    let channels;
    for (const p of this.ports) p.bc ? (channels ||= new Set()).add(p.bc) : p.post(msg);
    if (channels) for (const bc of channels) bc.postMessage({ to: "*", m: msg });
  }

  _reply(e, m, error) {
    if (e.room != null && (error || m.type === "error")) this.rooms.get(e.room)?.delete(e.port);
    if (!e.port || !this.ports.has(e.port)) return;
    e.port.post(error ? { o: "fail", id: e.id, name: error.name, code: error.code, reason: error.reason } : { o: "reply", id: e.id, m });
  }

  // -- outbound

  _hold(port, room) {
    let holders = this.rooms.get(room);
    if (!holders) this.rooms.set(room, (holders = new Set()));
    const fresh = !holders.size;
    holders.add(port);
    return fresh;
  }

  _entry(type, data, cb = () => {}) {
    const id = this.prefix + "-" + ++this.c, frame = { type, id };
    if (data !== undefined) frame.data = data;
    const e = { id, t: JSON.stringify(frame), cb };
    this.book.set(id, e);
    return e;
  }

  _internal(type, data, cb) { this._push(this._entry(type, data, cb), 1); }

  _drop(e) { e.done = true; this.book.delete(e.id); }

  _push(item, force) {
    if (!force && this.queue.length >= this.o.queueLimit) return false;
    this.queue.push(item);
    this._flush();
    return true;
  }

  _flush() {
    const ws = this.ws;
    while (this.up && ws && ws.readyState === 1 && this.queue.length) {
      const item = this.queue.shift();
      if (typeof item === "string") ws.send(item);
      else if (!item.done) { item.sent = true; ws.send(item.t); }
    }
  }
}

const who = (token) => { // whose token (unverified: it only picks the shared connection)
  try {
    const c = claims(token);
    return JSON.stringify([c.user_type, c.user_id ?? c.sub, c.group_id]);
  } catch {
    let h = 2166136261;
    for (const ch of String(token)) h = Math.imul(h ^ ch.charCodeAt(0), 16777619);
    return "#" + (h >>> 0).toString(16);
  }
};
const tabLock = (tab, fn) => G.navigator?.locks?.request("wsserver tab " + tab, fn);

// one tab's client: calls become ops to its Link, waiting in _pre until it answers hello
class WsServerClient {
  constructor(url, options = {}) {
    const o = (this.options = { ...DEFAULTS, ...options, url: String(url) });
    this.state = "connecting";
    this.lastSeq = o.lastSeq;
    this.user = null;
    this._h = new Map(); this._pending = new Map(); this._rooms = new Set(); this._pre = []; this._off = [];
    this._prefix = hex(4); this._n = 0; this._tab = hex(8);
    if (G.document) {
      const listen = (target, type, fn) => { target.addEventListener(type, fn); this._off.push(() => target.removeEventListener(type, fn)); };
      const wake = () => this._ready && this._send({ o: "wake" });
      listen(G, "online", wake);
      listen(document, "visibilitychange", () => document.visibilityState === "visible" && wake());
      if (o.shared) {
        listen(G, "pagehide", () => this._ready && this._send({ o: "bye" }));
        listen(G, "pageshow", (e) => e.persisted && this._send && this._attach(this._send));
      }
    }
    o.shared ? this._share() : this._local();
  }

  on(type, fn) {
    if (!this._h.has(type)) this._h.set(type, []);
    this._h.get(type).push(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    const fns = this._h.get(type) || [], i = fns.indexOf(fn);
    if (i >= 0) fns.splice(i, 1);
  }

  send(type, data) {
    this._check();
    const frame = { type };
    if (data !== undefined) frame.data = data;
    this._full = null; this._sending = 1;
    try { this._post({ o: "send", t: JSON.stringify(frame) }); } finally { this._sending = 0; }
    if (this._full) throw this._full;
  }

  request(type, data, { timeout = this.options.requestTimeout, resend = false } = {}) {
    return this._req(type, data, timeout, { resend });
  }

  sendMessage(toUserId, text, extra = {}, { timeout = null } = {}) {
    const data = toUserId == null ? {} : { to_user_id: toUserId };
    data.message = text;
    data.client_msg_id = G.crypto.randomUUID ? crypto.randomUUID() : hex(16);
    Object.assign(data, extra);
    return this._req("send_message", data, timeout, { resend: true }).then((m) => (m.data && typeof m.data === "object" ? m.data : {}));
  }

  markDelivered(messageId) { this.send("message_delivered", { message_id: messageId }); }

  markRead(messageId) { this.send("message_read", { message_id: messageId }); }

  joinRoom(room, { timeout = this.options.requestTimeout } = {}) {
    this._check();
    this._rooms.add(room);
    return this._req("join_room", { room }, timeout, { room }).catch((e) => { this._rooms.delete(room); throw e; });
  }

  leaveRoom(room, { timeout = this.options.requestTimeout } = {}) {
    this._rooms.delete(room);
    return this._req("leave_room", { room }, timeout, { o: "leave", room });
  }

  roomMessage(room, data, { timeout = this.options.requestTimeout } = {}) {
    return this._req("room_message", { ...(typeof data === "string" ? { text: data } : data), room }, timeout);
  }

  close() {
    if (this._closed) return;
    if (this._ready) this._send({ o: "bye" });
    const previous = this.state;
    this._end(fail("ClientClosed", 1000, "closed by the client"));
    if (previous !== "disconnected") {
      this.state = "disconnected";
      this._emit("state", { state: "disconnected", previous, code: 1000, reason: "closed by the client", delay: null, attempt: 0 });
    }
  }

  // -- requests

  _req(type, data, timeout, extra) {
    return new Promise((resolve, reject) => {
      this._check();
      const id = this._prefix + "-" + ++this._n, frame = { type };
      if (data !== undefined) frame.data = data;
      frame.id = id;
      const op = { o: "req", id, t: JSON.stringify(frame), ...extra }, r = { resolve, reject, op };
      this._pending.set(id, r);
      if (timeout != null) {
        r.timer = setTimeout(() => {
          const i = this._pre.indexOf(op);
          if (i >= 0) this._pre.splice(i, 1);
          else if (r.posted) this._send({ o: "cancel", id });
          this._settle(id, fail("RequestTimeout", null, `no reply to ${type} within ${timeout} ms`));
        }, timeout);
      }
      try { this._post(op); } catch (e) { this._settle(id, e); }
    });
  }

  _settle(id, error, reply) {
    const r = this._pending.get(id);
    if (!r) return;
    this._pending.delete(id);
    clearTimeout(r.timer);
    error ? r.reject(error) : r.resolve(reply);
  }

  _check() { if (this._closed) throw this._closed; }

  _post(op) {
    if (!this._ready) {
      if (op.o !== "cancel" && this._pre.length >= this.options.queueLimit) throw fail("QueueFull", null, "outbound queue full");
      return this._pre.push(op);
    }
    const r = op.id && this._pending.get(op.id);
    if (r) r.posted = 1;
    this._send(op);
  }

  _emit(type, arg) {
    const fns = [...(this._h.get(type) || []), ...(type === "state" ? [] : this._h.get("*") || [])];
    for (const fn of fns) {
      try { fn(arg); } catch (e) { (G.reportError || console.error)(e); }
    }
  }

  // -- from the link

  _in(m) {
    if (this._closed) return;
    if (m.seq != null) this.lastSeq = m.seq;
    if (m.user) this.user = m.user;
    if (m.o === "msg") return this._emit(m.m.type, m.m);
    if (m.o === "ask") {
      const answer = (token, reason) => this._send({ o: "token", token: typeof token === "string" && token ? token : null, reason });
      return later(() => this.options.getToken()).then((t) => answer(t, "getToken returned no token"), (e) => answer(null, "getToken failed: " + e));
    }
    if (m.o === "state") {
      if (m.hi && !this._ready) this._attached();
      const s = m.s, previous = this.state;
      if (s.state !== previous || (s.state === "reconnecting" && !m.hi)) {
        this.state = s.state;
        this._emit("state", { code: null, reason: "", delay: null, attempt: 0, ...s, previous });
      }
      if (s.state === "disconnected") this._end(fail("ClientClosed", s.code, s.reason));
      return;
    }
    // reply or fail
    if (!this._pending.has(m.id)) {
      if (m.o === "reply") this._emit(m.m.type, m.m); // answered after the tab stopped waiting
      else if (m.id == null) {
        const e = fail("QueueFull", null, "outbound queue full");
        this._sending ? (this._full = e) : console.warn("wsserver: frame dropped: " + e.message);
      }
      return;
    }
    if (m.o === "fail") return this._settle(m.id, fail(m.name, m.code, m.reason));
    const d = m.m.data || {};
    this._settle(m.id, m.m.type === "error" ? new WsServerError("RequestError", m.m.error || "error", {
      code: d.code ?? null, field: d.field ?? null, ref: d.ref ?? null, reason: m.m.error || "", reply: m.m,
    }) : null, m.m);
  }

  _attached() {
    this._ready = 1;
    for (const [id, r] of this._pending) {
      if (!r.posted) continue;
      if (r.op.resend) this._send(r.op);
      else this._settle(id, fail("ConnectionLost", null, "the tab holding the connection went away"));
    }
    for (const room of this._rooms) this._send({ o: "join", room });
    const pre = this._pre;
    this._pre = [];
    for (const op of pre) this._post(op);
  }

  _end(error) {
    if (this._closed) return;
    this._closed = error;
    for (const id of [...this._pending.keys()]) this._settle(id, error);
    this._pre = [];
    for (const off of this._off) off();
    this._bye?.();
    this._unlock?.();
  }

  // -- where the link lives

  _attach(send) {
    this._ready = 0;
    this._send = send;
    const opts = {};
    for (const k of LINK_OPTIONS) if (this.options[k] !== undefined) opts[k] = this.options[k];
    opts.lastSeq = this.lastSeq;
    opts.resume = this.state !== "connecting";
    send({ o: "hello", gt: !!this.options.getToken, token: this.options.token, tab: this._tab, opts });
  }

  _local() { // the link in this page
    const port = { post: (m) => this._in(m) };
    let link;
    this._attach((op) => {
      if (!link) link = new Link({ ...op.opts, random: this.options.random });
      link.handle(port, op);
    });
    return link;
  }

  async _share() {
    const o = this.options;
    try {
      if (!o.token && o.getToken) o.token = await o.getToken();
    } catch (e) {
      return this._in({ o: "state", s: { state: "disconnected", reason: "getToken failed: " + e } });
    }
    const name = `wsserver ${VERSION} ${o.url} ${who(o.token)}`;
    // held while the tab lives: the link holder learns of its end
    await new Promise((held) => tabLock(this._tab, () => { held(); return new Promise((r) => (this._unlock = r)); }) || held());
    if (this._closed) return this._unlock?.();
    if (G.SharedWorker) {
      try { return this._worker(name); } catch { /* a worker on another origin, or forbidden */ }
    }
    this._leader(name);
  }

  _worker(name) {
    const o = this.options, hub = new URL(o.url, G.location.href);
    const url = new URL(o.workerUrl || WsServerClient.workerUrl || `${hub.protocol === "wss:" ? "https" : "http"}://${hub.host}/client-worker.js`, G.location.href);
    url.searchParams.set("v", VERSION);
    const worker = new SharedWorker(url.href, { name }), port = worker.port;
    worker.onerror = () => { // the worker did not load: the next best way
      if (!this._ready && !this._closed) { port.close(); this._leader(name); }
    };
    port.onmessage = (e) => this._in(e.data);
    this._bye = () => port.close();
    this._attach((op) => port.postMessage(op));
  }

  // no SharedWorker: the tab holding the lock `name` holds the link, the others reach it
  // on the BroadcastChannel `name` ({from, op} up, {to, m} down); the lock passes on
  _leader(name) {
    if (!G.navigator?.locks || !G.BroadcastChannel) return this._local();
    const ch = new BroadcastChannel(name), me = this._tab, ports = new Map(), abort = new AbortController();
    let link = null, leader = null;
    ch.onmessage = ({ data: d }) => {
      if (d.from) {
        if (!link || link.ended) return;
        let port = ports.get(d.from);
        if (!port && d.op.o === "hello") {
          ports.set(d.from, (port = { post: (m) => ch.postMessage({ to: d.from, m }), bc: ch }));
          tabLock(d.from, () => link.detach(port));
        }
        if (port) link.handle(port, d.op);
      } else if (d.q) {
        if (link) ch.postMessage({ leader: me });
      } else if (d.leader) {
        if (!link && d.leader !== leader && !this._closed) {
          // a new leader: the old one went, and its connection with it
          if (leader && this.state === "connected") this._in({ o: "state", s: { state: "reconnecting", reason: "the tab holding the connection went away" } });
          leader = d.leader;
          this._attach((op) => ch.postMessage({ from: me, op }));
        }
      } else if (d.to === me || (d.to === "*" && this._ready)) this._in(d.m);
    };
    this._bye = () => { abort.abort(); if (!link) ch.close(); };
    ch.postMessage({ q: me });
    navigator.locks.request(name, { signal: abort.signal }, () => new Promise((release) => {
      leader = me;
      link = this._local();
      link.onend = () => { release(); ch.close(); };
      if (this._closed) link.close();
      ch.postMessage({ leader: me });
    })).catch(() => {});
  }
}

// the SharedWorker (client-worker.js): one Link per worker, named by URL and user
WsServerClient._serve = (scope) => {
  let link;
  scope.onconnect = (e) => {
    const mp = e.ports[0], port = { post: (m) => mp.postMessage(m) };
    mp.onmessage = ({ data: op }) => {
      if (op.o === "hello") {
        if (!link || link.ended) link = new Link(op.opts);
        port.link = link;
        tabLock(op.tab, () => port.link.detach(port)); // the tab died without a word
      }
      port.link?.handle(port, op);
    };
  };
};

const script = G.document?.currentScript;
WsServerClient.workerUrl = script?.src ? new URL("client-worker.js", script.src).href : null;
WsServerClient.Error = WsServerError;
WsServerClient.VERSION = VERSION;
G.WsServerClient = WsServerClient;
})();
