// ks-serve's page: the camera's frames go to the server over a WebSocket as JPEGs; the AU probabilities come back
// as bars (green at or above the AU's threshold) and a scrolling timeline. An automated test reads every result
// message in window.ksResults and the session id in window.ksSession. The protocol: docs/serving.md.
"use strict";

window.ksResults = [];
window.ksSession = null;

const $ = (id) => document.getElementById(id);
const state = { ws: null, camera: null, timer: null, aus: [], thresholds: [], bars: [], encoding: false };
const MAX_BUFFERED_BYTES = 1 << 20; // frames are skipped here while the socket holds this much unsent
const TIMELINE_STEP = 3; // pixels the timeline scrolls per result
const LABEL_WIDTH = 56;
const MAX_ERROR_LINES = 20;

function token() {
  return $("token").value || new URLSearchParams(location.hash.slice(1)).get("token") || "";
}

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const t = token();
  return `${scheme}//${location.host}/ws${t ? "?token=" + encodeURIComponent(t) : ""}`;
}

function status(text) {
  $("status").textContent = text;
}

function fail(text) {
  const line = document.createElement("div");
  line.textContent = text;
  $("errors").prepend(line);
  while ($("errors").childElementCount > MAX_ERROR_LINES) $("errors").lastChild.remove();
}

async function start() {
  $("start").disabled = true;
  try {
    state.camera = state.camera || (await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } }));
  } catch (error) {
    fail(`camera: ${error.message}`);
    $("start").disabled = false;
    return;
  }
  $("video").srcObject = state.camera;
  if (state.ws && state.ws.readyState === WebSocket.OPEN) begin();
  else connect(); // begin() follows the server's hello
}

function connect() {
  const ws = new WebSocket(socketUrl());
  state.ws = ws;
  ws.onmessage = (event) => receive(JSON.parse(event.data));
  ws.onclose = (event) => {
    status(`disconnected (${event.code}${event.reason ? ": " + event.reason : ""})`);
    halt();
  };
  ws.onerror = () => fail("WebSocket error (a wrong token closes the connection at once)");
}

function receive(message) {
  if (message.type === "hello") {
    hello(message);
    begin();
  } else if (message.type === "result") {
    result(message);
  } else if (message.type === "stats" || message.type === "stopped") {
    stats(message);
  } else if (message.type === "error") {
    fail(message.message);
  }
}

function hello(message) {
  window.ksSession = message.session;
  state.aus = message.aus;
  state.thresholds = message.thresholds;
  if (message.warning) {
    $("warning").textContent = `Note: ${message.warning}.`;
    $("warning").style.display = "block";
  }
  buildBars();
  drawLabels();
  $("download").hidden = false;
}

function begin() {
  const fps = Number($("fps").value);
  const video = $("video");
  const canvas = document.createElement("canvas");
  state.ws.send(JSON.stringify({ start: { fps } }));
  clearInterval(state.timer);
  state.timer = setInterval(() => capture(video, canvas), 1000 / fps);
  $("stop").disabled = false;
  status(`streaming at ${fps} frames/s`);
}

function capture(video, canvas) {
  const ws = state.ws;
  // One frame encoding at a time, and none while the socket is backed up: the newest frame is what matters.
  if (!ws || ws.readyState !== WebSocket.OPEN || !video.videoWidth || state.encoding) return;
  if (ws.bufferedAmount > MAX_BUFFERED_BYTES) return;
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  state.encoding = true;
  canvas.toBlob(
    (blob) => {
      state.encoding = false;
      if (blob && ws.readyState === WebSocket.OPEN) ws.send(blob);
    },
    "image/jpeg",
    0.92,
  );
}

function stop() {
  halt();
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify({ stop: true }));
  if (state.camera) state.camera.getTracks().forEach((track) => track.stop());
  state.camera = null;
  status("stopping: the last frames are being scored");
}

function halt() {
  clearInterval(state.timer);
  state.timer = null;
  $("stop").disabled = true;
  $("start").disabled = false;
}

function buildBars() {
  const box = $("bars");
  box.textContent = "";
  state.bars = state.aus.map((au, i) => {
    const row = document.createElement("div");
    row.className = "bar";
    const name = document.createElement("span");
    name.textContent = au;
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    const mark = document.createElement("div");
    mark.className = "mark";
    mark.style.left = `${100 * state.thresholds[i]}%`;
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = "-";
    track.append(fill, mark);
    row.append(name, track, value);
    box.append(row);
    return { fill, value };
  });
}

function result(message) {
  window.ksResults.push(message);
  if (message.face_id !== 0) return; // the bars and the timeline follow the first face
  const probs = message.probs ? state.aus.map((au) => message.probs[au]) : null;
  state.bars.forEach((bar, i) => {
    const p = probs ? probs[i] : 0;
    bar.fill.style.width = `${100 * p}%`;
    bar.fill.classList.toggle("on", probs !== null && p >= state.thresholds[i]);
    bar.value.textContent = probs ? p.toFixed(2) : "no face";
  });
  scrollTimeline(probs);
}

function drawLabels() {
  const canvas = $("timeline");
  const ctx = canvas.getContext("2d");
  const rowHeight = canvas.height / Math.max(state.aus.length, 1);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#333";
  ctx.font = `${Math.min(12, rowHeight - 2)}px system-ui, sans-serif`;
  state.aus.forEach((au, i) => ctx.fillText(au, 4, i * rowHeight + rowHeight * 0.75));
}

function scrollTimeline(probs) {
  const canvas = $("timeline");
  const ctx = canvas.getContext("2d");
  const width = canvas.width;
  const height = canvas.height;
  const rowHeight = height / Math.max(state.aus.length, 1);
  const kept = width - LABEL_WIDTH - TIMELINE_STEP;
  // putImageData replaces the pixels (drawing the canvas onto itself would blend its translucent columns)
  ctx.putImageData(ctx.getImageData(LABEL_WIDTH + TIMELINE_STEP, 0, kept, height), LABEL_WIDTH, 0);
  ctx.clearRect(width - TIMELINE_STEP, 0, TIMELINE_STEP, height);
  if (!probs) return; // no face: a blank column
  probs.forEach((p, i) => {
    const on = p >= state.thresholds[i];
    ctx.fillStyle = on ? `rgba(42, 157, 75, ${0.35 + 0.65 * p})` : `rgba(110, 110, 110, ${p})`;
    ctx.fillRect(width - TIMELINE_STEP, i * rowHeight + 1, TIMELINE_STEP, rowHeight - 2);
  });
}

function number(value) {
  return value === null || value === undefined ? "-" : value.toFixed(1);
}

function stats(message) {
  const latency = message.latency_ms || {};
  $("stats").textContent =
    `fps ${number(message.fps)} · latency p50 ${number(latency.p50)} / p99 ${number(latency.p99)} ms · ` +
    `dropped ${message.dropped} · refused ${message.refused}`;
  if (message.type === "stopped") status(`stopped: ${message.scored} results`);
}

async function download(event) {
  event.preventDefault();
  if (!window.ksSession) return;
  const t = token();
  const response = await fetch(`/api/sessions/${window.ksSession}/csv`, {
    headers: t ? { Authorization: `Bearer ${t}` } : {},
  });
  if (!response.ok) {
    fail(`CSV: HTTP ${response.status}: ${(await response.json()).error}`);
    return;
  }
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = `ks-serve-${window.ksSession}.csv`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
$("download").addEventListener("click", download);
