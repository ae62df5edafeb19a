/* Studio: the file picker (drag and drop or click, the same limits as the server), the task
   type picker built from /api/task-types, the price and balance, and task creation. */
"use strict";
(function () {
  const D = window.Darkroom;
  const TYPES = { "image/jpeg": true, "image/png": true, "image/webp": true };
  const EXT = /\.(jpe?g|png|webp)$/i;

  const form = document.getElementById("task-form");
  if (!form) return;
  const maxFiles = Number(form.dataset.maxFiles);
  const maxMb = Number(form.dataset.maxMb);
  let balance = Number(form.dataset.balance);
  const input = document.getElementById("file-input");
  const zone = document.getElementById("dropzone");
  const list = document.getElementById("file-list");
  const selected = document.getElementById("selected");
  const errorsBox = document.getElementById("file-errors");
  const submitError = document.getElementById("submit-error");
  const submit = document.getElementById("submit");
  let files = [];
  let types = [];
  let current = null;

  function showErrors(box, messages) {
    box.replaceChildren();
    if (!messages.length) { box.hidden = true; return; }
    if (box === errorsBox) {
      const p = document.createElement("p");
      p.textContent = D.t("upload.errors");
      box.append(p);
    }
    const ul = document.createElement("ul");
    for (const m of messages) { const li = document.createElement("li"); li.textContent = m; ul.append(li); }
    box.append(ul);
    box.hidden = false;
  }

  function limitFor() {
    return current ? Math.min(maxFiles, current.maxFiles || maxFiles) : maxFiles;
  }

  function addFiles(incoming) {
    const errors = [];
    for (const file of incoming) {
      const name = file.name || "file";
      const mb = file.size / (1024 * 1024);
      if (!TYPES[file.type] && !(file.type === "" && EXT.test(name))) errors.push(D.t("upload.err_type", { name }));
      else if (file.size === 0) errors.push(D.t("upload.err_empty", { name }));
      else if (mb > maxMb) errors.push(D.t("upload.err_size", { name, size: mb.toFixed(1), mb: maxMb }));
      else if (files.some((f) => f.name === file.name && f.size === file.size && f.lastModified === file.lastModified))
        errors.push(D.t("upload.err_dup", { name }));
      else if (files.length >= limitFor()) errors.push(D.t("upload.err_count", { name, n: limitFor() }));
      else files.push(file);
    }
    showErrors(errorsBox, errors);
    renderFiles();
  }

  function renderFiles() {
    for (const img of list.querySelectorAll("img")) URL.revokeObjectURL(img.src);
    list.replaceChildren();
    files.forEach((file, index) => {
      const li = document.createElement("li");
      const img = document.createElement("img");
      img.src = URL.createObjectURL(file);
      img.alt = "";
      img.width = 48; img.height = 48;
      const name = document.createElement("span");
      name.className = "file-name";
      const size = file.size < 1024 * 1024 ? Math.max(1, Math.round(file.size / 1024)) + " KB"
        : (file.size / (1024 * 1024)).toFixed(1) + " MB";
      name.textContent = file.name + " (" + size + ")";
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "remove";
      remove.textContent = "×";
      remove.setAttribute("aria-label", D.t("upload.remove", { name: file.name }));
      remove.addEventListener("click", () => {
        files.splice(index, 1);
        renderFiles();
        (list.querySelector("button.remove") || input).focus();
      });
      li.append(img, name, remove);
      list.append(li);
    });
    selected.hidden = files.length === 0;
    updatePrice();
  }

  input.addEventListener("change", () => { addFiles(Array.from(input.files || [])); input.value = ""; });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.remove("dragging"); });
  }
  zone.addEventListener("drop", (e) => {
    if (e.dataTransfer && e.dataTransfer.files) addFiles(Array.from(e.dataTransfer.files));
  });

  // --- task types ---------------------------------------------------------------------------

  function valueName(param, value) {
    const key = "value." + param + "." + value;
    const named = D.t(key);
    return named !== key ? named : String(value).replace(/_/g, " ");
  }

  function paramField(name, spec) {
    const wrap = document.createElement("div");
    wrap.className = "param";
    const id = "param-" + name;
    const label = document.createElement("label");
    label.htmlFor = id;
    const key = "param." + name;
    label.textContent = name === "style" ? D.t("studio.style") : D.t(key) !== key ? D.t(key) : name.replace(/_/g, " ");
    if (spec.description) label.title = spec.description;
    let control;
    if (name === "style" && spec.allowed) {
      control = document.createElement("div");
      control.className = "style-tiles";
      control.setAttribute("role", "radiogroup");
      control.setAttribute("aria-label", D.t("studio.style"));
      const fs = document.createElement("fieldset");
      fs.className = "param";
      const legend = document.createElement("legend");
      legend.textContent = D.t("studio.style");
      fs.append(legend, control);
      for (const value of spec.allowed) {
        const tile = document.createElement("label");
        tile.className = "tile";
        const radio = document.createElement("input");
        radio.type = "radio"; radio.name = "style"; radio.value = value;
        radio.checked = value === spec.default;
        radio.dataset.param = name;
        const img = document.createElement("img");
        img.src = "/static/styles/" + value + ".jpg";
        img.alt = ""; img.width = 72; img.height = 72; img.loading = "lazy";
        const caption = document.createElement("span");
        caption.textContent = valueName(name, value);
        tile.append(radio, img, caption);
        control.append(tile);
      }
      return fs;
    }
    if (spec.allowed) {
      control = document.createElement("select");
      for (const value of spec.allowed) {
        const o = document.createElement("option");
        o.value = value; o.textContent = valueName(name, value);
        o.selected = value === spec.default;
        control.append(o);
      }
    } else if (spec.type === "boolean") {
      control = document.createElement("input");
      control.type = "checkbox";
      control.checked = Boolean(spec.default);
      wrap.classList.add("check");
    } else if (spec.type === "number" || spec.type === "integer") {
      control = document.createElement("input");
      control.type = "number";
      if (spec.minimum !== null && spec.minimum !== undefined) control.min = spec.minimum;
      if (spec.maximum !== null && spec.maximum !== undefined) control.max = spec.maximum;
      control.step = spec.type === "integer" ? "1" : "0.05";
      control.value = spec.default ?? "";
    } else {
      control = document.createElement("input");
      control.type = "text";
      control.value = spec.default ?? "";
    }
    control.id = id;
    control.dataset.param = name;
    control.dataset.kind = spec.type;
    wrap.append(label, control);
    return wrap;
  }

  function selectType(type) {
    current = type;
    const fields = document.getElementById("param-fields");
    fields.replaceChildren();
    const names = Object.keys(type.parameters || {});
    for (const name of names) fields.append(paramField(name, type.parameters[name]));
    document.getElementById("params").hidden = names.length === 0;
    updatePrice();
  }

  function updatePrice() {
    const price = current ? current.price : 0;
    document.getElementById("price").textContent = current ? D.t("studio.price", { price, count: price }) : "";
    document.getElementById("balance").textContent = D.t("studio.balance", { balance, count: balance });
  }

  function collectParams() {
    const params = {};
    for (const el of form.querySelectorAll("#param-fields [data-param]")) {
      const name = el.dataset.param;
      if (el.type === "radio") { if (el.checked) params[name] = el.value; continue; }
      if (el.type === "checkbox") params[name] = el.checked;
      else if (el.dataset.kind === "number") params[name] = Number(el.value);
      else if (el.dataset.kind === "integer") params[name] = parseInt(el.value, 10);
      else params[name] = el.value;
    }
    return params;
  }

  async function loadTypes() {
    const box = document.getElementById("type-list");
    try {
      types = (await D.api("GET", "/api/task-types")).data;
    } catch (err) {
      showErrors(submitError, [D.errorText(err)]);
      return;
    }
    let first = null;
    for (const type of types) {
      const label = document.createElement("label");
      label.className = "type-option" + (type.available ? "" : " unavailable");
      const radio = document.createElement("input");
      radio.type = "radio"; radio.name = "taskType"; radio.value = type.taskType;
      radio.disabled = !type.available;
      radio.addEventListener("change", () => selectType(type));
      const name = document.createElement("span");
      name.className = "type-name";
      name.textContent = D.t("type." + type.taskType);
      const meta = document.createElement("span");
      meta.className = "type-meta";
      meta.textContent = type.available ? D.t("studio.price", { price: type.price, count: type.price }) : D.t("studio.unavailable");
      label.title = type.description || "";
      label.append(radio, name, meta);
      box.append(label);
      if (type.available && !first) { first = radio; radio.checked = true; selectType(type); }
    }
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const problems = [];
    if (!files.length) problems.push(D.t("studio.need_files"));
    if (current && current.price > balance) problems.push(D.t("studio.not_enough", { price: current.price, balance }));
    if (problems.length) { showErrors(submitError, problems); return; }
    showErrors(submitError, []);
    const data = new FormData();
    data.append("taskType", current.taskType);
    data.append("parameters", JSON.stringify(collectParams()));
    for (const f of files) data.append("files", f, f.name);
    submit.disabled = true;
    submit.textContent = D.t("studio.submitting");
    try {
      const created = (await D.api("POST", "/api/tasks", data)).data;
      files = [];
      renderFiles();
      showErrors(errorsBox, []);
      D.toast(D.t("studio.created", { taskNo: created.taskNo }));
      await window.DarkroomLive.refreshCard(created.id);
      try { balance = (await D.api("GET", "/api/me")).data.credits; } catch (err) { /* keep the old one */ }
      updatePrice();
    } catch (err) {
      showErrors(submitError, [D.errorText(err)]);
    } finally {
      submit.disabled = false;
      submit.textContent = D.t("studio.submit");
    }
  });

  document.addEventListener("darkroom:task", async (e) => {
    if (["completed", "failed", "canceled"].includes(e.detail.status)) {
      try { balance = (await D.api("GET", "/api/me")).data.credits; updatePrice(); } catch (err) { /* ignore */ }
    }
  });

  loadTypes();
})();
