// The drawing pad: strokes on a canvas, sent (debounced) to /v1/predict as a PNG.
// Plain browser JavaScript, no build step and nothing fetched from elsewhere.
"use strict";

(() => {
  const DEBOUNCE_MS = 120;
  const pad = document.getElementById("pad");
  const ctx = pad.getContext("2d");
  const answer = document.getElementById("answer");
  const confidence = document.getElementById("confidence");
  const bars = document.getElementById("bars");
  const pieces = document.getElementById("pieces");
  const seen = document.getElementById("seen");
  const status = document.getElementById("status");
  const fileInput = document.getElementById("file");
  // `digitlab serve --collect DIR` marks the page; without it there is no collect mode.
  const collectOn = "collect" in document.body.dataset;
  const saveButton = document.getElementById("save");

  // Each item is a stroke {points: [[x, y], ...]} or an uploaded picture {image, file}.
  let items = [];
  let current = null;
  let timer = null;
  let sequence = 0; // answers to older requests than the latest are dropped
  let mode = "digit";
  let collectLabel = null; // what the next saved sample shows: "0".."9" or "none"
  let saving = false;

  // -------------------------------------------------------------------- drawing

  function lineWidth() {
    return pad.height / 14; // about MNIST's stroke once the digit is scaled to 20 px
  }

  function redraw() {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, pad.width, pad.height);
    ctx.strokeStyle = "#000";
    ctx.fillStyle = "#000";
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = lineWidth();
    for (const item of items) {
      if (item.image) drawPicture(item.image);
      else drawStroke(item.points);
    }
    if (collectOn) updateSave();
  }

  function drawPicture(image) {
    const scale = Math.min(pad.width / image.width, pad.height / image.height);
    const w = image.width * scale;
    const h = image.height * scale;
    ctx.drawImage(image, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  }

  function drawStroke(points) {
    if (points.length === 1) {
      const [x, y] = points[0];
      ctx.beginPath();
      ctx.arc(x, y, lineWidth() / 2, 0, 2 * Math.PI);
      ctx.fill();
      return;
    }
    ctx.beginPath();
    ctx.moveTo(points[0][0], points[0][1]);
    for (const [x, y] of points.slice(1)) ctx.lineTo(x, y);
    ctx.stroke();
  }

  function toCanvas(event) {
    const rect = pad.getBoundingClientRect();
    return [
      ((event.clientX - rect.left) * pad.width) / rect.width,
      ((event.clientY - rect.top) * pad.height) / rect.height,
    ];
  }

  pad.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    current = { points: [toCanvas(event)] };
    items.push(current);
    redraw();
  });

  pad.addEventListener("pointermove", (event) => {
    if (!current) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const e of events.length ? events : [event]) current.points.push(toCanvas(e));
    redraw();
    schedule();
  });

  function endStroke() {
    if (!current) return;
    current = null;
    schedule();
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  // -------------------------------------------------------------------- tools

  function undo() {
    items.pop();
    redraw();
    schedule();
  }

  function clear() {
    items = [];
    redraw();
    showEmpty();
  }

  function setMode(next) {
    mode = next;
    document.body.classList.toggle("number", mode === "number");
    const width = mode === "number" ? 560 : 280;
    if (pad.width !== width) {
      // Strokes keep their place; a narrower pad drops what lies beyond its edge.
      pad.width = width;
      redraw();
    }
    document.getElementById("digit-view").hidden = mode === "number";
    document.getElementById("number-view").hidden = mode !== "number";
    document.body.classList.toggle("collecting", mode === "collect");
    document.getElementById("collect").hidden = mode !== "collect";
    for (const radio of document.querySelectorAll('input[name="mode"]')) {
      radio.checked = radio.value === mode;
    }
    schedule();
  }

  document.getElementById("undo").addEventListener("click", undo);
  document.getElementById("clear").addEventListener("click", clear);
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => setMode(radio.value));
  }

  document.addEventListener("keydown", (event) => {
    const typing = event.target instanceof HTMLInputElement && event.target.type === "text";
    if (typing || event.altKey || event.metaKey) return;
    const key = event.key.toLowerCase();
    if (mode === "collect" && !event.ctrlKey && /^[0-9]$/.test(key)) {
      chooseLabel(key);
    } else if (mode === "collect" && !event.ctrlKey && key === "s") {
      event.preventDefault();
      saveSample();
    } else if ((event.ctrlKey && key === "z") || (!event.ctrlKey && key === "u")) {
      event.preventDefault();
      undo();
    } else if (!event.ctrlKey && (key === "delete" || key === "c" || key === "escape")) {
      clear();
    } else if (!event.ctrlKey && key === "n") {
      setMode(mode === "number" ? "digit" : "number");
    }
  });

  fileInput.addEventListener("change", () => {
    const file = fileInput.files[0];
    if (!file) return;
    const image = new Image();
    image.onload = () => {
      items = [{ image, file }];
      redraw();
      schedule();
      URL.revokeObjectURL(image.src);
    };
    image.onerror = () => {
      // The browser cannot show it (e.g. TIFF); the server may still read it.
      items = [];
      redraw();
      predict(file);
    };
    image.src = URL.createObjectURL(file);
    fileInput.value = "";
  });

  // -------------------------------------------------------------------- prediction

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(() => {
      // a stroke that ends just after it was saved must not wipe the "Saved as" status
      if (!items.length) return answer.dataset.state === "empty" || showEmpty();
      // An untouched upload is sent as the original file, not the canvas copy.
      const only = items.length === 1 && items[0].file;
      if (only) predict(items[0].file);
      else pad.toBlob((blob) => predict(blob), "image/png");
    }, DEBOUNCE_MS);
  }

  async function predict(blob) {
    const mine = ++sequence;
    const form = new FormData();
    form.append("image", blob, "pad.png");
    const query = `?explain=1${mode === "number" ? "&mode=number" : ""}`;
    const shownMode = mode;
    try {
      const response = await fetch(`/v1/predict${query}`, { method: "POST", body: form });
      const body = await response.json();
      if (mine !== sequence) return;
      if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
      setStatus("");
      if (shownMode === "number") showNumber(body);
      else showDigit(body);
    } catch (error) {
      if (mine === sequence) setStatus(error.message, true);
    }
  }

  function setStatus(text, isError = false) {
    status.textContent = text;
    status.classList.toggle("error", isError);
  }

  function showEmpty() {
    clearTimeout(timer); // a read still waiting for strokes now gone would clear the status
    sequence++;
    answer.textContent = "–";
    answer.dataset.state = "empty";
    confidence.textContent = "";
    renderBars(new Array(10).fill(0), -1);
    pieces.replaceChildren();
    seen.hidden = true;
    setStatus("");
  }

  function percent(p) {
    return `${(100 * p).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1)}%`;
  }

  function showDigit(result) {
    if (result.is_digit) {
      answer.textContent = String(result.digit);
      answer.dataset.state = "digit";
      confidence.textContent = `${percent(result.confidence)} sure`;
    } else {
      answer.textContent = "not a digit";
      answer.dataset.state = "reject";
      confidence.textContent = "";
    }
    const best = result.probabilities.indexOf(Math.max(...result.probabilities));
    renderBars(result.probabilities, best);
    if (result.input) {
      seen.src = `data:image/png;base64,${result.input}`;
      seen.hidden = false;
    }
  }

  function showNumber(result) {
    if (result.number !== null) {
      answer.textContent = result.number;
      answer.dataset.state = "digit";
    } else {
      answer.textContent = result.digits.length ? "not a number" : "–";
      answer.dataset.state = result.digits.length ? "reject" : "empty";
    }
    confidence.textContent = result.digits.length
      ? `${result.digits.length} digit${result.digits.length > 1 ? "s" : ""}`
      : "";
    pieces.replaceChildren(
      ...result.digits.map((d) => {
        const li = document.createElement("li");
        if (d.input) {
          const img = document.createElement("img");
          img.src = `data:image/png;base64,${d.input}`;
          img.alt = `28 by 28 input read as ${d.digit ?? "unsure"}`;
          li.append(img);
        }
        li.append(d.digit === null ? "?" : String(d.digit) + (d.is_digit ? "" : "?"));
        const small = document.createElement("small");
        small.textContent = percent(d.confidence);
        li.append(small);
        return li;
      }),
    );
  }

  function renderBars(probabilities, best) {
    if (bars.children.length !== 10) {
      bars.replaceChildren(
        ...probabilities.map((_, digit) => {
          const li = document.createElement("li");
          li.innerHTML =
            `<span class="label">${digit}</span>` +
            '<span class="track" role="meter" aria-valuemin="0" aria-valuemax="100">' +
            '<span class="fill"></span></span><span class="pct"></span>';
          li.querySelector(".track").setAttribute("aria-label", `probability of ${digit}`);
          return li;
        }),
      );
    }
    probabilities.forEach((p, digit) => {
      const li = bars.children[digit];
      li.classList.toggle("best", digit === best);
      li.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
      li.querySelector(".track").setAttribute("aria-valuenow", (100 * p).toFixed(1));
      li.querySelector(".pct").textContent = best < 0 ? "" : percent(p);
    });
  }

  // -------------------------------------------------------------------- collect mode

  function labelName(label) {
    return label === "none" ? "not a digit" : label;
  }

  function buildLabels() {
    const labels = [..."0123456789", "none"];
    document.getElementById("labels").replaceChildren(
      ...labels.map((label) => {
        const tile = document.createElement("label");
        tile.className = "tile";
        tile.dataset.label = label;
        tile.innerHTML =
          `<input type="radio" name="label" value="${label}">` +
          `<span class="name">${labelName(label)}</span>` +
          `<span class="count" id="count-${label}">0</span>`;
        tile.querySelector("input").addEventListener("change", () => chooseLabel(label));
        return tile;
      }),
    );
  }

  function chooseLabel(label) {
    collectLabel = label;
    for (const tile of document.querySelectorAll("#labels .tile")) {
      const chosen = tile.dataset.label === label;
      tile.classList.toggle("chosen", chosen);
      tile.querySelector("input").checked = chosen;
    }
    updateSave();
  }

  function updateSave() {
    saveButton.disabled = saving || !collectLabel || !items.length;
    saveButton.textContent = collectLabel
      ? `Save as ${labelName(collectLabel)}`
      : "Choose what you write";
  }

  function showCounts(summary) {
    for (const [label, count] of Object.entries(summary.counts)) {
      const cell = document.getElementById(`count-${label}`);
      if (cell) cell.textContent = String(count);
    }
    document.getElementById("collect-total").textContent =
      `${summary.total.toLocaleString()} of at most ${summary.max_files.toLocaleString()} samples`;
    document.getElementById("finetune").textContent = summary.finetune;
  }

  async function refreshCounts() {
    try {
      const response = await fetch("/v1/collect");
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
      showCounts(body);
    } catch (error) {
      setStatus(error.message, true);
    }
  }

  async function saveSample() {
    if (saving || !collectLabel || !items.length) return;
    saving = true;
    updateSave();
    const label = collectLabel;
    const drawn = items.slice(); // strokes begun while saving stay on the pad
    try {
      const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
      const form = new FormData();
      form.append("image", blob, "sample.png");
      const query = `?label=${encodeURIComponent(label)}`;
      const response = await fetch(`/v1/collect${query}`, { method: "POST", body: form });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
      showCounts(body);
      items = items.filter((item) => !drawn.includes(item));
      redraw();
      if (items.length) schedule();
      else showEmpty();
      const what = labelName(label);
      setStatus(
        body.duplicate
          ? `That drawing of ${what} was already saved.`
          : `Saved as ${what}: ${body.counts[label]} so far.`,
      );
    } catch (error) {
      setStatus(error.message, true);
    } finally {
      saving = false;
      updateSave();
    }
  }

  if (collectOn) {
    document.getElementById("collect-mode").hidden = false;
    saveButton.addEventListener("click", saveSample);
    buildLabels();
    refreshCounts();
  }

  redraw();
  showEmpty();
})();
