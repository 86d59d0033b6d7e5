// Overview: power flow, SOC with its bound, strategy and why, mode, devices, active alarms by level.
import { html, kw, num, ErrorBox, useEffect } from "../ui.js";
import { PowerFlow } from "../flow.js";

const LEVELS = ["severe", "moderate", "mild"];

export function Overview({ live }) {
  const s = live.status;
  useEffect(() => {     // the first numbers on screen: a mark the page-speed benchmark reads
    if (s && !performance.getEntriesByName("ems-first-status").length) performance.mark("ems-first-status");
  }, [s !== null]);
  if (!s) return html`<${ErrorBox} error=${live.error} /><p class="muted">Waiting for the controller's first status…</p>`;
  const counts = Object.fromEntries(LEVELS.map((l) => [l, 0]));
  for (const a of s.active_alarms || []) counts[a.level] = (counts[a.level] || 0) + 1;
  return html`
    <h1>Overview ${s.simulated ? html`<span class="sim">SIMULATED</span>` : null}</h1>
    <${ErrorBox} error=${live.error} />
    <div class="grid">
      <section class="panel flow"><h2>Power flow</h2><${PowerFlow} s=${s} /></section>
      <section class="panel">
        <h2>Battery</h2>
        <div class="big"><span data-k="soc_pct">${num(s.soc_pct)}</span> %${"\u00a0"}<span class="muted" data-k="soc_bound_pct">± ${num(s.soc_bound_pct)}</span></div>
        <dl class="kv">
          <dt>PCS</dt><dd><span data-k="pcs_w">${kw(s.pcs_w)}</span> kW ${s.pcs_w > 0 ? "(discharging)" : s.pcs_w < 0 ? "(charging)" : ""}</dd>
          <dt>Setpoint</dt><dd><span data-k="setpoint_w">${kw(s.setpoint_w)}</span> kW, PCS ${s.pcs_run ? "running" : "stopped"}</dd>
          <dt>Charge limit</dt><dd><span data-k="charge_limit_w">${kw(s.charge_limit_w)}</span> kW</dd>
          <dt>Discharge limit</dt><dd><span data-k="discharge_limit_w">${kw(s.discharge_limit_w)}</span> kW</dd>
        </dl>
      </section>
      <section class="panel">
        <h2>Control</h2>
        <dl class="kv">
          <dt>Strategy</dt><dd data-k="strategy">${s.strategy || "—"}</dd>
          <dt>Why</dt><dd data-k="reason">${s.reason || "—"}</dd>
          <dt>Mode</dt><dd data-k="mode">${s.remote_mode ? "remote (dispatch)" : "local"}</dd>
          <dt>Grid</dt><dd data-k="on_grid">${s.on_grid ? "on grid" : "off grid"}</dd>
          <dt>Updated</dt><dd data-k="time" data-time=${s.time}>${new Date(s.time).toLocaleTimeString()}</dd>
        </dl>
      </section>
      <section class="panel">
        <h2>Active alarms</h2>
        <div class="kv">${LEVELS.map((l) => html`<span class=${"level-" + l}>${l}</span><span data-k=${"alarms_" + l}>${counts[l]}</span>`)}</div>
        ${(s.active_alarms || []).length ? html`<ul class="alarm-list">${s.active_alarms.map((a) =>
          html`<li class=${"level-" + a.level}><span data-code=${a.code}>${a.code}</span> ${a.label} (${a.device_id})</li>`)}</ul>`
          : html`<p class="muted" data-k="no_alarms">No active alarm.</p>`}
        <a href="#/alarms">Alarms page</a>
      </section>
      <section class="panel">
        <h2>Devices</h2>
        <table><thead><tr><th>Device</th><th>Comm</th><th class="num">Last seen</th></tr></thead><tbody>
        ${(s.devices || []).map((d) => html`<tr data-device=${d.name}>
          <td>${d.name}</td><td class=${d.status === "online" ? "state-ok" : "state-bad"}>${d.status}</td>
          <td class="num">${d.last_seen_s_ago === null || d.last_seen_s_ago === undefined ? "—" : num(d.last_seen_s_ago, 0) + " s ago"}</td></tr>`)}
        </tbody></table>
      </section>
    </div>`;
}
