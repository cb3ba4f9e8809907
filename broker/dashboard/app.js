// The rollout dashboard: updates list, one page per OTA update (counts over time from the job's
// server-sent events, rollout and abort criteria, MB/s, ETA, a canvas grid of every device,
// pause/resume/cancel) and one page per device (execution history, reported firmware, slots,
// security counter, last boot log). Plain browser JavaScript, no build step; uPlot draws the chart.

/**
 * Colours of execution statuses. PENDING: not notified yet by the rollout; NEVER_NOTIFIED: the
 * rollout stopped (cancel, abort, end of schedule) before it reached the device.
 */
const COLORS = {
  PENDING: "#d1d5db",
  NEVER_NOTIFIED: "#fde68a",
  QUEUED: "#94a3b8",
  IN_PROGRESS: "#3b82f6",
  SUCCEEDED: "#16a34a",
  FAILED: "#dc2626",
  TIMED_OUT: "#f59e0b",
  REJECTED: "#a855f7",
  CANCELED: "#4b5563",
  REMOVED: "#111827",
};
const STATUSES = Object.keys(COLORS);
/** Where a status's number is in a job's counts (the two not-notified ones are not statuses). */
const COUNT_KEYS = { PENDING: "pending", NEVER_NOTIFIED: "neverNotified" };

function countOf(counts, status) {
  return counts[COUNT_KEYS[status] ?? status] ?? 0;
}
/** Statuses nothing more will happen to (a device the rollout never reached included). */
const TERMINAL = new Set([
  "SUCCEEDED",
  "FAILED",
  "TIMED_OUT",
  "REJECTED",
  "CANCELED",
  "REMOVED",
  "NEVER_NOTIFIED",
]);

const view = document.getElementById("view");
const crumbs = document.getElementById("crumbs");
const login = document.getElementById("login");
/** Stops whatever the current page keeps running (timers, event streams, charts). */
let leave = () => {};

// ---- operator token and API -------------------------------------------------------------------

function token() {
  return sessionStorage.getItem("ota-operator-token") ?? "";
}

class Unauthorized extends Error {}

async function api(path, init = {}) {
  const response = await fetch(`/api${path}`, {
    ...init,
    headers: { authorization: `Bearer ${token()}`, "content-type": "application/json" },
  });
  if (response.status === 401) throw new Unauthorized("missing, wrong or revoked operator token");
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error ?? `HTTP ${response.status}`);
  return body;
}

function askForToken(message) {
  login.hidden = false;
  document.getElementById("login-error").textContent = message ?? "";
  document.getElementById("token").focus();
}

login.addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("ota-operator-token", document.getElementById("token").value);
  login.hidden = true;
  render();
});

// ---- small DOM helpers ------------------------------------------------------------------------

function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** Replaces an element's children, skipping null, undefined and false (DOM would print them). */
function fill(element, ...children) {
  element.replaceChildren(
    ...children.flat().filter((c) => c !== null && c !== undefined && c !== false),
  );
}

function badge(status) {
  return h("span", {
    class: "badge",
    style: `background:${COLORS[status] ?? "#6b7280"}`,
    "data-status": status,
  }, status);
}

function setCrumbs(...parts) {
  fill(crumbs, parts.flatMap((part, i) => i === 0 ? [part] : [" / ", part]));
}

function total(counts) {
  return STATUSES.reduce((sum, status) => sum + countOf(counts, status), 0);
}

function done(counts) {
  return [...TERMINAL].reduce((sum, status) => sum + countOf(counts, status), 0);
}

function progressBar(counts) {
  const all = Math.max(1, total(counts));
  return h(
    "span",
    { class: "bar", title: `${done(counts)} of ${total(counts)} ended` },
    ...STATUSES.filter((s) => countOf(counts, s) > 0).map((status) =>
      h("span", {
        style: `background:${COLORS[status]};width:${(100 * countOf(counts, status)) / all}%`,
      })
    ),
  );
}

function when(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : "";
}

// ---- pages ------------------------------------------------------------------------------------

async function updatesPage() {
  setCrumbs("updates");
  const table = h("table", { id: "updates" });
  fill(view, h("h1", {}, "OTA updates"), table);
  const refresh = async () => {
    const updates = await api("/ota-updates");
    fill(
      table,
      h(
        "tr",
        {},
        ["update", "version", "status", "progress", "ended", "created"].map((t) => h("th", {}, t)),
      ),
      ...updates.map((u) =>
        h(
          "tr",
          {},
          h(
            "td",
            {},
            h("a", { href: `#/update/${encodeURIComponent(u.otaUpdateId)}` }, u.otaUpdateId),
          ),
          h("td", {}, u.version ?? ""),
          h("td", {}, badge(u.status)),
          h("td", {}, progressBar(u.counts)),
          h("td", {}, `${done(u.counts)} / ${total(u.counts)}`),
          h("td", { class: "muted" }, when(u.createdAt)),
        )
      ),
    );
    if (updates.length === 0) {
      table.append(h("tr", {}, h("td", { class: "muted" }, "no OTA update yet")));
    }
  };
  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 2000);
  leave = () => clearInterval(timer);
}

/** Follows the job's server-sent events (fetch, so the token goes in a header). */
async function follow(jobId, onProgress, signal) {
  const response = await fetch(`/api/jobs/${encodeURIComponent(jobId)}/events`, {
    headers: { authorization: `Bearer ${token()}` },
    signal,
  });
  if (!response.ok || !response.body) return;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const chunk = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = /^data: (.*)$/m.exec(chunk)?.[1];
      if (data) onProgress(JSON.parse(data));
    }
  }
}

function rolloutText(rollout) {
  if (!rollout) return "all at once";
  if (rollout.exponentialRate) {
    const e = rollout.exponentialRate;
    const after = e.rateIncreaseCriteria?.numberOfNotifiedThings
      ? `${e.rateIncreaseCriteria.numberOfNotifiedThings} notified`
      : `${e.rateIncreaseCriteria?.numberOfSucceededThings} succeeded`;
    return `exponential: ${e.baseRatePerMinute}/min, x${e.incrementFactor} every ${after}`;
  }
  return `${rollout.maximumPerMinute}/min`;
}

/** How close the fleet is to each abort criterion. */
function abortRows(criteria, counts) {
  const executed = done(counts);
  return criteria.map((c) => {
    const failures = c.failureType === "ALL"
      ? (counts.FAILED ?? 0) + (counts.TIMED_OUT ?? 0) + (counts.REJECTED ?? 0)
      : counts[c.failureType === "TIMED_OUT" ? "TIMED_OUT" : c.failureType] ?? 0;
    const percent = executed > 0 ? (100 * failures) / executed : 0;
    const near = Math.min(1, percent / c.thresholdPercentage);
    const armed = executed >= c.minNumberOfExecutedThings;
    return h(
      "tr",
      {},
      h("td", {}, `${c.action} when ${c.failureType} >= ${c.thresholdPercentage}%`),
      h("td", {}, `after ${c.minNumberOfExecutedThings} executed`),
      h(
        "td",
        {},
        h(
          "span",
          { class: "meter" },
          h("span", {
            style: `width:${100 * near}%;background:${near >= 1 ? "#dc2626" : "#f59e0b"}`,
          }),
        ),
        ` ${percent.toFixed(1)}% of ${executed} executed${armed ? "" : " (not armed yet)"}`,
      ),
    );
  });
}

function gridPainter(canvas, tooltip, onPick) {
  let devices = [];
  let cell = 12;
  const layout = () => {
    const width = Math.max(200, canvas.parentElement.clientWidth - 2);
    cell = devices.length > 4000 ? 6 : devices.length > 1000 ? 9 : 14;
    const columns = Math.max(1, Math.floor(width / cell));
    canvas.width = width;
    canvas.height = Math.max(cell, Math.ceil(devices.length / columns) * cell);
    return columns;
  };
  const paint = () => {
    const columns = layout();
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, canvas.width, canvas.height);
    devices.forEach((device, i) => {
      context.fillStyle = COLORS[device.status] ?? "#6b7280";
      context.fillRect((i % columns) * cell, Math.floor(i / columns) * cell, cell - 1, cell - 1);
    });
    canvas.dataset.devices = String(devices.length);
  };
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    const columns = Math.max(1, Math.floor(canvas.width / cell));
    const column = Math.floor((event.clientX - box.left) / cell);
    const row = Math.floor((event.clientY - box.top) / cell);
    return column < columns ? devices[row * columns + column] : undefined;
  };
  canvas.addEventListener("mousemove", (event) => {
    const device = at(event);
    tooltip.hidden = !device;
    if (!device) return;
    tooltip.textContent = `${device.thing} · ${device.status} · ${device.version ?? "?"}`;
    tooltip.style.left = `${event.clientX + 12}px`;
    tooltip.style.top = `${event.clientY + 12}px`;
  });
  canvas.addEventListener("mouseleave", () => tooltip.hidden = true);
  canvas.addEventListener("click", (event) => {
    const device = at(event);
    if (device) onPick(device);
  });
  return {
    set(next) {
      devices = next;
      paint();
    },
    paint,
  };
}

async function updatePage(id) {
  const controller = new AbortController();
  const timers = [];
  let chart = null;
  leave = () => {
    controller.abort();
    timers.forEach(clearInterval);
    chart?.destroy();
  };
  setCrumbs(h("a", { href: "#/" }, "updates"), id);
  let update = await api(`/ota-updates/${encodeURIComponent(id)}`);
  const header = h("div");
  const tiles = h("div", { class: "tiles", id: "counts" });
  const rates = h("div", { class: "tiles", id: "rates" });
  const config = h("table", { id: "criteria" });
  const chartBox = h("div", { id: "chart" });
  const filters = h("div", { class: "filters" });
  const legend = h(
    "div",
    { class: "legend" },
    STATUSES.map((s) =>
      h("span", {}, h("span", { class: "swatch", style: `background:${COLORS[s]}` }), s)
    ),
  );
  const canvas = h("canvas", { id: "grid", width: 400, height: 20 });
  const tooltip = h("div", { id: "tooltip", hidden: true });
  const failures = h("table", { id: "failures" });
  const message = h("div", { class: "error", role: "alert" });
  fill(
    view,
    header,
    message,
    tiles,
    rates,
    h("h2", {}, "Executions over time"),
    chartBox,
    h("h2", {}, "Rollout and abort criteria"),
    config,
    h("h2", {}, "Devices"),
    filters,
    legend,
    h("div", {}, canvas),
    tooltip,
    h("h2", {}, "Failures by reason"),
    failures,
  );

  const act = async (action) => {
    try {
      await api(`/jobs/${encodeURIComponent(update.jobId)}/${action}`, {
        method: "POST",
        body: JSON.stringify(action === "cancel" ? { reason: "canceled from the dashboard" } : {}),
      });
      message.textContent = "";
      update = await api(`/ota-updates/${encodeURIComponent(id)}`);
      drawHeader();
    } catch (error) {
      message.textContent = `${action} failed: ${error.message}`;
    }
  };
  let confirming = false;
  const drawHeader = () => {
    const status = update.job.status ?? update.status;
    const ended = status === "COMPLETED" || status === "CANCELED";
    fill(
      header,
      h("h1", {}, `${id} `, update.version ? `(${update.version}) ` : "", badge(status)),
      update.job.reason ? h("p", { class: "muted" }, update.job.reason) : null,
      // A viewer sees the update, not the controls (the API refuses them to a viewer anyway).
      !mayAct() ? null : h(
        "div",
        { class: "actions" },
        h("button", {
          id: "pause",
          disabled: status !== "IN_PROGRESS",
          onclick: () => act("pause"),
        }, "Pause"),
        h(
          "button",
          { id: "resume", disabled: status !== "PAUSED", onclick: () => act("resume") },
          "Resume",
        ),
        confirming
          ? [
            h("span", {}, "Cancel this update?"),
            h("button", {
              id: "cancel-confirm",
              class: "danger",
              onclick: () => {
                confirming = false;
                act("cancel");
              },
            }, "Yes, cancel it"),
            h("button", {
              onclick: () => {
                confirming = false;
                drawHeader();
              },
            }, "No"),
          ]
          : h("button", {
            id: "cancel",
            class: "danger",
            disabled: ended,
            onclick: () => {
              confirming = true;
              drawHeader();
            },
          }, "Cancel"),
      ),
    );
  };
  drawHeader();

  // Counts over time: one series per status, from the job's history, then its event stream.
  // Times are the cloud's (scaled in simulations), in seconds since the job was created.
  const timeline = await api(`/jobs/${encodeURIComponent(update.jobId)}/timeline`);
  const series = [[], ...STATUSES.map(() => [])];
  const addPoint = (at, counts) => {
    const x = (at - timeline.createdAt) / 1000;
    // Points come in time order; an ended job's last event repeats its end, which the chart
    // already has: the axis ends where the job did.
    if (series[0].length > 0 && x <= series[0].at(-1)) return;
    series[0].push(x);
    STATUSES.forEach((s, i) => series[i + 1].push(countOf(counts, s)));
  };
  for (const point of timeline.points) addPoint(point.at, point.counts);
  chartBox.dataset.end = String(series[0].at(-1) ?? 0);
  const samples = [];
  chart = new uPlot(
    {
      width: Math.max(320, view.clientWidth - 20),
      height: 240,
      scales: { x: { time: false } },
      axes: [{ label: "seconds since the job started (cloud clock)" }, { label: "devices" }],
      series: [{ label: "t" }, ...STATUSES.map((s) => ({ label: s, stroke: COLORS[s], width: 2 }))],
    },
    series,
    chartBox,
  );

  const drawCounts = (counts, status) => {
    fill(
      tiles,
      ...STATUSES.map((s) =>
        h(
          "div",
          { class: "tile", "data-status": s },
          h("div", { class: "n" }, countOf(counts, s)),
          h("div", { class: "k" }, s),
        )
      ),
    );
    // MB/s and ETA from the last 10 s (real time) of samples.
    const now = performance.now() / 1000;
    samples.push({ t: now, succeeded: counts.SUCCEEDED ?? 0, ended: done(counts) });
    while (samples.length > 2 && now - samples[0].t > 10) samples.shift();
    const first = samples[0];
    const span = now - first.t;
    const mbps = span > 0
      ? ((counts.SUCCEEDED - first.succeeded) * update.fileSize) / 1e6 / span
      : 0;
    const endRate = span > 0 ? (done(counts) - first.ended) / span : 0;
    const remaining = total(counts) - done(counts);
    const eta = status === "COMPLETED" || status === "CANCELED"
      ? "done"
      : endRate > 0
      ? `${Math.ceil(remaining / endRate)} s`
      : "?";
    fill(
      rates,
      h(
        "div",
        { class: "tile" },
        h("div", { class: "n", id: "ended" }, `${done(counts)} / ${total(counts)}`),
        h("div", { class: "k" }, "ended"),
      ),
      h(
        "div",
        { class: "tile" },
        h("div", { class: "n", id: "mbps" }, mbps.toFixed(2)),
        h("div", { class: "k" }, "MB/s"),
      ),
      h(
        "div",
        { class: "tile" },
        h("div", { class: "n", id: "eta" }, eta),
        h("div", { class: "k" }, "ETA"),
      ),
      h(
        "div",
        { class: "tile" },
        h("div", { class: "n" }, `${(update.fileSize / 1024).toFixed(0)} KiB`),
        h("div", { class: "k" }, "image"),
      ),
    );
    fill(
      config,
      h(
        "tr",
        {},
        h("td", {}, "rollout"),
        h(
          "td",
          { colspan: 2 },
          rolloutText(update.job.rollout),
          ` · ${update.job.notified} notified, ${update.job.pending} waiting`,
        ),
      ),
      ...abortRows(update.job.abort, counts),
      update.job.abort.length === 0
        ? h(
          "tr",
          {},
          h("td", {}, "abort"),
          h("td", { colspan: 2, class: "muted" }, "no abort criterion"),
        )
        : null,
    );
  };
  const onProgress = (event) => {
    addPoint(event.at, event.counts);
    chart.setData(series);
    chartBox.dataset.end = String(series[0].at(-1) ?? 0);
    update.job.status = event.status;
    update.job.reason = event.reason;
    drawCounts(event.counts, event.status);
    if (!confirming) drawHeader();
  };
  drawCounts(update.counts, update.status);
  follow(update.jobId, onProgress, controller.signal).catch(() => {});

  // The grid and the failures: every target device, refreshed every second.
  const picked = { status: "", version: "", group: "" };
  const grid = gridPainter(
    canvas,
    tooltip,
    (device) => location.hash = `#/device/${encodeURIComponent(device.thing)}`,
  );
  let devices = [];
  const select = (name, values) =>
    h(
      "label",
      {},
      `${name} `,
      h(
        "select",
        {
          id: `filter-${name}`,
          onchange: (event) => {
            picked[name] = event.target.value;
            drawDevices();
          },
        },
        h("option", { value: "" }, "all"),
        values.map((v) => h("option", { value: v, selected: picked[name] === v }, v)),
      ),
    );
  const drawDevices = () => {
    const shown = devices.filter((d) =>
      (!picked.status || d.status === picked.status) &&
      (!picked.version || d.version === picked.version) &&
      (!picked.group || d.groups.includes(picked.group))
    );
    grid.set(shown);
    const unique = (values) => [...new Set(values.filter(Boolean))].sort();
    fill(
      filters,
      select("status", unique(devices.map((d) => d.status))),
      select("version", unique(devices.map((d) => d.version))),
      select("group", unique(devices.flatMap((d) => d.groups))),
      h("span", { class: "muted", id: "shown" }, `${shown.length} of ${devices.length} shown`),
    );
  };
  /** Failures grouped by reason, with the reason in words and the devices of each group. */
  const drawFailures = (report) => {
    const link = (thing) =>
      h("a", { href: `#/device/${encodeURIComponent(thing)}`, class: "failed-device" }, thing);
    fill(
      failures,
      h("tr", {}, ["count", "status", "reason", "meaning", "devices"].map((t) => h("th", {}, t))),
      ...report.groups.map((g) =>
        h(
          "tr",
          { class: "failure-group" },
          h("td", { class: "count" }, g.count),
          h("td", {}, badge(g.status)),
          h("td", { class: "reason" }, g.reason ?? ""),
          h("td", { class: "meaning" }, g.meaning),
          h(
            "td",
            {},
            g.things.flatMap((thing, i) => i === 0 ? [link(thing)] : [", ", link(thing)]),
            g.count > g.things.length ? ` and ${g.count - g.things.length} more` : "",
            g.example.detail ? h("div", { class: "muted" }, g.example.detail) : null,
          ),
        )
      ),
    );
    if (report.groups.length === 0) {
      failures.append(h("tr", {}, h("td", { class: "muted", colspan: 5 }, "none")));
    }
  };
  const refreshDevices = async () => {
    const [listed, failed] = await Promise.all([
      api(`/ota-updates/${encodeURIComponent(id)}/devices`),
      api(`/ota-updates/${encodeURIComponent(id)}/failures`),
    ]);
    devices = listed.devices;
    drawDevices();
    drawFailures(failed);
  };
  await refreshDevices();
  timers.push(setInterval(() => refreshDevices().catch(() => {}), 1000));
  addEventListener("resize", grid.paint, { signal: controller.signal });
}

async function devicePage(thing) {
  setCrumbs(h("a", { href: "#/" }, "updates"), "device", thing);
  const [device, history] = await Promise.all([
    api(`/things/${encodeURIComponent(thing)}`),
    api(`/things/${encodeURIComponent(thing)}/history`),
  ]);
  const reported = device.shadow?.reported ?? null;
  const slot = (s) =>
    s
      ? `${s.version ?? "no image"}${s.imageOk ? ` (image_ok ${s.imageOk})` : ""}${
        s.failed === "set" ? " (failed)" : ""
      }`
      : "?";
  const facts = reported
    ? h(
      "dl",
      { class: "facts", id: "facts" },
      h("dt", {}, "firmware"),
      h(
        "dd",
        { id: "firmware" },
        `${reported.firmware ?? "?"}${reported.trial ? " (on trial)" : ""}`,
      ),
      ...(reported.mode === "recovery"
        ? [
          h("dt", {}, "mode"),
          h("dd", { id: "mode" }, `recovery (OTA only): ${reported.recoveryReason ?? "?"}`),
        ]
        : []),
      ...(reported.bootloader
        ? [
          h("dt", {}, "bootloader"),
          h(
            "dd",
            { id: "bootloader" },
            `${reported.bootloader.version} in slot ${reported.bootloader.slot}${
              reported.bootloader.trial ? " (on trial)" : ""
            }`,
          ),
        ]
        : []),
      h("dt", {}, "security counter"),
      h("dd", { id: "counter" }, reported.securityCounter),
      h("dt", {}, "primary slot"),
      h("dd", {}, slot(reported.slots?.primary)),
      h("dt", {}, "secondary slot"),
      h("dd", {}, slot(reported.slots?.secondary)),
      h("dt", {}, "update state"),
      h("dd", {}, reported.updateState ?? "?"),
      h("dt", {}, "OTA agent"),
      h(
        "dd",
        { id: "agent-stats" },
        reported.agent
          ? `${reported.agent.packetsProcessed} of ${reported.agent.packetsReceived} blocks processed, ${reported.agent.packetsDropped} dropped`
          : "not reported",
      ),
      h("dt", {}, "boots"),
      h("dd", {}, reported.boot?.count ?? "?"),
      h("dt", {}, "reported"),
      h(
        "dd",
        { class: "muted" },
        `${
          new Date(device.shadow.timestamp * 1000).toLocaleTimeString()
        } (version ${device.shadow.version})`,
      ),
    )
    : h("p", { class: "muted" }, "the device has not reported its state yet");
  const executions = h(
    "table",
    { id: "executions" },
    h("tr", {}, ["update", "status", "reason", "attempt", "updated"].map((t) => h("th", {}, t))),
    device.executions.map((e) =>
      h(
        "tr",
        {},
        h(
          "td",
          {},
          e.otaUpdateId
            ? h(
              "a",
              { href: `#/update/${encodeURIComponent(e.otaUpdateId)}`, class: "update-link" },
              e.otaUpdateId,
            )
            : e.jobId,
        ),
        h("td", {}, badge(e.status)),
        h("td", { class: "reason" }, e.statusDetails?.reason ?? ""),
        h("td", {}, e.executionNumber ?? 1),
        h("td", { class: "muted" }, when(e.updatedAt)),
      )
    ),
  );
  const events = h(
    "table",
    { id: "history" },
    h("tr", {}, ["time", "job", "event", "status", "details"].map((t) => h("th", {}, t))),
    history.history.map((entry) => {
      const { status, statusDetails, ...rest } = entry.detail ?? {};
      const details = statusDetails
        ? Object.entries(statusDetails).map(([k, v]) => `${k}: ${v}`).join(", ")
        : JSON.stringify(rest);
      return h(
        "tr",
        {},
        h("td", { class: "muted" }, when(entry.at)),
        h("td", {}, entry.jobId ?? ""),
        h("td", {}, entry.event),
        h("td", {}, status ? badge(status) : ""),
        h("td", {}, details),
      );
    }),
  );
  fill(
    view,
    h("h1", {}, thing),
    h("p", { class: "muted" }, `groups: ${device.groups.join(", ") || "none"}`),
    facts,
    h("h2", {}, "Last boot"),
    h("pre", { id: "boot-log" }, reported?.boot?.log?.join("\n") ?? "no boot reported"),
    h("h2", {}, "Executions"),
    executions,
    h("h2", {}, "Every status update"),
    events,
  );
  leave = () => {};
}

/** Who the token names: `{ name, role }` (asked once per token). */
let me = null;
let meFor = null;

async function whoAmI() {
  if (meFor !== token()) {
    me = await api("/whoami");
    meFor = token();
    document.getElementById("who").textContent = `${me.name} (${me.role})`;
  }
  return me;
}

/** Whether the operator may change updates (pause, resume, cancel): not a viewer. */
function mayAct() {
  return me !== null && me.role !== "viewer";
}

async function render() {
  leave();
  leave = () => {};
  if (!token()) return askForToken();
  const [, page, id] = location.hash.split("/").map(decodeURIComponent);
  try {
    await whoAmI();
    if (page === "update" && id) await updatePage(id);
    else if (page === "device" && id) await devicePage(id);
    else await updatesPage();
  } catch (error) {
    if (error instanceof Unauthorized) {
      sessionStorage.removeItem("ota-operator-token");
      meFor = null;
      document.getElementById("who").textContent = "";
      return askForToken(error.message);
    }
    fill(view, h("p", { class: "error", role: "alert" }, error.message));
  }
}

// A link may carry the token in its fragment (`#token=...`, as `deno task fleet --dashboard`
// prints it): it is kept for the session and never sent to the server in a URL.
const given = /^#token=([^&]+)(?:&(.*))?$/.exec(location.hash);
if (given) {
  sessionStorage.setItem("ota-operator-token", decodeURIComponent(given[1]));
  history.replaceState(null, "", given[2] ? `#${given[2]}` : "#/");
}
addEventListener("hashchange", render);
render();
