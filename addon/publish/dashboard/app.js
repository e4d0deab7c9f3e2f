// The captcha dashboard: recent challenges from /v1/events, kept live from /v1/events/stream (Server-Sent Events
// read with fetch, so the Authorization header goes along), counters from /v1/stats. No libraries, no build step.
// Every text from the proxy goes into the page through textContent: client names and challenge ids come from the
// traffic. Such texts are clipped to one cell (the full text on hover), and ids travel in query strings, never in a
// path (a browser collapses a segment "." or "..", even percent-encoded).
"use strict";

(() => {
  const TOKEN_KEY = "captcha-api-token";
  const MAX_ROWS = 500;
  const STATS_EVERY_MS = 3000;
  const RETRY_MIN_MS = 1000;
  const RETRY_MAX_MS = 15000;
  const SILENCE_MS = 45000; // no byte (not even a keep-alive comment) for this long: the stream is dead
  const FETCH_SLOTS = 4; // image fetches at once
  const COLUMNS = ["time", "client", "kind", "service", "status", "elapsed", "verdict", "answer", "images", "picture"];
  const FINAL = new Set(["solved", "failed", "expired"]);
  const CLIPPED = new Set(["client", "kind", "service", "answer"]); // texts of any length: a span that clips

  const $ = (id) => document.getElementById(id);

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    needToken: false,
    run: null, // the proxy run the seq numbers belong to
    lastSeq: 0,
    rows: new Map(), // challenge id -> row
    clients: new Set(),
    filter: "",
    stream: null, // AbortController of the open stream
    lastByteAt: 0,
    retryMs: RETRY_MIN_MS,
    retryTimer: 0,
    generation: 0, // bumped on every (re)start, so a stale stream loop stops
  };

  class Unauthorized extends Error {}

  // -- HTTP --------------------------------------------------------------------------------------------------------

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (state.token) headers.set("Authorization", "Bearer " + state.token);
    const response = await fetch(path, { ...options, headers, cache: "no-store" });
    if (response.status === 401) {
      askToken();
      throw new Unauthorized(path);
    }
    return response;
  }

  async function json(path) {
    const response = await api(path);
    if (!response.ok) throw new Error(path + " answered " + response.status);
    return response.json();
  }

  // -- token -------------------------------------------------------------------------------------------------------

  function askToken() {
    if (state.needToken) return;
    state.needToken = true;
    stopStream();
    setConn("token", "token needed");
    $("token-message").textContent = state.token ? "that token was refused" : "";
    $("token-form").hidden = false;
    $("token-input").focus();
  }

  function onTokenSubmit(e) {
    e.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    $("token-form").hidden = true;
    state.needToken = false;
    start();
  }

  // -- events ------------------------------------------------------------------------------------------------------

  async function loadEvents() {
    const body = await json("/v1/events?limit=" + MAX_ROWS);
    const events = Array.isArray(body.events) ? body.events : [];
    const newestRun = events.length ? events[0].run : null;
    if (newestRun !== null && newestRun !== state.run) {
      state.run = newestRun;
      state.lastSeq = 0;
    }
    for (let i = events.length - 1; i >= 0; i--) apply(events[i]);
  }

  function apply(ev) {
    if (!ev || typeof ev !== "object" || typeof ev.challenge !== "string") return;
    if (ev.run !== state.run) {
      // The proxy restarted (a new run numbers its events from 1 again).
      state.run = ev.run;
      state.lastSeq = 0;
    }
    if (typeof ev.seq === "number") {
      if (ev.seq <= state.lastSeq) return; // already seen (the list and a resumed stream overlap)
      state.lastSeq = ev.seq;
    }
    const row = rowFor(ev);
    switch (ev.event) {
      case "captured":
        row.capturedAt = Date.parse(ev.time);
        setTime(row, ev.time);
        addRoles(row, ev.images);
        if (typeof ev.question === "string" && ev.question) row.question = ev.question;
        setStatus(row, "captured");
        break;
      case "solving":
        setText(row, "service", ev.service);
        setStatus(row, "solving");
        break;
      case "solved":
        setText(row, "service", ev.service);
        setElapsed(row, ev);
        setText(row, "answer", describeAnswer(ev));
        setStatus(row, "solved");
        row.wantPicture = true;
        row.pictureRequested = false;
        break;
      case "failed":
        if (ev.service) setText(row, "service", ev.service);
        setElapsed(row, ev);
        setText(row, "answer", [ev.reason, ev.message].filter(Boolean).join(": "));
        setStatus(row, "failed");
        break;
      case "expired":
        addRoles(row, ev.images);
        setText(row, "answer", ev.reason ? "expired: " + ev.reason : "expired");
        setStatus(row, "expired");
        break;
      case "verified": {
        const verdict = ev.accepted === true ? "accepted" : "rejected";
        row.cells.verdict.dataset.verdict = verdict;
        row.cells.verdict.textContent = verdict;
        break;
      }
      default:
        break;
    }
    wantImages(row);
  }

  // -- rows --------------------------------------------------------------------------------------------------------

  const observer = "IntersectionObserver" in window
    ? new IntersectionObserver((entries) => {
      for (const entry of entries) {
        const row = state.rows.get(entry.target.dataset.challenge);
        if (row && entry.isIntersecting) {
          row.visible = true;
          wantImages(row);
        }
      }
    }, { rootMargin: "200px" })
    : null;

  function rowFor(ev) {
    let row = state.rows.get(ev.challenge);
    if (!row) {
      row = makeRow(ev.challenge);
      state.rows.set(ev.challenge, row);
      setTime(row, ev.time);
      $("rows").prepend(row.tr);
      $("empty").hidden = true;
      trimRows();
      if (observer) observer.observe(row.tr);
      else row.visible = true;
    }
    if (typeof ev.client === "string" && row.client !== ev.client) {
      row.client = ev.client;
      setText(row, "client", ev.client);
      addClient(ev.client);
      applyFilter(row);
    }
    if (ev.kind) setText(row, "kind", ev.kind);
    return row;
  }

  function makeRow(id) {
    const tr = document.createElement("tr");
    tr.dataset.challenge = id;
    tr.title = id;
    const cells = {};
    for (const name of COLUMNS) {
      const td = document.createElement("td");
      td.className = name;
      tr.append(td);
      cells[name] = td;
      if (CLIPPED.has(name)) {
        cells[name] = document.createElement("span");
        cells[name].className = "text";
        td.append(cells[name]);
      }
    }
    return {
      id, tr, cells, client: null, status: null, capturedAt: NaN, roles: [], thumbs: new Map(),
      picture: null, wantPicture: false, pictureRequested: false, visible: false, urls: new Set(),
    };
  }

  function trimRows() {
    const body = $("rows");
    while (state.rows.size > MAX_ROWS && body.lastElementChild) {
      const tr = body.lastElementChild;
      const row = state.rows.get(tr.dataset.challenge);
      tr.remove();
      if (observer) observer.unobserve(tr);
      if (row) {
        for (const url of row.urls) URL.revokeObjectURL(url);
        state.rows.delete(row.id);
      }
    }
  }

  function setText(row, cell, value) {
    if (value === undefined || value === null) return;
    const el = row.cells[cell];
    el.textContent = String(value);
    if (CLIPPED.has(cell)) el.title = el.textContent;
  }

  function setTime(row, time) {
    const when = new Date(time);
    if (Number.isNaN(when.getTime())) return;
    row.cells.time.textContent = when.toLocaleTimeString();
    row.cells.time.title = String(time);
  }

  function setStatus(row, status) {
    if (FINAL.has(row.status) && !FINAL.has(status)) return; // a late solving never undoes a final state
    row.status = status;
    row.tr.dataset.status = status;
    row.cells.status.textContent = status;
  }

  function setElapsed(row, ev) {
    let ms = typeof ev.elapsed_ms === "number" ? ev.elapsed_ms : NaN;
    if (Number.isNaN(ms)) ms = Date.parse(ev.time) - row.capturedAt;
    if (Number.isNaN(ms) || ms < 0) return;
    row.cells.elapsed.textContent = ms < 1000 ? Math.round(ms) + " ms" : (ms / 1000).toFixed(1) + " s";
  }

  function describeAnswer(ev) {
    const a = ev.answer;
    if (!a || typeof a !== "object") return ev.result === undefined ? "" : String(ev.result);
    let text;
    if (typeof a.angle === "number") text = a.angle.toFixed(1) + "° clockwise";
    else if (Array.isArray(a.points)) {
      // Object captchas: the points to click, numbered as the drawn answer's markers are.
      text = a.points.map((p, i) => (i + 1) + ": " + Number(p.x).toFixed(0) + "," + Number(p.y).toFixed(0))
        .join("  ") + (a.width_view ? " of " + a.width_view + "x" + a.height_view : "");
      const row = state.rows.get(ev.challenge);
      if (row && row.question) text = "“" + row.question + "” " + text;
    } else if (typeof a.x === "number") text = "x " + a.x.toFixed(1) + (a.width_view ? " of " + a.width_view : "");
    else text = JSON.stringify(a);
    if (typeof ev.confidence === "number") text += " (confidence " + ev.confidence.toFixed(2) + ")";
    return text;
  }

  function addRoles(row, images) {
    if (!images || typeof images !== "object") return;
    for (const role of Object.keys(images)) {
      if (!row.roles.includes(role)) row.roles.push(role);
    }
  }

  // -- client filter -----------------------------------------------------------------------------------------------

  function addClient(client) {
    if (state.clients.has(client)) return;
    state.clients.add(client);
    const option = document.createElement("option");
    option.value = client;
    const list = $("client-list");
    const after = [...list.children].find((o) => o.value > client);
    list.insertBefore(option, after || null);
  }

  function matches(row) {
    return !state.filter || (row.client || "").toLowerCase().includes(state.filter.toLowerCase());
  }

  function applyFilter(row) {
    row.tr.hidden = !matches(row);
  }

  function onFilter() {
    state.filter = $("client-filter").value.trim();
    for (const row of state.rows.values()) applyFilter(row);
    refreshStats();
  }

  // -- images ------------------------------------------------------------------------------------------------------

  const queue = [];
  let active = 0;

  function enqueue(task) {
    queue.push(task);
    pump();
  }

  function pump() {
    while (active < FETCH_SLOTS && queue.length) {
      const task = queue.shift();
      active++;
      task().finally(() => {
        active--;
        pump();
      });
    }
  }

  function fileUrl(file, params) {
    return "/v1/challenges/" + file + "?" + new URLSearchParams(params);
  }

  function wantImages(row) {
    if (!row.visible || state.needToken) return;
    for (const role of row.roles) {
      if (row.thumbs.has(role)) continue;
      const img = makeImage(row, "thumb", role);
      img.dataset.role = role;
      row.thumbs.set(role, img);
      row.cells.images.append(img.parentElement);
      enqueue(() => loadImage(row, img, fileUrl("images", { challenge: row.id, role }), () => {
        row.thumbs.delete(role);
        img.parentElement.remove();
      }));
    }
    if (row.wantPicture && !row.pictureRequested) {
      row.pictureRequested = true;
      if (!row.picture) {
        row.picture = makeImage(row, "answer", "drawn answer");
        row.cells.picture.append(row.picture.parentElement);
      }
      const img = row.picture;
      enqueue(() => loadImage(row, img, fileUrl("answer.png", { challenge: row.id }), () => {
        row.pictureRequested = false;
      }));
    }
  }

  function makeImage(row, className, alt) {
    const link = document.createElement("a");
    link.target = "_blank";
    link.rel = "noopener";
    const img = document.createElement("img");
    img.className = className;
    img.alt = alt;
    img.dataset.state = "loading";
    link.append(img);
    return img;
  }

  // Loads path into img as a blob URL; a 404 (evicted or never kept) shows the placeholder. `retry` undoes the
  // bookkeeping when the request was refused for want of a token, so the image is asked for again after it.
  async function loadImage(row, img, path, retry) {
    let response;
    try {
      response = await api(path);
    } catch (e) {
      if (e instanceof Unauthorized) retry();
      else showMissing(img, "unavailable");
      return;
    }
    const type = response.headers.get("Content-Type") || "";
    if (!type.startsWith("image/")) {
      showMissing(img, response.status === 404 ? "evicted" : "unavailable");
      return;
    }
    try {
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const old = img.dataset.url;
      if (old) {
        URL.revokeObjectURL(old);
        row.urls.delete(old);
      }
      row.urls.add(url);
      if (!state.rows.has(row.id)) URL.revokeObjectURL(url); // the row went while the image came
      img.dataset.url = url;
      img.src = url;
      img.parentElement.href = url;
      img.classList.toggle("missing", !response.ok);
      img.dataset.state = response.ok ? "loaded" : "missing";
    } catch {
      showMissing(img, "unavailable");
    }
  }

  function showMissing(img, why) {
    img.removeAttribute("src");
    img.parentElement.removeAttribute("href");
    img.alt = why;
    img.classList.add("missing");
    img.dataset.state = "missing";
  }

  // -- stats -------------------------------------------------------------------------------------------------------

  async function refreshStats() {
    if (state.needToken) return;
    const client = state.clients.has(state.filter) ? state.filter : "";
    let stats;
    try {
      stats = await json("/v1/stats" + (client ? "?client=" + encodeURIComponent(client) : ""));
    } catch {
      return;
    }
    $("stats-scope").textContent = client ? "client " + client : "all clients";
    $("stats-scope").title = $("stats-scope").textContent;
    for (const el of document.querySelectorAll("#stats .stat")) {
      const name = el.dataset.stat;
      const value = el.querySelector(".value");
      const detail = el.querySelector(".detail");
      const raw = stats[name];
      if (name === "balance") {
        const parts = raw && typeof raw === "object"
          ? Object.entries(raw).map(([service, amount]) => service + " " + String(amount)) : [];
        el.hidden = parts.length === 0;
        value.textContent = parts.join(" · ");
      } else if (raw && typeof raw === "object") {
        // A count by reason or outcome: the total, then each part.
        const entries = Object.entries(raw).filter(([, n]) => typeof n === "number");
        value.textContent = String(entries.reduce((sum, [, n]) => sum + n, 0));
        if (detail) detail.textContent = entries.map(([key, n]) => key + " " + n).join(" · ");
        el.hidden = false;
      } else {
        el.hidden = raw === undefined;
        value.textContent = raw === undefined ? "" : String(raw);
        if (detail) detail.textContent = name === "verified" ? verdictDetail(stats) : "";
      }
    }
  }

  // /v1/stats counts the site's verdicts as one number; by_service (whole proxy only) splits them by outcome.
  function verdictDetail(stats) {
    const byService = stats.by_service;
    if (!byService || typeof byService !== "object") return "";
    let accepted = 0;
    let rejected = 0;
    for (const kinds of Object.values(byService)) {
      for (const tally of Object.values(kinds || {})) {
        if (tally && typeof tally.accepted === "number") accepted += tally.accepted;
        if (tally && typeof tally.rejected === "number") rejected += tally.rejected;
      }
    }
    return accepted + rejected ? "accepted " + accepted + " · rejected " + rejected : "";
  }

  // -- the event stream --------------------------------------------------------------------------------------------

  function setConn(stateName, text) {
    const el = $("conn");
    el.dataset.state = stateName;
    el.textContent = text;
  }

  function stopStream() {
    clearTimeout(state.retryTimer);
    state.generation++;
    if (state.stream) state.stream.abort();
    state.stream = null;
  }

  async function stream(generation) {
    const controller = new AbortController();
    state.stream = controller;
    const headers = { Accept: "text/event-stream" };
    headers["Last-Event-ID"] = String(state.lastSeq); // 0 too: the server then replays all it has since the list
    try {
      const response = await api("/v1/events/stream", { headers, signal: controller.signal });
      if (!response.ok || !response.body) throw new Error("the stream answered " + response.status);
      setConn("live", "live");
      state.retryMs = RETRY_MIN_MS;
      state.lastByteAt = Date.now();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = sseParser((data) => {
        let ev;
        try {
          ev = JSON.parse(data);
        } catch {
          return;
        }
        apply(ev);
      });
      for (;;) {
        const { value, done } = await reader.read();
        if (done || generation !== state.generation) break;
        state.lastByteAt = Date.now();
        parser(value);
      }
    } catch (e) {
      if (e instanceof Unauthorized) return;
    } finally {
      if (state.stream === controller) state.stream = null;
    }
    if (generation === state.generation && !state.needToken) reconnectLater(generation);
  }

  function reconnectLater(generation) {
    setConn("retrying", "reconnecting");
    state.retryTimer = setTimeout(() => {
      if (generation === state.generation) resume(generation);
    }, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, RETRY_MAX_MS);
  }

  // After a drop: resume from the last seq, unless the proxy restarted meanwhile (then reload the list).
  async function resume(generation) {
    try {
      const body = await json("/v1/events?limit=1");
      const newest = Array.isArray(body.events) ? body.events[0] : undefined;
      if (!newest) state.lastSeq = 0;
      else if (newest.run !== state.run) await loadEvents();
    } catch (e) {
      if (e instanceof Unauthorized) return;
      if (generation === state.generation) reconnectLater(generation);
      return;
    }
    if (generation === state.generation) stream(generation);
  }

  // The text/event-stream format: lines ending in LF, CRLF or CR; `field: value`; a blank line ends an event;
  // lines starting with ':' are comments (keep-alives). Only `data` matters here (the JSON carries its own seq).
  function sseParser(onData) {
    let buffer = "";
    let data = [];
    return (chunk) => {
      buffer += chunk;
      let start = 0;
      for (let i = 0; i < buffer.length; i++) {
        const c = buffer[i];
        if (c !== "\n" && c !== "\r") continue;
        if (c === "\r" && i + 1 === buffer.length) break; // a CR at the end may be half of a CRLF
        line(buffer.slice(start, i));
        if (c === "\r" && buffer[i + 1] === "\n") i++;
        start = i + 1;
      }
      buffer = buffer.slice(start);
    };

    function line(text) {
      if (text === "") {
        if (data.length) onData(data.join("\n"));
        data = [];
        return;
      }
      if (text[0] === ":") return;
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "data") data.push(value);
    }
  }

  setInterval(() => {
    if (state.stream && Date.now() - state.lastByteAt > SILENCE_MS) state.stream.abort();
  }, 5000);

  // -- start -------------------------------------------------------------------------------------------------------

  async function start() {
    stopStream();
    const generation = state.generation;
    setConn("connecting", "connecting");
    try {
      await loadEvents();
    } catch (e) {
      if (e instanceof Unauthorized) return;
      reconnectLater(generation);
      return;
    }
    for (const row of state.rows.values()) wantImages(row);
    refreshStats();
    stream(generation);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("token-form").addEventListener("submit", onTokenSubmit);
    $("client-filter").addEventListener("input", onFilter);
    setInterval(refreshStats, STATS_EVERY_MS);
    start();
  });
})();
