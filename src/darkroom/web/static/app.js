/* Shared helpers: JSON API calls with the CSRF header, translated strings, local dates. */
"use strict";
(function () {
  const body = document.body;
  const strings = JSON.parse(body.dataset.strings || "{}");
  const locale = body.dataset.locale || "en";

  /** key's text with values filled in; with values.count === 1 its ".one" variant if it has one. */
  function t(key, values) {
    let text = (values && values.count === 1 && strings[key + ".one"]) || strings[key] || key;
    if (values) {
      for (const [k, v] of Object.entries(values)) text = text.split("{" + k + "}").join(String(v));
    }
    return text;
  }

  /** Call the JSON API. Resolves with the envelope; rejects with {code, message, status}. */
  async function api(method, url, payload) {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (method !== "GET") init.headers["X-CSRF-Token"] = body.dataset.csrf;
    if (payload instanceof FormData) init.body = payload;
    else if (payload !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (e) {
      throw { code: "network_error", message: t("error.network"), status: 0 };
    }
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok || !data || data.success === false) {
      throw {
        code: (data && data.code) || "http_" + response.status,
        message: (data && data.message) || response.status + " " + response.statusText,
        status: response.status,
      };
    }
    return data;
  }

  function formatDates(root) {
    const fmt = new Intl.DateTimeFormat(locale, { dateStyle: "medium", timeStyle: "short" });
    for (const el of (root || document).querySelectorAll("time[datetime]")) {
      const d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) { el.textContent = fmt.format(d); el.title = d.toISOString(); }
    }
  }

  let toastTimer = null;
  function toast(message) {
    const el = document.getElementById("toast");
    if (!el) return;
    el.textContent = message;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, 5000);
  }

  function errorText(err) {
    return err.code && err.code !== "network_error" ? err.message + " (" + err.code + ")" : err.message;
  }

  window.Darkroom = { t, api, formatDates, toast, errorText, locale };
  document.addEventListener("DOMContentLoaded", () => formatDates(document));
})();
