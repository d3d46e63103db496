/**
 * The live status page, served by src/http/routes/status-page.ts at / and /status. One
 * self-contained document: inline CSS and script, no external asset (operators' browsers may
 * have no internet, and the route's Content-Security-Policy refuses any). It polls
 * `api/status` (relative, so it also works under a proxy's path prefix) once a second, one
 * request at a time, and renders what a person needs at a glance: the MQTT link's state big
 * and coloured, an outage banner, the recent transitions, load, lag, database and error rates.
 * Server strings are set as text, never as HTML (a transition reason is a broker's error text).
 * The script uses no template literals, so this file can keep it in one.
 */
export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Tether status</title>
<style>
  :root {
    --ok: #1a7f37; --warn: #b35900; --bad: #c62828; --idle: #57606a;
    --bg: #f6f8fa; --card: #ffffff; --ink: #1f2328; --muted: #57606a; --line: #d0d7de;
    font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
    color: var(--ink); background: var(--bg);
  }
  body { margin: 0; padding: 16px 24px 32px; }
  header { display: flex; align-items: baseline; gap: 16px; flex-wrap: wrap; }
  h1 { font-size: 22px; margin: 0; }
  h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); margin: 0 0 6px; font-weight: 600; }
  .muted { color: var(--muted); }
  .small { font-size: 13px; }
  .badge { display: inline-block; padding: 2px 10px; border-radius: 12px; color: #fff; font-weight: 600; font-size: 14px; }
  .ok { color: var(--ok); } .warn { color: var(--warn); } .bad { color: var(--bad); } .idle { color: var(--idle); }
  .badge.ok { background: var(--ok); color: #fff; } .badge.warn { background: var(--warn); color: #fff; } .badge.bad { background: var(--bad); color: #fff; } .badge.idle { background: var(--idle); color: #fff; }
  .banner { margin: 14px 0 0; padding: 14px 18px; border-radius: 8px; background: var(--bad); color: #fff; font-size: 18px; font-weight: 600; }
  .banner.stale-data { background: #6e7781; }
  .banner ul { margin: 6px 0 0; padding-left: 22px; font-weight: 500; font-size: 16px; }
  .banner[hidden] { display: none; }
  .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 14px; margin-top: 16px; }
  .card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
  .link-card { grid-column: span 2; border-width: 3px; }
  .link-card.edge-ok { border-color: var(--ok); } .link-card.edge-warn { border-color: var(--warn); } .link-card.edge-bad { border-color: var(--bad); }
  .state { font-size: 44px; font-weight: 700; line-height: 1.1; margin: 2px 0 6px; }
  .value { font-size: 30px; font-weight: 700; line-height: 1.2; }
  .unit { font-size: 15px; font-weight: 500; color: var(--muted); margin-left: 4px; }
  dl { display: grid; grid-template-columns: auto 1fr; gap: 2px 12px; margin: 6px 0 0; font-size: 14px; }
  dt { color: var(--muted); } dd { margin: 0; font-variant-numeric: tabular-nums; }
  .bar { height: 8px; background: #eaeef2; border-radius: 4px; overflow: hidden; margin-top: 8px; }
  .bar > div { height: 100%; background: var(--ok); width: 0; }
  table { border-collapse: collapse; width: 100%; font-size: 14px; }
  th, td { text-align: left; padding: 5px 10px 5px 0; border-bottom: 1px solid var(--line); vertical-align: top; }
  th.narrow { width: 9em; }
  th { color: var(--muted); font-weight: 600; }
  td.time { white-space: nowrap; font-variant-numeric: tabular-nums; }
  .section { margin-top: 16px; }
  #issues li { margin: 2px 0; }
</style>
</head>
<body>
<header>
  <h1>Tether</h1>
  <span id="overall" class="badge idle">loading</span>
  <span class="muted small">updated <span id="updated">never</span> &middot; up <span id="uptime">&ndash;</span> &middot; refreshes every second</span>
</header>

<div id="outage" class="banner" role="alert" hidden>
  <div>OUTAGE</div>
  <ul id="outage-list"></ul>
</div>
<div id="unreachable" class="banner stale-data" role="alert" hidden>
  Tether is not answering: <span id="unreachable-why"></span> (figures below are from <span id="unreachable-age"></span> ago)
</div>

<div class="grid">
  <section class="card link-card" id="link-card">
    <h2>MQTT link</h2>
    <div class="state idle" id="link-state">&ndash;</div>
    <dl>
      <dt id="link-since-label">since</dt><dd id="link-since">&ndash;</dd>
      <dt>last activity</dt><dd id="link-activity">&ndash;</dd>
      <dt>reconnects</dt><dd id="link-attempts">&ndash;</dd>
      <dt>client id</dt><dd id="link-client">&ndash;</dd>
      <dt>gateways</dt><dd id="link-gateways">&ndash;</dd>
    </dl>
  </section>
  <section class="card">
    <h2>Pending requests</h2>
    <div class="value" id="pending">&ndash;</div>
    <div class="muted small">chats waiting for an LLM worker</div>
    <div class="muted small">resumable streams <span id="streams">&ndash;</span> &middot; replay buffers <span id="stream-bytes">&ndash;</span> of <span id="stream-max">&ndash;</span></div>
    <div class="muted small">resumed from other gateways <span id="takeovers">&ndash;</span></div>
  </section>
  <section class="card">
    <h2>LLM workers</h2>
    <div class="value" id="workers-online">&ndash;</div>
    <div class="muted small" id="workers-detail">&ndash;</div>
  </section>
  <section class="card">
    <h2>WebSockets</h2>
    <div class="value" id="ws-total">&ndash;</div>
    <div class="muted small">hints <span id="ws-hints">&ndash;</span> &middot; chat <span id="ws-chat">&ndash;</span> &middot; sessions with hints <span id="ws-sessions">&ndash;</span></div>
  </section>
  <section class="card">
    <h2>Event-loop lag p99</h2>
    <div class="value" id="lag">&ndash;</div>
    <div class="muted small">degraded above <span id="lag-limit">&ndash;</span> ms</div>
  </section>
  <section class="card">
    <h2>Database</h2>
    <div class="value" id="db-status">&ndash;</div>
    <div class="small"><span id="db-pool">&ndash;</span></div>
    <div class="bar"><div id="db-bar"></div></div>
    <div class="small muted" id="db-writes">&ndash;</div>
  </section>
  <section class="card">
    <h2>Requests</h2>
    <div class="value" id="req-rate">&ndash;</div>
    <div class="muted small">4xx <span id="rate-4xx">&ndash;</span>/s &middot; monitoring not counted</div>
  </section>
  <section class="card">
    <h2>Server errors (5xx)</h2>
    <div class="value" id="err-rate">&ndash;</div>
    <div class="muted small"><span id="err-share">&ndash;</span> of responses &middot; <span id="err-total">&ndash;</span> since start</div>
  </section>
  <section class="card">
    <h2>Chats</h2>
    <div class="value" id="chat-rate">&ndash;</div>
    <div class="muted small">failed <span id="chat-failed">&ndash;</span>/s &middot; timed out <span id="chat-timeouts">&ndash;</span>/s &middot; stalled <span id="chat-stalled">&ndash;</span>/s</div>
  </section>
  <section class="card">
    <h2>Refused by limits</h2>
    <div class="value" id="refused-total">&ndash;</div>
    <div class="muted small"><span id="refused-detail">none</span> &middot; handler errors <span id="handler-errors">&ndash;</span></div>
  </section>
  <section class="card">
    <h2>Memory</h2>
    <div class="value" id="rss">&ndash;</div>
    <div class="muted small">heap used <span id="heap">&ndash;</span></div>
  </section>
</div>

<section class="card section">
  <h2>Issues</h2>
  <ul id="issues"><li class="muted">none</li></ul>
</section>

<section class="card section">
  <h2>Recent link transitions (newest first)</h2>
  <table>
    <thead><tr><th class="narrow">time</th><th class="narrow">from</th><th class="narrow">to</th><th>reason</th></tr></thead>
    <tbody id="transitions"><tr><td colspan="4" class="muted">none yet</td></tr></tbody>
  </table>
</section>

<script>
(function () {
  'use strict';
  var POLL_MS = 1000;
  var TIMEOUT_MS = 3000;
  // Rates are taken over the snapshots of the last 10 s (counters are totals since start).
  var WINDOW_MS = 10000;
  var history = [];
  var lastOkAt = 0;

  function $(id) { return document.getElementById(id); }
  function text(id, value) { $(id).textContent = value; }
  function tone(state) {
    if (state === 'connected' || state === 'up' || state === 'healthy') return 'ok';
    if (state === 'givingUp' || state === 'closed' || state === 'down' || state === 'unhealthy') return 'bad';
    return 'warn';
  }
  function setTone(el, base, t) { el.className = base + ' ' + t; }
  function clock(iso) {
    var d = new Date(iso);
    return d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
  }
  function duration(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + ' s';
    var m = Math.floor(s / 60);
    if (m < 60) return m + ' min ' + (s % 60) + ' s';
    var h = Math.floor(m / 60);
    if (h < 48) return h + ' h ' + (m % 60) + ' min';
    return Math.floor(h / 24) + ' d ' + (h % 24) + ' h';
  }
  function bytes(n) {
    if (n >= 1073741824) return (n / 1073741824).toFixed(2) + ' GB';
    return (n / 1048576).toFixed(0) + ' MB';
  }
  function perSecond(n) { return n === null ? '\\u2013' : (n >= 10 ? n.toFixed(0) : n.toFixed(1)); }
  function sum(obj) { var s = 0; for (var k in obj) s += obj[k]; return s; }

  function rates(now, report) {
    history.push({ t: now, http: report.http_responses, chats: report.chats });
    while (history.length > 2 && now - history[0].t > WINDOW_MS) history.shift();
    var first = history[0];
    var dt = (now - first.t) / 1000;
    // Counters only grow; smaller totals mean Tether restarted: start the window again.
    if (sum(report.http_responses) < sum(first.http) || sum(report.chats) < sum(first.chats)) {
      history = [history[history.length - 1]];
      return null;
    }
    if (dt < 0.5) return null;
    function d(a, b, k) { return ((a[k] || 0) - (b[k] || 0)) / dt; }
    var chatFailed = 0;
    for (var k in report.chats) if (k !== 'done' && k !== 'timed_out' && k !== 'stalled' && k !== 'cancelled') chatFailed += d(report.chats, first.chats, k);
    return {
      requests: (sum(report.http_responses) - sum(first.http)) / dt,
      e4: d(report.http_responses, first.http, '4xx'),
      e5: d(report.http_responses, first.http, '5xx'),
      chats: (sum(report.chats) - sum(first.chats)) / dt,
      chatFailed: chatFailed,
      chatTimeouts: d(report.chats, first.chats, 'timed_out'),
      chatStalled: d(report.chats, first.chats, 'stalled')
    };
  }

  function render(report, now) {
    var overall = $('overall');
    overall.textContent = report.status;
    setTone(overall, 'badge', tone(report.status));
    text('updated', clock(report.timestamp));
    text('uptime', duration(report.uptime_s * 1000));

    var outage = $('outage');
    var list = $('outage-list');
    list.replaceChildren();
    report.outage.forEach(function (line) {
      var li = document.createElement('li');
      li.textContent = line;
      list.appendChild(li);
    });
    outage.hidden = report.outage.length === 0;

    var link = report.link;
    var t = tone(link.state);
    text('link-state', link.state);
    setTone($('link-state'), 'state', t);
    setTone($('link-card'), 'card link-card', 'edge-' + t);
    var up = link.connected; // the server's one rule (carriesChats): connected, or stale while probed
    text('link-since-label', up ? 'up since' : 'down since');
    text('link-since', link.since === null ? (up ? 'before the transitions below' : 'start-up') : clock(link.since) + ' (' + duration(now - Date.parse(link.since)) + ')');
    text('link-activity', link.last_activity_seconds_ago.toFixed(1) + ' s ago');
    text('link-attempts', link.connected
      ? (link.reconnect_attempts === 0 ? 'none' : String(link.reconnect_attempts))
      : link.reconnect_attempts + ' of ' + link.max_attempts + ', next in ' + (link.next_attempt_in_ms / 1000).toFixed(1) + ' s');
    text('link-client', link.client_id);
    document.title = (report.outage.length > 0 ? 'OUTAGE \\u2013 ' : '') + link.state + ' \\u2013 Tether status';

    text('pending', String(report.pending_requests));
    text('ws-total', String(report.websockets.hints + report.websockets.chat));
    text('ws-hints', String(report.websockets.hints));
    text('ws-sessions', String(report.websockets.hint_sessions));
    text('ws-chat', String(report.websockets.chat));

    var lag = report.event_loop.lag_p99_ms;
    $('lag').replaceChildren(document.createTextNode(lag.toFixed(lag < 10 ? 1 : 0)), unit('ms'));
    setTone($('lag'), 'value', lag > report.event_loop.lag_degraded_ms ? 'bad' : 'ok');
    text('lag-limit', String(report.event_loop.lag_degraded_ms));

    var db = report.db;
    text('db-status', db.status);
    setTone($('db-status'), 'value', tone(db.status));
    text('db-pool', db.pool.in_use + ' in use, ' + db.pool.idle + ' idle of ' + db.pool.total + ' open' + (db.pool.waiting > 0 ? ', ' + db.pool.waiting + ' waiting' : ''));
    var bar = $('db-bar');
    bar.style.width = (db.pool.total === 0 ? 0 : Math.round(100 * db.pool.in_use / db.pool.total)) + '%';
    bar.style.background = db.pool.waiting > 0 ? 'var(--bad)' : 'var(--ok)';
    text('db-writes', 'chat writes: ' + db.writes.committing + ' committing, ' + db.writes.queued + ' queued of ' + db.writes.max_queued + ' allowed; history cache ' + Math.round(db.writes.history_cache_bytes / 1048576) + ' MB');

    var r = rates(now, report);
    $('req-rate').replaceChildren(document.createTextNode(r === null ? '\\u2013' : perSecond(r.requests)), unit('/s'));
    text('rate-4xx', r === null ? '\\u2013' : perSecond(r.e4));
    $('err-rate').replaceChildren(document.createTextNode(r === null ? '\\u2013' : perSecond(r.e5)), unit('/s'));
    setTone($('err-rate'), 'value', r !== null && r.e5 > 0 ? 'bad' : 'ok');
    text('err-share', r === null || r.requests === 0 ? '0 %' : (100 * r.e5 / r.requests).toFixed(1) + ' %');
    text('err-total', String(report.http_responses['5xx']));
    $('chat-rate').replaceChildren(document.createTextNode(r === null ? '\\u2013' : perSecond(r.chats)), unit('/s'));
    text('chat-failed', r === null ? '\\u2013' : perSecond(r.chatFailed));
    text('chat-timeouts', r === null ? '\\u2013' : perSecond(r.chatTimeouts));
    text('chat-stalled', r === null ? '\\u2013' : perSecond(r.chatStalled));
    text('link-gateways', report.gateways + (report.gateways === 1 ? ' (this one)' : ' live on this broker'));
    var w = report.workers;
    if (!w.announced && w.mode !== 'required') {
      text('workers-online', '\u2013');
      text('workers-detail', w.mode === 'off' ? 'presence off (WORKER_PRESENCE=off): chats go to the shared topic' : 'none announced: chats go to the shared topic (v1 workers)');
      setTone($('workers-online'), 'value', 'ok');
    } else {
      text('workers-online', w.online + ' online');
      text('workers-detail', w.in_flight + ' of ' + w.capacity + ' places in use' + (w.suspect > 0 ? ' \u00b7 ' + w.suspect + ' suspect' : '') + (w.offline > 0 ? ' \u00b7 ' + w.offline + ' offline' : ''));
      setTone($('workers-online'), 'value', w.online === 0 ? 'bad' : w.suspect > 0 || w.offline > 0 ? 'warn' : 'ok');
    }
    text('streams', String(report.streams.count));
    text('stream-bytes', bytes(report.streams.buffer_bytes));
    text('stream-max', bytes(report.streams.buffer_max_bytes));
    const took = report.takeovers || {};
    const tookTotal = Object.values(took).reduce((a, b) => a + b, 0);
    text('takeovers', tookTotal === 0 ? 'none' : tookTotal + ' (' + Object.entries(took).map(([k, v]) => k.replace('_', ' ') + ' ' + v).join(', ') + ')');

    var refused = report.protection.refused, refusedTotal = 0, parts = [];
    for (var limit in refused) { refusedTotal += refused[limit]; parts.push(limit + ' ' + refused[limit]); }
    text('refused-total', String(refusedTotal));
    text('refused-detail', parts.length === 0 ? 'none since start' : parts.join(' \u00b7 '));
    text('handler-errors', String(report.protection.handler_errors));
    setTone($('handler-errors'), '', report.protection.handler_errors > 0 ? 'bad' : '');
    $('rss').replaceChildren(document.createTextNode(bytes(report.memory.rss_bytes)));
    text('heap', bytes(report.memory.heap_used_bytes));

    var issues = $('issues');
    issues.replaceChildren();
    (report.issues.length === 0 ? [null] : report.issues).forEach(function (issue) {
      var li = document.createElement('li');
      li.textContent = issue === null ? 'none' : issue;
      if (issue === null) li.className = 'muted';
      issues.appendChild(li);
    });

    var body = $('transitions');
    body.replaceChildren();
    var rows = link.recent_transitions.slice().reverse();
    if (rows.length === 0) rows = [null];
    rows.forEach(function (tr) {
      var row = document.createElement('tr');
      if (tr === null) {
        row.appendChild(cell('none yet', 'muted')).colSpan = 4;
      } else {
        row.appendChild(cell(clock(tr.at), 'time'));
        row.appendChild(cell(tr.from, tone(tr.from)));
        row.appendChild(cell(tr.to, tone(tr.to)));
        row.appendChild(cell(tr.reason === null ? '' : tr.reason, ''));
      }
      body.appendChild(row);
    });
  }
  function unit(u) { var s = document.createElement('span'); s.className = 'unit'; s.textContent = u; return s; }
  function cell(value, cls) { var td = document.createElement('td'); td.textContent = value; td.className = cls; return td; }

  function unreachable(why) {
    $('unreachable').hidden = false;
    text('unreachable-why', why);
    text('unreachable-age', lastOkAt === 0 ? 'never' : duration(Date.now() - lastOkAt));
    var overall = $('overall');
    overall.textContent = 'no answer';
    setTone(overall, 'badge', 'bad');
  }

  function poll() {
    var controller = new AbortController();
    var timer = setTimeout(function () { controller.abort(); }, TIMEOUT_MS);
    fetch(new URL('api/status', location.href), { cache: 'no-store', signal: controller.signal })
      .then(function (res) {
        if (!res.ok) throw new Error('HTTP ' + res.status);
        return res.json();
      })
      .then(function (report) {
        lastOkAt = Date.now();
        $('unreachable').hidden = true;
        render(report, lastOkAt);
      })
      .catch(function (err) {
        unreachable(err && err.name === 'AbortError' ? 'no answer within ' + TIMEOUT_MS / 1000 + ' s' : String(err && err.message || err));
      })
      .then(function () {
        clearTimeout(timer);
        setTimeout(poll, POLL_MS);
      });
  }
  poll();
})();
</script>
</body>
</html>
`
