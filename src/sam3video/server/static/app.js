// sam3video annotator: plain JavaScript over the server's /v1 API (no build step).
//
// State: one open session, the masks tracked so far per frame (COCO RLE as the server sends
// them, decoded to an overlay canvas when first drawn), the selected object and the clicks
// of the current frame. Masks stream in from POST .../propagate (NDJSON) and are drawn as
// they arrive.
"use strict";

const $ = (id) => document.getElementById(id);
const view = $("view");
const ctx = view.getContext("2d");

const state = {
  token: "",
  session: null, // the server's SessionInfo
  frame: 0,
  results: new Map(), // frame index -> {objId: {mask, score, bbox, overlay?}}
  selected: null, // object id that clicks refine; null: the next click makes a new object
  clicks: [], // [{frame, x, y, label}] drawn on their frame
  images: new Map(), // frame index -> ImageBitmap (a small cache)
  streaming: false,
  playing: null,
  drag: null,
};
window.sam3 = state; // for debugging and the browser test

// -- the token: ?token= (kept for this tab only) or typed in ------------------------------

function initToken() {
  const url = new URL(window.location.href);
  const fromUrl = url.searchParams.get("token");
  if (fromUrl) {
    sessionStorage.setItem("sam3video-token", fromUrl);
    url.searchParams.delete("token"); // do not leave it in the address bar or history
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  state.token = sessionStorage.getItem("sam3video-token") || "";
  $("token").value = state.token;
  $("token").addEventListener("change", () => {
    state.token = $("token").value.trim();
    sessionStorage.setItem("sam3video-token", state.token);
    loadMedia();
  });
}

// -- talking to the server -------------------------------------------------------------------

async function request(method, path, body) {
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const options = { method, headers };
  if (body instanceof FormData) {
    options.body = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try {
      const error = await response.json();
      message = `${error.error}: ${error.message}`;
    } catch (_) { /* not JSON */ }
    if (response.status === 401) $("token").focus();
    throw new Error(message);
  }
  return response;
}

const api = {
  json: async (method, path, body) => (await request(method, path, body)).json(),
  session: (suffix = "") => `/v1/sessions/${encodeURIComponent(state.session.session_id)}${suffix}`,
};

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function guarded(label, work) {
  try {
    if (label) say(label);
    await work();
    if (label) say("ready");
  } catch (error) {
    say(error.message, true);
  } finally {
    updateControls();
  }
}

// -- media and sessions ----------------------------------------------------------------------

async function loadMedia() {
  await guarded(null, async () => {
    const items = await api.json("GET", "/v1/media");
    const select = $("media");
    select.replaceChildren(...items.map((item) => {
      const option = document.createElement("option");
      option.value = item.path;
      option.textContent = `${item.path} (${item.kind})`;
      return option;
    }));
    say(items.length ? "choose a video" : "the media root holds no video; upload one");
  });
}

async function openSession(created) {
  if (state.session) await closeSession();
  state.session = created;
  state.results.clear();
  state.images.clear();
  state.clicks = [];
  state.selected = null;
  const { width, height, num_frames: frames } = created;
  view.width = width;
  view.height = height;
  fitCanvas();
  $("frame").max = String(frames - 1);
  $("session").textContent =
    `${created.resource}: ${frames} frames, ${width}x${height}` +
    (created.fps ? `, ${created.fps.toFixed(2)} fps` : "");
  await showFrame(0);
  renderObjects();
}

function fitCanvas() {
  // Small videos are scaled up by a whole factor (crisp pixels), large ones down to fit.
  const room = Math.max(200, view.parentElement.clientWidth - 24);
  const scale = view.width <= room ? Math.floor(room / view.width) : room / view.width;
  view.style.width = `${Math.round(view.width * scale)}px`;
  view.style.height = `${Math.round(view.height * scale)}px`;
}

async function closeSession() {
  const session = state.session;
  state.session = null;
  if (session) {
    await request("DELETE", `/v1/sessions/${encodeURIComponent(session.session_id)}`)
      .catch(() => {});
  }
  $("session").textContent = "none";
  ctx.clearRect(0, 0, view.width, view.height);
  renderObjects();
}

async function refreshSession() {
  state.session = await api.json("GET", api.session());
  renderObjects();
}

// -- frames and masks ------------------------------------------------------------------------

async function frameImage(index) {
  if (!state.images.has(index)) {
    const blob = await (await request("GET", api.session(`/frames/${index}`))).blob();
    if (state.images.size > 96) state.images.delete(state.images.keys().next().value);
    state.images.set(index, await createImageBitmap(blob));
  }
  return state.images.get(index);
}

async function showFrame(index) {
  if (!state.session) return;
  state.frame = index;
  $("frame").value = String(index);
  $("frame-label").textContent = `${index} / ${state.session.num_frames - 1}`;
  const image = await frameImage(index);
  if (state.frame === index) draw(image);
}

// COCO compressed RLE -> run lengths (see pycocotools' rleFrString).
function rleCounts(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = text.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p += 1;
      k += 1;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// The PASCAL VOC / DAVIS colour of an object: the PNG export's and the overlay video's.
function colorOf(objId) {
  let index = (objId % 255) + 1, r = 0, g = 0, b = 0;
  for (let bit = 0; bit < 8; bit += 1) {
    r |= ((index >> 0) & 1) << (7 - bit);
    g |= ((index >> 1) & 1) << (7 - bit);
    b |= ((index >> 2) & 1) << (7 - bit);
    index >>= 3;
  }
  return [r, g, b];
}

function overlayOf(objId, out) {
  if (!out.overlay) {
    const [height, width] = out.mask.size;
    const pixels = new ImageData(width, height);
    const [r, g, b] = colorOf(Number(objId));
    let position = 0;
    rleCounts(out.mask.counts).forEach((run, i) => {
      if (i % 2 === 1) { // runs alternate background, mask; column-major order
        for (let q = position; q < position + run; q += 1) {
          const o = ((q % height) * width + Math.floor(q / height)) * 4;
          pixels.data[o] = r; pixels.data[o + 1] = g; pixels.data[o + 2] = b;
          pixels.data[o + 3] = 255;
        }
      }
      position += run;
    });
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    canvas.getContext("2d").putImageData(pixels, 0, 0);
    out.overlay = canvas;
  }
  return out.overlay;
}

function draw(image) {
  ctx.globalAlpha = 1;
  if (image) ctx.drawImage(image, 0, 0);
  if (!$("show-masks").checked) return;
  const outputs = state.results.get(state.frame) || {};
  ctx.globalAlpha = 0.5;
  for (const [objId, out] of Object.entries(outputs)) ctx.drawImage(overlayOf(objId, out), 0, 0);
  ctx.globalAlpha = 1;
  const radius = Math.max(2, view.width / 160);
  for (const click of state.clicks.filter((c) => c.frame === state.frame)) {
    ctx.beginPath();
    ctx.arc(click.x, click.y, radius, 0, 2 * Math.PI);
    ctx.fillStyle = click.label ? "#3ddc84" : "#ff5252";
    ctx.fill();
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
  if (state.drag && state.drag.moved) {
    const { x0, y0, x1, y1 } = state.drag;
    ctx.strokeStyle = "#4f8cff";
    ctx.lineWidth = Math.max(1, view.width / 400);
    ctx.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
  }
}

async function redraw() {
  if (state.session) draw(await frameImage(state.frame));
}

// -- prompts ---------------------------------------------------------------------------------

async function prompt(body, newConcept) {
  const response = await api.json("POST", api.session("/prompts"),
    { frame_index: state.frame, ...body });
  if (newConcept) state.results.clear();
  const before = new Set(state.session.obj_ids);
  state.results.set(response.frame_index, response.outputs);
  await refreshSession();
  const added = state.session.obj_ids.filter((id) => !before.has(id));
  if (body.points && added.length) state.selected = added[0];
  await redraw();
}

function canvasPoint(event) {
  const box = view.getBoundingClientRect();
  return {
    x: Math.min(view.width - 1, Math.max(0, (event.clientX - box.left) * view.width / box.width)),
    y: Math.min(view.height - 1,
      Math.max(0, (event.clientY - box.top) * view.height / box.height)),
  };
}

function onPointerDown(event) {
  if (!state.session || state.streaming) return;
  const p = canvasPoint(event);
  state.drag = { x0: p.x, y0: p.y, x1: p.x, y1: p.y, moved: false,
                 background: event.button === 2 || event.shiftKey };
}

function onPointerMove(event) {
  if (!state.drag) return;
  const p = canvasPoint(event);
  state.drag.x1 = p.x;
  state.drag.y1 = p.y;
  const far = Math.hypot(p.x - state.drag.x0, p.y - state.drag.y0);
  state.drag.moved = state.drag.moved || far * view.clientWidth / view.width > 6;
  if (state.drag.moved) redraw();
}

async function onPointerUp() {
  const drag = state.drag;
  state.drag = null;
  if (!drag) return;
  if (drag.moved) {
    const { width: w, height: h } = view;
    const x0 = Math.min(drag.x0, drag.x1), x1 = Math.max(drag.x0, drag.x1);
    const y0 = Math.min(drag.y0, drag.y1), y1 = Math.max(drag.y0, drag.y1);
    const box = [(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h];
    const text = $("concept").value.trim();
    await guarded("finding what the box shows…", () => prompt(
      { bounding_boxes: [box], bounding_box_labels: [drag.background ? 0 : 1],
        ...(text ? { text } : {}) }, true));
    return;
  }
  const x = Math.round(drag.x0), y = Math.round(drag.y0), label = drag.background ? 0 : 1;
  const body = { points: [[x, y]], point_labels: [label] };
  if (state.selected !== null) body.obj_id = state.selected;
  await guarded("segmenting the click…", async () => {
    await prompt(body, false);
    state.clicks.push({ frame: state.frame, x, y, label });
    await redraw();
  });
}

// -- propagation (NDJSON, drawn as it streams) -----------------------------------------------

async function propagate() {
  state.streaming = true;
  updateControls();
  let done = 0;
  const expected = state.session.num_frames;
  $("progress").max = expected;
  $("progress").value = 0;
  try {
    say("propagating…");
    const response = await request("POST", api.session("/propagate"),
      { propagation_direction: $("direction").value });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done: finished } = await reader.read();
      if (finished) break;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (!line) continue;
        const item = JSON.parse(line);
        if (item.error) throw new Error(`${item.error}: ${item.message}`);
        state.results.set(item.frame_index, item.outputs);
        done += 1;
        $("progress").value = Math.min(done, expected);
        await showFrame(item.frame_index); // follow the masks as they arrive
      }
    }
    await refreshSession();
    say(`propagated ${done} frames`);
  } catch (error) {
    say(error.message, true);
  } finally {
    state.streaming = false;
    updateControls();
  }
}

async function cancel() {
  await guarded(null, () => api.json("POST", api.session("/cancel")));
  say("cancelling after the current frame…");
}

// -- objects, playback, export ---------------------------------------------------------------

function renderObjects() {
  const list = $("objects");
  const ids = state.session ? state.session.obj_ids : [];
  if (!ids.includes(state.selected)) state.selected = null;
  list.replaceChildren(...ids.map((objId) => {
    const item = document.createElement("li");
    item.dataset.objId = String(objId);
    item.classList.toggle("selected", objId === state.selected);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${colorOf(objId).join(",")})`;
    const label = document.createElement("span");
    label.className = "id";
    const out = (state.results.get(state.frame) || {})[objId];
    label.textContent = `object ${objId}` + (out ? ` (${out.score.toFixed(2)})` : "");
    const remove = document.createElement("button");
    remove.textContent = "✕";
    remove.title = "remove this object";
    remove.addEventListener("click", (event) => {
      event.stopPropagation();
      guarded("removing…", () => removeObject(objId));
    });
    item.addEventListener("click", () => {
      state.selected = state.selected === objId ? null : objId;
      renderObjects();
    });
    item.append(swatch, label, remove);
    return item;
  }));
  updateControls();
}

async function removeObject(objId) {
  await api.json("DELETE", api.session(`/objects/${objId}`));
  for (const outputs of state.results.values()) delete outputs[objId];
  await refreshSession();
  await redraw();
}

function togglePlay() {
  if (state.playing) {
    clearInterval(state.playing);
    state.playing = null;
  } else {
    const fps = Math.min(30, state.session.fps || 10);
    state.playing = setInterval(() => {
      const next = (state.frame + 1) % state.session.num_frames;
      showFrame(next).catch((error) => say(error.message, true));
    }, 1000 / fps);
  }
  updateControls();
}

async function exportYtvis() {
  const blob = await (await request("GET", api.session("/export?format=ytvis"))).blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `${state.session.resource.replace(/\.[^.]*$/, "").split("/").pop()}.ytvis.json`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function updateControls() {
  const open = Boolean(state.session), idle = open && !state.streaming;
  for (const id of ["find", "reset", "export", "close", "new-object", "propagate"]) {
    $(id).disabled = !idle;
  }
  $("cancel").disabled = !state.streaming;
  $("frame").disabled = !open;
  $("play").disabled = !open;
  $("play").innerHTML = state.playing ? "&#10074;&#10074;" : "&#9654;";
  document.body.dataset.busy = state.streaming ? "1" : "0";
}

// -- wiring ----------------------------------------------------------------------------------

function wire() {
  $("open").addEventListener("click", () => guarded("opening…", async () => {
    await openSession(await api.json("POST", "/v1/sessions", { resource_path: $("media").value }));
  }));
  $("refresh-media").addEventListener("click", loadMedia);
  $("upload-btn").addEventListener("click", () => guarded("uploading…", async () => {
    const file = $("upload").files[0];
    if (!file) throw new Error("choose a file to upload first");
    const form = new FormData();
    form.append("file", file);
    await openSession(await api.json("POST", "/v1/sessions", form));
  }));
  $("find").addEventListener("click", () => guarded("finding the concept…", () =>
    prompt({ text: $("concept").value.trim() }, true)));
  $("concept").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !$("find").disabled) $("find").click();
  });
  $("new-object").addEventListener("click", () => { state.selected = null; renderObjects(); });
  $("propagate").addEventListener("click", propagate);
  $("cancel").addEventListener("click", cancel);
  $("reset").addEventListener("click", () => guarded("resetting…", async () => {
    await api.json("POST", api.session("/reset"));
    state.results.clear();
    state.clicks = [];
    await refreshSession();
    await redraw();
  }));
  $("export").addEventListener("click", () => guarded("exporting…", exportYtvis));
  $("close").addEventListener("click", () => guarded("closing…", closeSession));
  $("frame").addEventListener("input", () =>
    showFrame(Number($("frame").value)).then(renderObjects));
  $("play").addEventListener("click", togglePlay);
  $("show-masks").addEventListener("change", redraw);
  view.addEventListener("pointerdown", onPointerDown);
  view.addEventListener("pointermove", onPointerMove);
  view.addEventListener("pointerup", onPointerUp);
  view.addEventListener("contextmenu", (event) => event.preventDefault());
  window.addEventListener("resize", () => { if (state.session) fitCanvas(); });
  window.addEventListener("beforeunload", () => {
    if (state.session) { // best effort: free the server's session
      fetch(api.session(), { method: "DELETE", keepalive: true,
        headers: state.token ? { Authorization: `Bearer ${state.token}` } : {} });
    }
  });
}

initToken();
wire();
updateControls();
loadMedia();
