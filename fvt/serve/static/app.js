// The fvt serve page: drop or choose photos, each is sent to v1/predict (one request per photo, a few at
// a time: the server batches them) and answered with its top labels and their probabilities.
// Plain DOM, no framework and nothing from the network but this server. Names are set with
// textContent, never as HTML: a file name is the uploader's text.
(function () {
  "use strict";
  const IN_FLIGHT = 4;
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem("fvt-token") || "";

  function headers() {
    return token ? { Authorization: "Bearer " + token } : {};
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  async function describeModel() {
    const resp = await fetch("v1/model", { headers: headers() });
    if (resp.status === 401) {
      $("token-box").hidden = false;
      $("model").textContent = "The model is behind a token.";
      return;
    }
    const info = await resp.json();
    if (!resp.ok) {
      $("model").textContent = "Not ready: " + (info.error || resp.status);
      return;
    }
    $("token-box").hidden = true;
    $("model").textContent = info.name + " (version " + info.version + ", " + info.backend + ") - " +
      info.classes.length + " classes: " + info.classes.slice(0, 12).join(", ") +
      (info.classes.length > 12 ? ", ..." : "");
  }

  function showAnswer(card, row) {
    card.appendChild(el("div", "label", row.pred + " (" + (100 * row.prob).toFixed(1) + "%)"));
    for (const t of row.topk) {
      const bar = el("div", "bar");
      bar.appendChild(el("span", "lab", t.label));
      const track = el("span", "track");
      const fill = el("span", "fill");
      fill.style.width = (100 * t.prob).toFixed(1) + "%";
      track.appendChild(fill);
      bar.appendChild(track);
      bar.appendChild(el("span", "pct", (100 * t.prob).toFixed(1) + "%"));
      card.appendChild(bar);
    }
    card.classList.add("done");
  }

  function showError(card, message) {
    card.classList.add("error", "done");
    card.appendChild(el("div", "label", message));
  }

  async function classify(file) {
    const card = el("li", "card");
    const img = el("img");
    img.alt = file.name;
    img.addEventListener("error", () => img.remove()); // a file the browser cannot show either
    img.src = URL.createObjectURL(file);
    card.appendChild(img);
    card.appendChild(el("div", "name", file.name));
    $("results").prepend(card);
    const body = new FormData();
    body.append("file", file, file.name);
    try {
      const resp = await fetch("v1/predict", { method: "POST", body: body, headers: headers() });
      const doc = await resp.json().catch(() => ({ error: "HTTP " + resp.status }));
      if (resp.ok) {
        showAnswer(card, doc.predictions[0]);
      } else {
        const why = (doc.files && doc.files[0] && doc.files[0].error) || doc.error || ("HTTP " + resp.status);
        showError(card, why);
        if (resp.status === 401) $("token-box").hidden = false;
      }
    } catch (e) {
      showError(card, "no answer from the server: " + e);
    }
  }

  async function handleFiles(fileList) {
    const files = Array.from(fileList);
    let next = 0, done = 0;
    $("status").textContent = "Classifying " + files.length + " photo(s)...";
    async function lane() {
      while (next < files.length) {
        await classify(files[next++]);
        done++;
      }
    }
    await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, files.length) }, lane));
    $("status").textContent = done + " photo(s) classified.";
  }

  const drop = $("drop");
  ["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (e) => {
    e.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => drop.addEventListener(type, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer && e.dataTransfer.files.length) handleFiles(e.dataTransfer.files);
  });
  $("files").addEventListener("change", (e) => {
    if (e.target.files.length) handleFiles(e.target.files);
    e.target.value = "";
  });
  $("token-save").addEventListener("click", () => {
    token = $("token").value.trim();
    sessionStorage.setItem("fvt-token", token);
    describeModel();
  });
  describeModel();
})();
