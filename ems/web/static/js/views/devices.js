// Devices: the equipment list with each device's comm state and when it was last seen; on a parallel site,
// the group: a master's units with their share and state, a slave's master and lease.
import { html, usePoll, ErrorBox } from "../ui.js";
import { get } from "../api.js";

const kw = (w) => (w === null || w === undefined ? "—" : (w / 1000).toFixed(1));

function Parallel() {
  const [p, err] = usePoll(() => get("/api/parallel"), 2000);
  if (err) return html`<${ErrorBox} error=${err} />`;
  if (!p || !p.enabled) return null;
  if (p.role === "slave") {
    return html`<section class="panel" id="parallel"><h2>Parallel group</h2>
      <p>Slave, unit <b>${p.unit_id}</b> of ${p.units}: <b data-k="parallel-state">${p.state}</b>
        — master ${p.master_id} at ${p.master_address}, lease ${p.lease_remaining_s} s left,
        share ${p.share === null ? "—" : (p.share * 100).toFixed(1) + " %"}, setpoint ${kw(p.setpoint_w)} kW,
        fallback ${p.fallback}; ${p.commands} commands, ${p.conflicts} refused for an ID conflict</p></section>`;
  }
  const s = p.site || {};
  return html`<section class="panel scroll" id="parallel"><h2>Parallel group</h2>
    <p>Master, unit <b>${p.unit_id}</b>: <b data-k="parallel-online">${p.online}</b> of ${p.units} units in the
      distribution; site target ${kw(p.site_target_w)} kW${Math.abs(p.unallocated_w) > 1 ? html`, <b class="state-bad">
      ${kw(p.unallocated_w)} kW no unit can take</b>` : ""}; site limits charge ${kw(s.charge_limit_w)} kW,
      discharge ${kw(s.discharge_limit_w)} kW; site SOC ${s.soc_pct === null ? "—" : s.soc_pct.toFixed(1) + " %"}</p>
    <table id="parallel-units"><thead><tr><th>Unit</th><th>Address</th><th>In</th><th>State</th>
      <th class="num">Share %</th><th class="num">Setpoint kW</th><th class="num">PCS kW</th><th class="num">SOC %</th>
      <th>Why out</th></tr></thead><tbody>
    ${(p.members || []).map((u) => html`<tr data-unit=${u.id}><td>${u.id}</td><td>${u.address}</td>
      <td class=${u.online ? "state-ok" : "state-bad"}>${u.online ? "in" : "out"}</td><td>${u.state}</td>
      <td class="num">${u.share_pct.toFixed(1)}</td><td class="num">${kw(u.setpoint_w)}</td><td class="num">${kw(u.pcs_w)}</td>
      <td class="num">${u.soc_pct === null ? "—" : u.soc_pct.toFixed(1)}</td>
      <td>${u.online ? "" : u.id_fault || u.error || "not available"}</td></tr>`)}
    </tbody></table></section>`;
}

export function Devices() {
  const [rows, err] = usePoll(() => get("/api/devices"), 5000);
  return html`<h1>Devices</h1><${ErrorBox} error=${err} /><${Parallel} />
    <section class="panel scroll">${rows ? html`<table id="devices"><thead><tr><th>Device ID</th><th>Name</th><th>Protocol</th>
      <th>Model</th><th>Address</th><th class="num">Poll ms</th><th>Comm</th><th>Last seen</th></tr></thead><tbody>
      ${rows.map((d) => html`<tr><td>${d.device_id}</td><td>${d.name}</td><td>${d.protocol}</td><td>${d.model}</td>
        <td>${d.address}</td><td class="num">${d.cycle_ms}</td>
        <td class=${d.status === "online" ? "state-ok" : "state-bad"}>${d.status}</td><td>${d.last_seen || "—"}</td></tr>`)}
      </tbody></table>` : null}
      <p><a href="/api/devices?format=csv" download="devices.csv">CSV</a></p></section>`;
}
