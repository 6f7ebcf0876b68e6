// The page of `fastconv serve`: draw or upload, send the model-sized image, show the answer.
// The drawing canvas ("pad") is the model's input size times `scale`; what is sent is the pad
// scaled down to the model's input size ("seen"), as a PNG: exactly the pixels shown beside it.
"use strict";
(function () {
  const MIN_INTERVAL_MS = 120;  // at most one request per this interval, and one in flight at a time
  const DRAW_SIZE = 280;        // about this many CSS pixels of drawing resolution per side

  const $ = (id) => document.getElementById(id);
  const pad = $("pad"), seen = $("seen");
  const padCtx = pad.getContext("2d", { willReadFrequently: true });
  const seenCtx = seen.getContext("2d", { willReadFrequently: true });
  const state = {
    model: null, grey: true, ink: "#ffffff", paper: "#000000", brush: 2.5, scale: 10,
    last: null, dirty: false, inFlight: false, timer: null, lastSentAt: -Infinity,
  };
  // What the page sent and got, for the curious and for the browser test (tests/apps/test_serve_browser.py).
  const probe = window.fastconv = {
    sent: 0, answered: 0, errors: 0, last: null,
    idle: () => !state.dirty && !state.inFlight && state.timer === null,
  };

  function status(text, isError) {
    const el = $("status");
    el.textContent = text || "";
    el.classList.toggle("error", !!isError);
  }

  // ---------------------------------------------------------------- the model
  async function start() {
    let model;
    try {
      const r = await fetch("/model");
      model = await r.json();
      if (!r.ok) throw new Error(model.error || r.statusText);
    } catch (e) {
      $("model-layers").textContent = "could not load the model: " + e.message;
      return;
    }
    state.model = model;
    const [C, H, W] = model.input_shape;
    state.grey = C === 1;
    state.scale = Math.max(1, Math.round(DRAW_SIZE / Math.max(H, W)));
    pad.width = W * state.scale; pad.height = H * state.scale;
    seen.width = W; seen.height = H;
    $("pad-wrap").style.aspectRatio = W + " / " + H;
    $("seen-size").textContent = `${W}×${H} ${state.grey ? "grey" : "colour"}`;
    $("ink-label").hidden = state.grey;
    $("model-layers").textContent = model.layers;
    const badges = $("badges");
    const badge = (text, cls) => {
      const b = document.createElement("span");
      b.className = "badge" + (cls ? " " + cls : "");
      b.textContent = text;
      badges.appendChild(b);
    };
    if (model.dataset) badge(model.dataset);
    badge(`${W}×${H} ${state.grey ? "grey" : "colour"} in`);
    badge(model.class_names.length + " classes out");
    if (model.test_accuracy !== null) badge("test accuracy " + (100 * model.test_accuracy).toFixed(1) + "%", "good");
    $("maps-caption").textContent = model.first_layer;
    clearPad();
    renderSeen();
  }

  // ---------------------------------------------------------------- drawing
  function clearPad() {
    padCtx.fillStyle = state.paper;
    padCtx.fillRect(0, 0, pad.width, pad.height);
  }

  function padPoint(e) {
    const r = pad.getBoundingClientRect();
    return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
  }

  function stroke(from, to) {
    padCtx.strokeStyle = padCtx.fillStyle = state.ink;
    padCtx.lineWidth = state.brush * state.scale;
    padCtx.lineCap = padCtx.lineJoin = "round";
    padCtx.beginPath();
    padCtx.moveTo(from[0], from[1]);
    padCtx.lineTo(to[0], to[1]);
    padCtx.stroke();
  }

  pad.addEventListener("pointerdown", (e) => {
    if (!state.model) return;
    try { pad.setPointerCapture(e.pointerId); } catch (err) { /* a synthetic event: no pointer to capture */ }
    state.last = padPoint(e);
    stroke(state.last, state.last);
    changed();
  });
  pad.addEventListener("pointermove", (e) => {
    if (state.last === null) return;
    const p = padPoint(e);
    stroke(state.last, p);
    state.last = p;
    changed();
  });
  const endStroke = () => { state.last = null; };
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  $("brush").addEventListener("input", (e) => { state.brush = Number(e.target.value); });
  $("ink").addEventListener("input", (e) => { state.ink = e.target.value; });
  $("clear").addEventListener("click", () => { clearPad(); changed(); });
  $("invert").addEventListener("click", () => {
    const img = padCtx.getImageData(0, 0, pad.width, pad.height), d = img.data;
    for (let i = 0; i < d.length; i += 4) { d[i] = 255 - d[i]; d[i + 1] = 255 - d[i + 1]; d[i + 2] = 255 - d[i + 2]; }
    padCtx.putImageData(img, 0, 0);
    const invertHex = (hex) => "#" + (0xffffff ^ parseInt(hex.slice(1), 16)).toString(16).padStart(6, "0");
    state.paper = invertHex(state.paper);
    state.ink = invertHex(state.ink);
    $("ink").value = state.ink;
    changed();
  });

  // ---------------------------------------------------------------- uploads (file button or drop)
  async function upload(file) {
    if (!file || !state.model) return;
    let bitmap;
    try {
      bitmap = await createImageBitmap(file);
    } catch (e) {
      status(`${file.name}: not an image the browser can read`, true);
      return;
    }
    clearPad();
    const fit = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);  // whole picture, centred
    const w = bitmap.width * fit, h = bitmap.height * fit, size = `${bitmap.width}×${bitmap.height}`;
    padCtx.imageSmoothingQuality = "high";
    padCtx.drawImage(bitmap, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    bitmap.close();
    if (state.grey) toGrey(padCtx, pad.width, pad.height);
    status(`${file.name} (${size}) scaled into the canvas`);
    changed();
  }
  $("file").addEventListener("change", (e) => { upload(e.target.files[0]); e.target.value = ""; });
  const wrap = $("pad-wrap");
  wrap.addEventListener("dragover", (e) => { e.preventDefault(); wrap.classList.add("drop"); });
  wrap.addEventListener("dragleave", () => wrap.classList.remove("drop"));
  wrap.addEventListener("drop", (e) => {
    e.preventDefault();
    wrap.classList.remove("drop");
    upload(e.dataTransfer.files[0]);
  });

  // Grey as Pillow's convert("L") makes it (ITU-R 601-2 luma), so a grey model sees what is shown.
  function toGrey(ctx, w, h) {
    const img = ctx.getImageData(0, 0, w, h), d = img.data;
    for (let i = 0; i < d.length; i += 4) {
      const v = Math.round((d[i] * 299 + d[i + 1] * 587 + d[i + 2] * 114) / 1000);
      d[i] = d[i + 1] = d[i + 2] = v;
      d[i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  }

  // ---------------------------------------------------------------- asking the server, throttled
  function renderSeen() {
    seenCtx.imageSmoothingEnabled = true;
    seenCtx.imageSmoothingQuality = "high";
    seenCtx.clearRect(0, 0, seen.width, seen.height);
    seenCtx.drawImage(pad, 0, 0, seen.width, seen.height);
    if (state.grey) toGrey(seenCtx, seen.width, seen.height);
  }

  function changed() {
    $("pad-hint").classList.add("gone");
    renderSeen();
    state.dirty = true;
    kick();
  }

  // Send when nothing is in flight and MIN_INTERVAL_MS have passed since the last send; changes
  // made meanwhile are sent once, together, with the next request.
  function kick() {
    if (!state.dirty || state.inFlight || state.timer !== null) return;
    const wait = Math.max(0, state.lastSentAt + MIN_INTERVAL_MS - performance.now());
    state.timer = setTimeout(send, wait);
  }

  async function send() {
    state.timer = null;
    state.dirty = false;
    state.inFlight = true;
    state.lastSentAt = performance.now();
    const url = seen.toDataURL("image/png");
    const bytes = Uint8Array.from(atob(url.slice(url.indexOf(",") + 1)), (c) => c.charCodeAt(0));
    probe.sent += 1;
    try {
      const r = await fetch("/predict", { method: "POST", body: bytes, headers: { "Content-Type": "image/png" } });
      const answer = await r.json();
      if (!r.ok) throw new Error(answer.error || r.statusText);
      probe.answered += 1;
      probe.last = { image: url, answer: answer };
      show(answer);
      status(`answered in ${(1000 * answer.seconds).toFixed(1)} ms`);
    } catch (e) {
      probe.errors += 1;
      status("the server did not answer: " + e.message, true);
    } finally {
      state.inFlight = false;
      kick();
    }
  }

  // ---------------------------------------------------------------- the answer
  function show(answer) {
    const preds = answer.predictions;
    const isProb = "probability" in preds[0];
    const value = (p) => isProb ? p.probability : p.score;
    const lo = isProb ? 0 : Math.min(...preds.map(value)), hi = isProb ? 1 : Math.max(...preds.map(value));
    $("answer-class").textContent = preds[0].class;
    $("answer-prob").textContent = isProb ? (100 * preds[0].probability).toFixed(1) + "% sure"
                                          : "score " + preds[0].score.toFixed(3);
    const bars = $("bars");
    bars.replaceChildren(...preds.slice(0, 5).map((p, i) => {
      const li = document.createElement("li");
      li.className = "bar" + (i === 0 ? " top" : "");
      li.dataset.index = p.index;
      const name = document.createElement("span"); name.className = "name"; name.textContent = p.class;
      const track = document.createElement("span"); track.className = "track";
      const fill = document.createElement("span"); fill.className = "fill";
      fill.style.width = (100 * (value(p) - lo) / ((hi - lo) || 1)).toFixed(2) + "%";
      fill.style.display = "block";
      track.appendChild(fill);
      const val = document.createElement("span"); val.className = "value";
      val.textContent = isProb ? (100 * p.probability).toFixed(1) + "%" : p.score.toFixed(3);
      li.append(name, track, val);
      return li;
    }));
    const maps = $("maps");
    const fm = answer.feature_maps;
    if (!fm) {
      const none = document.createElement("div");
      none.className = "none";
      none.textContent = "the first layer is not a convolution: no maps to show";
      maps.replaceChildren(none);
      return;
    }
    $("maps-caption").textContent = `${fm.layer}: ${fm.shape[0]} maps of ${fm.shape[1]}×${fm.shape[2]}` +
      (fm.shown < fm.shape[0] ? `, the first ${fm.shown} shown` : "") + ", each scaled to its own range";
    maps.replaceChildren(...fm.images.map((src, i) => {
      const img = document.createElement("img");
      img.src = src;
      img.alt = img.title = "map " + (i + 1);
      return img;
    }));
  }

  start();
})();
