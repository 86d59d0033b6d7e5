// Maintenance (000_… 3.3.4.2): the clock, restart, factory reset, upgrade tasks, the operation log.
import { html, useState, usePoll, ErrorBox } from "../ui.js";
import { get, post, api, upload as uploadFile } from "../api.js";

function Result({ r }) {
  if (!r) return null;
  return r.error ? html`<${ErrorBox} error=${r.error} />` : html`<p class="notice" role="status">${r.text}</p>`;
}

function Clock({ can }) {
  const [clock, err] = usePoll(() => get("/api/maintenance/clock"), 5000);
  const [r, setR] = useState(null);
  const set = async (ev) => {
    ev.preventDefault();
    const local = new FormData(ev.target).get("time");
    const when = new Date(local);
    const off = -when.getTimezoneOffset(), sign = off >= 0 ? "+" : "-", a = Math.abs(off);
    const iso = `${local.length === 16 ? local + ":00" : local}${sign}${String(Math.floor(a / 60)).padStart(2, "0")}:${String(a % 60).padStart(2, "0")}`;
    try { const x = await post("/api/maintenance/clock", { time: iso }); setR({ text: `clock set to ${x.set} (${x.step_s} s)` }); }
    catch (e) { setR({ error: e }); }
  };
  return html`<section class="panel"><h2>Clock</h2><${ErrorBox} error=${err} />
    ${clock ? html`<p>EMS time: <b id="ems-clock">${new Date(clock.utc).toLocaleString()}</b> <span class="muted">(${clock.utc}); this browser: ${new Date().toLocaleString()}</span></p>
      <dl class="kv" id="clock-sync"><dt>NTP</dt><dd>${clock.sync.ntp_synchronized === null ? "unknown (no systemd here)" : clock.sync.ntp_synchronized ? "synchronised" : "not synchronised"}</dd>
        <dt>SCADA</dt><dd>${clock.sync.scada_sets_clock ? "sets the clock ([dispatch] clock_from_scada)" : "may not set the clock"}</dd>
        <dt>Manual</dt><dd>this page (maintenance role)</dd></dl>` : null}
    ${can("maintenance") ? html`<form class="inline" onSubmit=${set}><label>Set to (this browser's time zone)
      <input type="datetime-local" name="time" step="1" required /></label><button type="submit">Set clock</button></form>` : null}
    <${Result} r=${r} /></section>`;
}

function Restart() {
  const [r, setR] = useState(null);
  const restart = async () => {
    if (!confirm("Restart the EMS now? Control stops for a few seconds.")) return;
    try { await post("/api/maintenance/restart"); setR({ text: "restarting: the page reconnects when the EMS is back" }); }
    catch (e) { setR({ error: e }); }
  };
  const reset = async () => {
    if (!confirm("Factory reset: every setting back to its default (the history is kept). Continue?")) return;
    try { const x = await post("/api/maintenance/factory-reset", { confirm: true }); setR({ text: `factory reset: ${x.done.join("; ")}` }); }
    catch (e) { setR({ error: e }); }
  };
  return html`<section class="panel"><h2>Restart and factory reset</h2>
    <p><button onClick=${restart}>Restart the EMS</button> <button class="secondary" onClick=${reset}>Factory reset…</button></p>
    <${Result} r=${r} /></section>`;
}

function Upgrades({ can }) {
  const [n, setN] = useState(0);
  const [data, err] = usePoll(() => get("/api/maintenance/updates"), 0, [n]);
  const [r, setR] = useState(null);
  const upload = async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target), file = f.get("bundle"), at = f.get("at");
    const q = new URLSearchParams();
    if (at) q.set("at", new Date(at).toISOString());
    try {
      const body = await uploadFile(`/api/maintenance/updates?${q}`, file);
      setR({ text: `reserved ${body.version} at ${body.at} (task ${body.id})` }); setN(n + 1);
    } catch (e) { setR({ error: e }); }
  };
  const cancel = async (id) => {
    try { await api("DELETE", `/api/maintenance/updates/${encodeURIComponent(id)}`); setR({ text: `task ${id} cancelled` }); setN(n + 1); }
    catch (e) { setR({ error: e }); }
  };
  return html`<section class="panel"><h2>Upgrades</h2><${ErrorBox} error=${err} />
    ${data ? html`<p class="muted">${data.board ? JSON.stringify(data.board) : ""}</p>
      <table id="upgrades"><thead><tr><th>Task</th><th>Version</th><th>At</th><th></th></tr></thead><tbody>
      ${(data.reserved || []).map((t) => html`<tr><td>${t.id}</td><td>${t.version}</td><td>${t.at}</td>
        <td>${can("upgrade") ? html`<button class="secondary" onClick=${() => cancel(t.id)}>delete</button>` : null}</td></tr>`)}
      </tbody></table>` : null}
    ${can("upgrade") ? html`<form class="inline" onSubmit=${upload}><label>Bundle<input type="file" name="bundle" required /></label>
      <label>At (empty: now)<input type="datetime-local" name="at" /></label><button type="submit">Upload and reserve</button></form>` : null}
    <${Result} r=${r} /></section>`;
}

function Log() {
  const [kind, setKind] = useState("operation");
  const [rows, err] = usePoll(() => get(`/api/log?kind=${kind}`), 0, [kind]);
  return html`<section class="panel"><h2>Log</h2>
    <div class="tabs">${["operation", "system"].map((k) => html`<button class=${k === kind ? "on" : ""} onClick=${() => setKind(k)}>${k}</button>`)}
      <a href=${`/api/log?kind=${kind}&format=csv`} download=${`log_${kind}.csv`}>CSV</a></div>
    <${ErrorBox} error=${err} />
    ${rows ? html`<div class="scroll"><table id="log"><thead><tr><th>Time</th><th>Action</th><th>User</th><th>Detail</th></tr></thead><tbody>
      ${rows.slice(-200).reverse().map((x) => html`<tr><td>${x.time}</td><td>${x.action}</td><td>${x.user}</td><td>${x.detail}</td></tr>`)}
      </tbody></table></div>` : null}</section>`;
}

export function Maintenance({ can }) {
  return html`<h1>Maintenance</h1><${Clock} can=${can} />${can("maintenance") ? html`<${Restart} />` : null}
    <${Upgrades} can=${can} /><${Log} />`;
}
