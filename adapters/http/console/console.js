// Vigil operator console. Plain JavaScript, no build step, nothing loaded from elsewhere.
//
// It calls only the admin API's own JSON routes (the ones the runbooks' curl commands use),
// polling once a second. The admin token lives in the `session.token` variable below and
// nowhere else: not in the URL, not in localStorage or sessionStorage, not in a cookie, not in
// the DOM after sign-in. Every text from the server is written with textContent (never parsed
// as HTML). Every control asks for confirmation in a dialog first and then shows the server's
// answer verbatim: its status line, its message and blockers as sentences, and the raw body.
"use strict";

(() => {
  const POLL_INTERVAL_MS = 1000;
  const LATENCY_WINDOW_MS = 120000; // the runbook's "p95 > 800 ms for 2m"
  const PNL_SAMPLES_MAX = 8 * 3600; // a trading day of one-second samples
  const TERMINAL_STATUSES = new Set(["FILLED", "CANCELLED", "REJECTED"]);

  const session = {
    token: null, // null: not signed in; "": the engine has no token
    view: "overview",
    pollTimer: null,
    polling: false,
    status: null,
    gates: null,
    killSwitch: null,
    risk: null,
    positions: null,
    orders: null,
    metricsHistory: [], // [{at, latencyBuckets: Map(le -> count), retries, kills}]
    pnl: [], // [{at, value}]
    confirmationBase: null, // {expiresInS, at}: the server's countdown and when it was read
    brokerAccount: null,
  };

  const $ = (id) => document.getElementById(id);
  // Each answer shown gets the next number (data-answer), so a reader can tell a new answer
  // from an old one that happens to look the same.
  let answersShown = 0;
  function numbered(box) {
    answersShown += 1;
    box.dataset.answer = String(answersShown);
  }

  // ------------------------------------------------------------------------------ HTTP
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (session.token) headers.Authorization = "Bearer " + session.token;
    const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch (_error) {
      json = null;
    }
    return { status: response.status, statusText: response.statusText, text, json, ok: response.ok };
  }

  // ------------------------------------------------------------------------------ rendering
  function setText(id, value) {
    const element = $(id);
    const text = value === null || value === undefined || value === "" ? "-" : String(value);
    if (element.textContent !== text) element.textContent = text;
  }

  function setList(id, items, empty) {
    const list = $(id);
    const texts = items.length ? items : [empty];
    const current = Array.from(list.children, (item) => item.textContent);
    if (current.length === texts.length && current.every((text, i) => text === texts[i])) return;
    list.replaceChildren(
      ...texts.map((text) => {
        const item = document.createElement("li");
        item.textContent = text;
        if (!items.length) item.className = "none";
        return item;
      }),
    );
  }

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  // The server's answer, verbatim: status line, message, blockers as sentences, raw body.
  function showAnswer(id, result, label) {
    const box = $(id);
    const parts = [];
    const heading = element("p", `${label}: HTTP ${result.status} ${result.statusText}`.trim());
    heading.className = result.ok ? "answer-head ok" : "answer-head failed";
    parts.push(heading);
    const body = result.json;
    if (body && typeof body === "object") {
      if (body.error) parts.push(element("p", body.error, "answer-code"));
      if (typeof body.message === "string") parts.push(element("p", body.message, "answer-message"));
      if (Array.isArray(body.blockers) && body.blockers.length) {
        const list = element("ul", null, "sentences blockers answer-blockers");
        for (const blocker of body.blockers) list.append(element("li", blocker));
        parts.push(list);
      }
      if (Array.isArray(body.checks)) parts.push(checksTable(body.checks));
    }
    const raw = element("pre", result.text, "answer-raw");
    parts.push(raw);
    box.replaceChildren(...parts);
    numbered(box);
  }

  function showFailure(id, label, error) {
    $(id).replaceChildren(element("p", `${label}: no answer from the engine (${error})`, "answer-head failed"));
    numbered($(id));
  }

  function checksTable(checks) {
    const table = element("table", null, "checks");
    const head = element("thead");
    const headRow = element("tr");
    for (const title of ["Check", "Result", "Details"]) {
      const cell = element("th", title);
      cell.scope = "col";
      headRow.append(cell);
    }
    head.append(headRow);
    const body = element("tbody");
    for (const check of checks) {
      const row = element("tr", null, check.passed ? "passed" : "failed");
      const name = element("th", check.name);
      name.scope = "row";
      row.append(name, element("td", check.passed ? "passed" : "FAILED"), element("td", check.details));
      body.append(row);
    }
    table.append(head, body);
    return table;
  }

  function rupees(value) {
    if (value === null || value === undefined) return "-";
    const number = Number(value);
    if (!Number.isFinite(number)) return String(value);
    const figure = Math.abs(number).toLocaleString("en-IN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    return (number < 0 ? "-₹" : "₹") + figure;
  }

  function seconds(value) {
    if (value === null || value === undefined) return "never";
    if (!Number.isFinite(value)) return "never";
    if (value < 60) return value.toFixed(1) + " s";
    const minutes = Math.floor(value / 60);
    if (minutes < 60) return `${minutes} min ${Math.floor(value % 60)} s`;
    return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }

  // ------------------------------------------------------------------------------ sign-in
  async function signIn(event) {
    event.preventDefault();
    const input = $("signin-token");
    const candidate = input.value.trim();
    input.value = ""; // never left in the DOM
    session.token = candidate;
    let result;
    try {
      result = await api("GET", "/execution/status");
    } catch (error) {
      session.token = null;
      showFailure("signin-answer", "Sign in", error);
      return;
    }
    if (!result.ok) {
      session.token = null;
      showAnswer("signin-answer", result, "Sign in refused");
      input.focus();
      return;
    }
    $("signin-answer").replaceChildren();
    $("tabs").hidden = false;
    $("signout").hidden = false;
    applyStatus(result.json);
    showView(session.view);
    startPolling();
  }

  function signOut(message) {
    session.token = null;
    stopPolling();
    $("tabs").hidden = true;
    $("signout").hidden = true;
    for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== "view-signin";
    setText("hdr-connection", message || "Not signed in");
    $("signin-token").focus();
  }

  // ------------------------------------------------------------------------------ views
  function showView(name) {
    session.view = name;
    for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== "view-" + name;
    for (const tab of document.querySelectorAll(".tab")) {
      if (tab.dataset.view === name) tab.setAttribute("aria-current", "page");
      else tab.removeAttribute("aria-current");
    }
    if (name === "overview") drawPnl();
    if (session.token !== null) pollNow();
  }

  // ------------------------------------------------------------------------------ polling
  function startPolling() {
    stopPolling();
    session.polling = true;
    pollNow();
  }

  function stopPolling() {
    session.polling = false;
    if (session.pollTimer !== null) clearTimeout(session.pollTimer);
    session.pollTimer = null;
  }

  let pollInFlight = false;
  let pollAgain = false;

  async function pollNow() {
    if (!session.polling) return;
    if (pollInFlight) {
      pollAgain = true;
      return;
    }
    pollInFlight = true;
    if (session.pollTimer !== null) clearTimeout(session.pollTimer);
    try {
      await pollOnce();
    } finally {
      pollInFlight = false;
      if (session.polling) {
        session.pollTimer = setTimeout(pollNow, pollAgain ? 0 : POLL_INTERVAL_MS);
        pollAgain = false;
      }
    }
  }

  async function pollOnce() {
    const requests = [
      api("GET", "/execution/status"),
      api("GET", "/execution/gates"),
      api("GET", "/execution/kill-switch"),
      api("GET", "/risk"),
      fetch("/metrics", { cache: "no-store", credentials: "omit" }).then((r) => r.text()),
    ];
    const wantsBook = session.view === "book";
    if (wantsBook) requests.push(api("GET", "/positions"), api("GET", "/orders?limit=500"));
    let results;
    try {
      results = await Promise.all(requests);
    } catch (error) {
      setText("hdr-connection", `Engine not answering (${error}); retrying every second`);
      $("hdr-connection").className = "connection stale";
      return;
    }
    const [status, gates, killSwitch, risk, metrics, positions, orders] = results;
    if ([status, gates, killSwitch].some((result) => result.status === 401)) {
      signOut(`Signed out: the engine refused the token (${status.json ? status.json.message : status.status})`);
      return;
    }
    if (status.ok) applyStatus(status.json);
    if (gates.ok) applyGates(gates.json);
    if (killSwitch.ok) applyKillSwitch(killSwitch.json);
    if (risk.ok) session.risk = risk.json;
    applyMetrics(metrics);
    if (wantsBook && positions.ok && orders.ok) applyBook(positions.json, orders.json);
    renderOverview();
    const problems = [status, gates, killSwitch, risk].filter((result) => !result.ok);
    const connection = $("hdr-connection");
    if (problems.length) {
      const first = problems[0];
      connection.textContent = `Engine answered HTTP ${first.status}: ${first.json ? first.json.message : first.text}`;
      connection.className = "connection stale";
    } else {
      connection.textContent = "Updated " + new Date().toLocaleTimeString();
      connection.className = "connection";
    }
  }

  // ------------------------------------------------------------------------------ state
  function applyStatus(status) {
    session.status = status;
    setText("hdr-mode", status.mode);
    setText("hdr-armed", status.armed ? "ARMED" : "DISARMED");
    setText("hdr-state", status.trading_state);
    setText("hdr-instance", status.instance_id);
    $("hdr-mode").className = "mode-" + status.mode;
    $("hdr-armed").className = status.armed ? "armed" : "disarmed";
    $("hdr-state").className = "state-" + status.trading_state;
    $("hdr-rehearsal").hidden = !status.rehearsal;
    const value = Number(status.realized_pnl_today) + Number(status.unrealized_pnl);
    if (Number.isFinite(value)) {
      session.pnl.push({ at: Date.now(), value });
      if (session.pnl.length > PNL_SAMPLES_MAX) session.pnl.shift();
    }
  }

  function applyGates(gates) {
    session.gates = gates;
    setText("gates-allowed", gates.allowed ? "LIVE may be armed now." : "LIVE may not be armed now:");
    setList("gates-blockers", gates.blockers, "none");
    setList("gates-warnings", gates.warnings, "none");
    const fresh =
      gates.confirmation_expires_in_s === null
        ? null
        : { expiresInS: gates.confirmation_expires_in_s, at: performance.now() };
    // Keep counting from the previous reading unless the server's differs by more than the
    // round trip's jitter (a new confirmation, a revoke): the countdown never ticks back up.
    const previous = session.confirmationBase;
    const drift = fresh && previous ? fresh.expiresInS - confirmationLeft(previous) : null;
    if (drift === null || drift < -2 || drift > 2 || fresh.expiresInS === 0) {
      session.confirmationBase = fresh;
    }
    renderCountdown();
  }

  function applyKillSwitch(view) {
    session.killSwitch = view;
    const text = view.active
      ? `ACTIVE: ${view.reason}${view.detail ? " (" + view.detail + ")" : ""}. ${view.message}`
      : `Inactive. ${view.message}`;
    setText("ks-state", text);
  }

  function confirmationLeft(base) {
    return base.expiresInS - (performance.now() - base.at) / 1000;
  }

  function renderCountdown() {
    const base = session.confirmationBase;
    const target = $("gates-countdown");
    let text = "none";
    let className = "";
    if (base !== null) {
      const left = confirmationLeft(base);
      if (left <= 0) {
        text = "expired";
        className = "failed";
      } else {
        const whole = Math.ceil(left);
        text = `expires in ${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
        className = left < 60 ? "warn" : "ok";
      }
    }
    if (target.textContent !== text) target.textContent = text;
    target.className = className;
  }

  function renderOverview() {
    const status = session.status;
    if (!status) return;
    setText("ov-mode", status.mode);
    setText("ov-armed", status.armed ? "ARMED" : "DISARMED");
    setText("ov-state", status.trading_state);
    const killSwitch = session.killSwitch;
    if (status.halt_reason) {
      const age =
        killSwitch && killSwitch.activated_ns ? ` (for ${seconds((status.ts_event - killSwitch.activated_ns) / 1e9)})` : "";
      setText("ov-halt", `${status.halt_reason}${status.halt_detail ? ": " + status.halt_detail : ""}${age}`);
    } else {
      setText("ov-halt", "none");
    }
    setText("ov-leader", status.is_leader ? "leader" : "NOT leader");
    setText("ov-epoch", status.epoch);
    setText("ov-next", status.next_scheduled_action || "none (scheduler off)");
    setText("ov-live-stopped", status.live_entries_stopped ? "stopped: " + status.live_entries_stopped : "not stopped");
    setList(
      "ov-causes",
      status.pause_causes.map(
        (pause) => `${pause.cause}: ${pause.detail} (for ${seconds((status.ts_event - pause.since_ns) / 1e9)})`,
      ),
      "none",
    );
    const notes = [...status.tripwires, ...status.degraded.map((part) => "degraded: " + part)];
    if (status.circuit_breaker !== "OK") notes.push(`circuit breaker ${status.circuit_breaker}: ${status.circuit_breaker_detail}`);
    setList("ov-tripwires", notes, "none");
    const pauses = status.pause_causes.map((pause) => pause.cause).join(", ") || "none";
    setText(
      "ctl-summary",
      `Now: ${status.trading_state}, ${status.armed ? "ARMED" : "DISARMED"} in ${status.mode}; ` +
        `${status.positions_open} positions open, ${status.working_orders} working orders; ` +
        `pauses: ${pauses}; HALT: ${status.halt_reason || "none"}.`,
    );
    setText("ov-realized", rupees(status.realized_pnl_today));
    setText("ov-unrealized", rupees(status.unrealized_pnl));
    setText("ov-pnl", rupees(Number(status.realized_pnl_today) + Number(status.unrealized_pnl)));
    const ages = Object.entries(status.marketdata_age_s).map(([feed, age]) => `${feed} ${seconds(age)}`);
    ages.push(`order stream ${seconds(status.order_stream_age_s)}`);
    setText("sig-heartbeats", ages.join(", "));
    const risk = session.risk;
    if (risk) {
      const cap = Number(risk.heat_cap_rupees);
      const share = cap > 0 ? ` (${((100 * Number(risk.heat_rupees)) / cap).toFixed(1)}%)` : "";
      setText("sig-heat", `${rupees(risk.heat_rupees)} of ${rupees(risk.heat_cap_rupees)}${share}`);
    }
    renderSignalsFromMetrics();
    if (session.view === "overview") drawPnl();
  }

  // ------------------------------------------------------------------------------ metrics
  function parseMetrics(text) {
    const samples = [];
    for (const line of text.split("\n")) {
      if (!line || line.startsWith("#")) continue;
      const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
      if (!match) continue;
      const labels = {};
      if (match[3]) {
        for (const pair of match[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
          labels[pair[1]] = pair[2];
        }
      }
      samples.push({ name: match[1], labels, value: Number(match[4]) });
    }
    return samples;
  }

  function applyMetrics(text) {
    if (typeof text !== "string") return;
    const samples = parseMetrics(text);
    const latencyBuckets = new Map();
    const retries = {};
    const kills = {};
    for (const sample of samples) {
      if (sample.name === "trader_order_latency_ms_bucket") latencyBuckets.set(sample.labels.le, sample.value);
      else if (sample.name === "trader_retries_total") retries[sample.labels.type] = sample.value;
      else if (sample.name === "trader_kill_switch_total") kills[sample.labels.reason] = sample.value;
    }
    const now = Date.now();
    session.metricsHistory.push({ at: now, latencyBuckets, retries, kills });
    while (session.metricsHistory.length > 2 && now - session.metricsHistory[1].at > LATENCY_WINDOW_MS) {
      session.metricsHistory.shift();
    }
  }

  function sum(values) {
    return Object.values(values).reduce((total, value) => total + value, 0);
  }

  function renderSignalsFromMetrics() {
    const history = session.metricsHistory;
    if (!history.length) return;
    const latest = history[history.length - 1];
    const oldest = history[0];
    // p95 of the acknowledgements in the window: the difference of two cumulative histograms.
    const bounds = Array.from(latest.latencyBuckets.keys()).sort((a, b) => Number(a) - Number(b));
    const delta = (le) => (latest.latencyBuckets.get(le) || 0) - (history.length > 1 ? oldest.latencyBuckets.get(le) || 0 : 0);
    const count = bounds.length ? delta("+Inf") : 0;
    if (count > 0) {
      const rank = 0.95 * count;
      const bound = bounds.find((le) => delta(le) >= rank);
      const text = bound === "+Inf" ? `above the largest bucket` : `≤ ${bound} ms`;
      setText("sig-latency", `${text} (${count} acks)`);
    } else {
      setText("sig-latency", "no acks in the window");
    }
    const retriesNow = sum(latest.retries);
    const retriesRise = retriesNow - sum(oldest.retries);
    const byType = Object.entries(latest.retries)
      .filter(([, value]) => value > 0)
      .map(([type, value]) => `${type} ${value}`)
      .join(", ");
    setText("sig-retries", `${retriesNow} total, +${retriesRise} in the window${byType ? " (" + byType + ")" : ""}`);
    const kills = Object.entries(latest.kills)
      .filter(([, value]) => value > 0)
      .map(([reason, value]) => `${reason} ${value}`)
      .join(", ");
    setText("sig-kill", `${sum(latest.kills)} since start${kills ? " (" + kills + ")" : ""}`);
  }

  // ------------------------------------------------------------------------------ PnL chart
  function drawPnl() {
    const canvas = $("pnl-chart");
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    const ratio = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const context = canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, width, height);
    const styles = getComputedStyle(canvas);
    const ink = styles.getPropertyValue("--chart-ink").trim() || "#222";
    const line = styles.getPropertyValue("--chart-line").trim() || "#0a58ca";
    const samples = session.pnl;
    context.font = "12px system-ui, sans-serif";
    context.fillStyle = ink;
    if (samples.length < 2) {
      context.fillText("collecting samples…", 8, 20);
      return;
    }
    const values = samples.map((sample) => sample.value);
    let low = Math.min(0, ...values);
    let high = Math.max(0, ...values);
    if (high - low < 1) {
      high += 0.5;
      low -= 0.5;
    }
    const left = 90;
    const right = width - 8;
    const top = 8;
    const bottom = height - 20;
    const first = samples[0].at;
    const span = Math.max(1, samples[samples.length - 1].at - first);
    const x = (at) => left + ((right - left) * (at - first)) / span;
    const y = (value) => bottom - ((bottom - top) * (value - low)) / (high - low);
    context.strokeStyle = ink;
    context.globalAlpha = 0.4;
    context.beginPath();
    context.moveTo(left, y(0));
    context.lineTo(right, y(0));
    context.stroke();
    context.globalAlpha = 1;
    // The zero line's label, and the extremes' where they do not overlap it.
    context.fillText(rupees(0), 4, y(0) + 4);
    if (y(0) - top > 16) context.fillText(rupees(high), 4, top + 10);
    if (bottom - y(0) > 16) context.fillText(rupees(low), 4, bottom);
    context.fillText(new Date(first).toLocaleTimeString(), left, height - 4);
    const lastLabel = new Date(samples[samples.length - 1].at).toLocaleTimeString();
    context.fillText(lastLabel, right - context.measureText(lastLabel).width, height - 4);
    context.strokeStyle = line;
    context.lineWidth = 2;
    context.beginPath();
    samples.forEach((sample, index) => {
      if (index === 0) context.moveTo(x(sample.at), y(sample.value));
      else context.lineTo(x(sample.at), y(sample.value));
    });
    context.stroke();
  }

  // ------------------------------------------------------------------------------ book
  function matchesFilters(row) {
    const text = $("filter-text").value.trim().toLowerCase();
    const side = $("filter-side").value;
    if (side && row.side !== side) return false;
    if (text && !`${row.instrument} ${row.strategy}`.toLowerCase().includes(text)) return false;
    return true;
  }

  function fillTable(id, rows, cells) {
    const body = $(id).tBodies[0];
    if (!rows.length) {
      const row = element("tr", null, "none");
      const cell = element("td", "none");
      cell.colSpan = $(id).tHead.rows[0].cells.length;
      row.append(cell);
      body.replaceChildren(row);
      return;
    }
    body.replaceChildren(
      ...rows.map((item) => {
        const row = element("tr");
        for (const value of cells(item)) row.append(element("td", value === null || value === undefined ? "-" : value));
        return row;
      }),
    );
  }

  function applyBook(positionsView, ordersView) {
    session.positions = positionsView;
    session.orders = ordersView;
    renderBook();
  }

  function renderBook() {
    if (!session.positions || !session.orders) return;
    const positions = session.positions.positions.filter(matchesFilters);
    const orders = session.orders.orders.filter(matchesFilters);
    const working = orders.filter((order) => !TERMINAL_STATUSES.has(order.status));
    const fills = orders
      .filter((order) => order.filled_quantity > 0)
      .sort((a, b) => b.ts_updated - a.ts_updated)
      .slice(0, 100);
    setText("book-positions-count", `(${positions.length} of ${session.positions.count})`);
    setText("book-working-count", `(${working.length})`);
    setText("book-fills-count", `(${fills.length})`);
    fillTable("book-positions", positions, (p) => [
      p.instrument, p.strategy, p.side, p.quantity, p.average_price, p.stop_price, p.target_price,
      rupees(p.unrealized_pnl), rupees(p.risk_amount),
    ]);
    fillTable("book-working", working, (o) => [
      o.instrument, o.strategy, o.leg, o.side, o.order_type, `${o.filled_quantity}/${o.quantity}`, o.price,
      o.trigger_price, o.status,
    ]);
    fillTable("book-fills", fills, (o) => [
      new Date(o.ts_updated / 1e6).toLocaleTimeString(), o.instrument, o.strategy, o.leg, o.side,
      `${o.filled_quantity}/${o.quantity}`, o.average_fill_price, o.status,
    ]);
  }

  // ------------------------------------------------------------------------------ confirmation
  function askConfirmation({ title, text, reason }) {
    const dialog = $("confirm-dialog");
    setText("confirm-title", title);
    setText("confirm-text", text);
    const reasonRow = $("confirm-reason-row");
    const reasonInput = $("confirm-reason");
    reasonRow.hidden = !reason;
    reasonInput.required = Boolean(reason && reason.required);
    reasonInput.value = reason ? reason.initial || "" : "";
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener(
        "close",
        () => resolve({ confirmed: dialog.returnValue === "ok", reason: reasonInput.value.trim() }),
        { once: true },
      );
      dialog.showModal();
      (reason ? reasonInput : $("confirm-cancel")).focus();
    });
  }

  async function confirmedPost({ title, text, reason, path, body, answerId, label, onAnswer }) {
    const choice = await askConfirmation({ title, text, reason });
    if (!choice.confirmed) {
      $(answerId).replaceChildren(element("p", `${label}: cancelled, nothing was sent.`, "answer-head"));
      numbered($(answerId));
      return;
    }
    let result;
    try {
      result = await api("POST", path, body ? body(choice.reason) : undefined);
    } catch (error) {
      showFailure(answerId, label, error);
      return;
    }
    showAnswer(answerId, result, label);
    if (onAnswer) onAnswer(result);
    pollNow();
  }

  const CONTROLS = {
    pause: {
      title: "Pause entries?",
      text: "New entries stop; exits and protective orders go on. POST /execution/pause",
      reason: { initial: "operator", required: true },
      path: "/execution/pause",
      body: (reason) => ({ reason }),
      label: "Pause",
    },
    resume: {
      title: "Resume entries?",
      text: "Clears the operator (and FLATTEN) pause; other causes stay. POST /execution/resume",
      path: "/execution/resume",
      label: "Resume",
    },
    flatten: {
      title: "Flatten every position?",
      text: "Cancels every working order and closes every position at market, then keeps entries paused. POST /execution/flatten",
      reason: { initial: "", required: true },
      path: "/execution/flatten",
      body: (reason) => ({ reason }),
      label: "Flatten",
    },
    kill: {
      title: "Activate the kill switch?",
      text: "Sticky HALT: nothing new goes out until a reset; positions close when close_on_kill_switch is on. POST /execution/kill-switch/activate",
      reason: { initial: "manual", required: true },
      path: "/execution/kill-switch/activate",
      body: (reason) => ({ reason }),
      label: "Kill switch",
    },
    reset: {
      title: "Reset the kill switch?",
      text: "Clears the HALT (audited). The engine stays disarmed and any pause stays. POST /execution/kill-switch/reset",
      reason: { initial: "", required: true },
      path: "/execution/kill-switch/reset",
      body: (reason) => ({ reason }),
      label: "Kill switch reset",
    },
  };

  // ------------------------------------------------------------------------------ Go LIVE
  function wizardMissing() {
    const missing = [];
    if (!$("wz-ack").checked) missing.push("acknowledge the warnings");
    if (!$("wz-phrase").value) missing.push("type the phrase");
    if (!$("wz-token").value) missing.push("paste LIVE_ENABLE_TOKEN");
    if (!$("wz-account").value.trim()) missing.push("type the account ID");
    return missing;
  }

  function renderWizard() {
    const missing = wizardMissing();
    $("wz-confirm").disabled = missing.length > 0;
    setText("wz-confirm-missing", missing.length ? "Still to do: " + missing.join(", ") + "." : "Ready to confirm.");
  }

  async function wizardConnect() {
    let result;
    try {
      result = await api("POST", "/execution/connect");
    } catch (error) {
      showFailure("wz-connect-answer", "Connect", error);
      return;
    }
    showAnswer("wz-connect-answer", result, "Connect");
    if (result.json && result.json.account_id) {
      session.brokerAccount = result.json.account_id;
      setText("wz-broker-account", session.brokerAccount);
    }
    pollNow();
  }

  async function wizardPrelive() {
    let result;
    try {
      result = await api("POST", "/execution/prelive/run");
    } catch (error) {
      showFailure("wz-prelive-answer", "Pre-live check", error);
      return;
    }
    showAnswer("wz-prelive-answer", result, "Pre-live check");
    pollNow();
  }

  async function wizardConfirm() {
    if (wizardMissing().length) return;
    const phrase = $("wz-phrase").value;
    const accountId = $("wz-account").value.trim();
    await confirmedPost({
      title: "Confirm LIVE trading?",
      text: `Account ${accountId}. The confirmation lasts LIVE_CONFIRMATION_TTL_S; arming is the next step. POST /execution/live/confirm`,
      path: "/execution/live/confirm",
      // The LIVE token is read from its field at send time and the field is cleared after.
      body: () => ({ phrase, token: $("wz-token").value, account_id: accountId }),
      answerId: "wz-confirm-answer",
      label: "LIVE confirmation",
    });
    $("wz-token").value = "";
    renderWizard();
  }

  // ------------------------------------------------------------------------------ wiring
  function wire() {
    $("signin-form").addEventListener("submit", signIn);
    $("signout").addEventListener("click", () => signOut("Signed out"));
    for (const tab of document.querySelectorAll(".tab")) {
      tab.addEventListener("click", () => showView(tab.dataset.view));
    }
    for (const button of document.querySelectorAll("[data-action]")) {
      const control = CONTROLS[button.dataset.action];
      button.addEventListener("click", () => confirmedPost({ ...control, answerId: "controls-answer" }));
    }
    $("filter-text").addEventListener("input", renderBook);
    $("filter-side").addEventListener("change", renderBook);
    $("book-filters").addEventListener("submit", (event) => event.preventDefault());
    $("confirm-cancel").formNoValidate = true;
    $("wz-connect").addEventListener("click", wizardConnect);
    $("wz-prelive").addEventListener("click", wizardPrelive);
    $("wz-confirm").addEventListener("click", wizardConfirm);
    $("wz-arm").addEventListener("click", () =>
      confirmedPost({
        title: "Arm for LIVE trading?",
        text: "Real money is at risk once armed. POST /execution/arm {\"confirm\": true, \"live_mode\": true}",
        path: "/execution/arm",
        body: () => ({ confirm: true, live_mode: true }),
        answerId: "wz-arm-answer",
        label: "Arm LIVE",
      }),
    );
    $("wz-disarm").addEventListener("click", () =>
      confirmedPost({
        title: "Disarm?",
        text: "Entries are refused until armed again. POST /execution/disarm",
        reason: { initial: "operator", required: true },
        path: "/execution/disarm",
        body: (reason) => ({ reason }),
        answerId: "wz-rollback-answer",
        label: "Disarm",
      }),
    );
    $("wz-revoke").addEventListener("click", () =>
      confirmedPost({
        title: "Revoke the LIVE confirmation?",
        text: "Disarms and leaves LIVE. POST /execution/live/revoke",
        reason: { initial: "operator", required: true },
        path: "/execution/live/revoke",
        body: (reason) => ({ reason }),
        answerId: "wz-rollback-answer",
        label: "Revoke",
      }),
    );
    for (const id of ["wz-ack", "wz-phrase", "wz-token", "wz-account"]) {
      $(id).addEventListener("input", renderWizard);
      $(id).addEventListener("change", renderWizard);
    }
    window.addEventListener("resize", drawPnl);
    setInterval(renderCountdown, 250);
    renderWizard();
    $("signin-token").focus();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", wire);
  else wire();
})();
