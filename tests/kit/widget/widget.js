// The test kit's captcha widget. Geometry as the web widget's: a 340-px track with a 69-px handle (271 px of
// travel); a rotate turns the disc 360 degrees over the travel, a slide moves the piece with the handle over the
// background shown 340 px wide. The reply is the pointer trajectory in those 340-px units. An object captcha (3d,
// icon) shows its picture 340 px wide instead: each click on it leaves a numbered mark (a click on a mark takes it
// back), Confirm posts the clicks, x and y in those 340-px units and relative_time in ms since the picture showed.
"use strict";

const TRACK = 340, HANDLE = 69, TRAVEL = TRACK - HANDLE;
const RING = 212;
const root = document.getElementById("captcha");
const title = document.getElementById("title");
const picture = document.getElementById("picture");
const track = document.getElementById("track");
const fill = document.getElementById("fill");
const handle = document.getElementById("handle");
const verdict = document.getElementById("verdict");
const confirm = document.getElementById("confirm");
const params = new URLSearchParams(location.search);
const mode = params.get("mode") || "whirl";

let challenge = null;
let disc = null, piece = null;
let drag = null;  // {startX, trackTop, t0, reply: []}, while the pointer is down
let clicks = null, shownAt = 0;  // an object captcha's marks [{x, y, relative_time, mark}], in click order

function show(offset) {
  handle.style.left = offset + "px";
  fill.style.width = (offset + HANDLE / 2) + "px";
  if (disc) disc.style.transform = `rotate(${offset / TRAVEL * 360}deg)`;
  if (piece) piece.style.left = offset + "px";
  document.getElementById("hint").style.visibility = offset > 0 ? "hidden" : "visible";
}

function image(url, cls) {
  const img = new Image();
  img.className = cls;
  img.alt = "";
  img.draggable = false;
  const loaded = new Promise((resolve, reject) => { img.onload = resolve; img.onerror = reject; });
  img.src = url;
  return [img, loaded];
}

async function load() {
  const query = new URLSearchParams({mode, shape: params.get("shape") || "single", scheme: location.protocol.slice(0, -1),
                                     aid: "1988", platform: "pc"});
  const r = await fetch("/captcha/get?" + query);
  if (!r.ok) throw new Error(`get answered ${r.status}`);
  const body = await r.json();
  const data = body.data || {};
  const item = Array.isArray(data.challenges) ? data.challenges[0] : data;
  challenge = {id: item.id, mode: item.mode, question: item.question, verify_id: item.verify_id || data.verify_id};
  root.dataset.challenge = challenge.id;
  root.dataset.mode = challenge.mode;
  const q = challenge.question;
  if (challenge.mode === "whirl") {
    title.textContent = "Drag the slider to fit the puzzle";
    picture.className = "picture whirl";
    const [ring, a] = image(q.url1, "ring");
    const [inner, b] = image(q.url2, "disc");
    ring.width = ring.height = RING;
    disc = inner;
    picture.append(ring, inner);
    await Promise.all([a, b]);
  } else if (challenge.mode === "slide") {
    title.textContent = "Drag the puzzle piece into place";
    picture.className = "picture slide";
    const [background, a] = image(q.url1, "background");
    const [tile, b] = image(q.url2, "piece");
    piece = tile;
    picture.append(background, tile);
    await Promise.all([a, b]);
    const scale = TRACK / background.naturalWidth;
    tile.style.width = tile.naturalWidth * scale + "px";
    tile.style.top = (q.tip_y || 0) * scale + "px";
  } else if (challenge.mode === "3d" || challenge.mode === "icon") {
    title.textContent = challenge.mode === "icon" ? (q.tip || q.question || "Select the objects")
                                                  : "Select 2 objects that are the same shape";
    picture.className = "picture objects";
    const [img, a] = image(q.url1, "image");
    picture.append(img);
    await a;
    track.hidden = true;
    confirm.hidden = false;
    clicks = [];
    marked();
    shownAt = performance.now();
    root.dataset.state = "ready";
    return;
  } else {
    throw new Error(`mode ${challenge.mode} is not one this widget knows`);
  }
  show(0);
  root.dataset.state = "ready";
}

function marked() {
  clicks.forEach((c, n) => { c.mark.textContent = String(n + 1); });
  root.dataset.clicks = String(clicks.length);
  confirm.disabled = clicks.length === 0;
}

picture.addEventListener("click", e => {
  if (!clicks || root.dataset.state !== "ready") return;
  const hit = clicks.findIndex(c => c.mark === e.target);
  if (hit >= 0) {
    clicks[hit].mark.remove();
    clicks.splice(hit, 1);
  } else {
    const box = picture.getBoundingClientRect();
    const x = Math.round((e.clientX - box.left) * TRACK / box.width * 100) / 100;
    const y = Math.round((e.clientY - box.top) * TRACK / box.width * 100) / 100;
    const mark = document.createElement("div");
    mark.className = "mark";
    mark.style.left = x * box.width / TRACK + "px";
    mark.style.top = y * box.width / TRACK + "px";
    picture.append(mark);
    clicks.push({x, y, relative_time: Math.round(e.timeStamp - shownAt), mark});
  }
  marked();
});

confirm.addEventListener("click", () => {
  if (!clicks || !clicks.length || root.dataset.state !== "ready") return;
  const reply = clicks.map(({x, y, relative_time}) => ({x, y, relative_time}));
  submit(reply, {});
});

function point(e) {
  const offset = Math.min(Math.max(e.clientX - drag.startX, 0), TRAVEL);
  return {x: Math.round(offset * 100) / 100, y: Math.round((e.clientY - drag.trackTop) * 100) / 100,
          relative_time: Math.round(e.timeStamp - drag.t0)};
}

handle.addEventListener("pointerdown", e => {
  if (root.dataset.state !== "ready") return;
  e.preventDefault();
  handle.setPointerCapture(e.pointerId);
  drag = {startX: e.clientX, trackTop: track.getBoundingClientRect().top, t0: e.timeStamp, reply: []};
  drag.reply.push(point(e));
  root.dataset.state = "dragging";
});

handle.addEventListener("pointermove", e => {
  if (!drag) return;
  const p = point(e);
  drag.reply.push(p);
  show(p.x);
});

async function release(e) {
  if (!drag) return;
  const p = point(e);
  drag.reply.push(p);
  show(p.x);
  const reply = drag.reply;
  drag = null;
  await submit(reply, {drag_width: TRAVEL});
}

async function submit(reply, extra) {
  root.dataset.state = "verifying";
  const body = {modified_img_width: TRACK, id: challenge.id, mode: challenge.mode, reply,
                verify_id: challenge.verify_id, ...extra};
  let passed = false, message = "";
  try {
    const r = await fetch("/captcha/verify?aid=1988&platform=pc", {method: "POST", body: JSON.stringify(body),
                                                                    headers: {"Content-Type": "application/json"}});
    const answer = await r.json();
    passed = answer.code === 200;
    message = answer.message || `verify answered ${r.status}`;
  } catch (err) {
    message = String(err);
  }
  verdict.textContent = passed ? "\u2714 " + message : "\u2718 " + message;
  verdict.className = "verdict " + (passed ? "pass" : "fail");
  root.dataset.points = String(reply.length);
  root.dataset.verdict = passed ? "pass" : "fail";
  root.dataset.state = "done";
}

handle.addEventListener("pointerup", release);
handle.addEventListener("pointercancel", release);

load().catch(err => {
  title.textContent = "Could not load the captcha: " + err.message;
  root.dataset.state = "error";
});
