// Alarms: active ones with level, device, raise time and the catalogue's remedy; the history with the
// filters of `ems alarms`; fault reset for the roles allowed; CSV export of what is shown.
import { html, useState, usePoll, ErrorBox } from "../ui.js";
import { get, post } from "../api.js";

const FILTERS = [["since", "Since", "date"], ["until", "Until", "date"], ["code", "Code", "text"],
                 ["device", "Device ID", "text"]];

function query(f) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(f)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  return q.toString();
}

function Table({ rows, id }) {
  if (!rows.length) return html`<p class="muted" data-k=${id + "_empty"}>None.</p>`;
  return html`<div class="scroll"><table id=${id}><thead><tr><th>Raised</th><th>Cleared</th><th>Level</th><th>Code</th>
    <th>Name</th><th>Device</th><th>Remedy</th></tr></thead><tbody>
    ${rows.map((a) => html`<tr data-code=${a.code}><td>${a.raised_at}</td><td>${a.cleared_at || "active"}</td>
      <td class=${"level-" + a.level}>${a.level}</td><td>${a.code}</td><td title=${a.description}>${a.name}</td>
      <td>${a.device_id}</td><td>${a.remedy}</td></tr>`)}</tbody></table></div>`;
}

export function Alarms({ can }) {
  const [active, errA] = usePoll(() => get("/api/alarms?active=1"), 3000);
  const [filters, setFilters] = useState({ since: "", until: "", code: "", level: "", device: "" });
  const [history, errH] = usePoll(() => get("/api/alarms?" + query(filters)), 0, [JSON.stringify(filters)]);
  const [result, setResult] = useState(null);
  const reset = async () => {
    try { const r = await post("/api/commands/fault_reset", {}); setResult({ ok: true, text: `fault reset: ${r.result}` }); }
    catch (e) { setResult({ ok: false, error: e }); }
  };
  const onFilter = (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    setFilters(Object.fromEntries(["since", "until", "code", "level", "device"].map((k) => [k, f.get(k) || ""])));
  };
  return html`<h1>Alarms</h1>
    <section class="panel"><h2>Active</h2>
      ${can("command") ? html`<p><button id="fault-reset" onClick=${reset}>Fault reset</button></p>` : null}
      ${result ? (result.ok ? html`<p class="notice" role="status">${result.text}</p>` : html`<${ErrorBox} error=${result.error} />`) : null}
      <${ErrorBox} error=${errA} />${active ? html`<${Table} rows=${active} id="active-alarms" />` : null}</section>
    <section class="panel"><h2>History</h2>
      <form class="inline" onSubmit=${onFilter} id="alarm-filters">
        ${FILTERS.map(([k, label, type]) => html`<label>${label}<input name=${k} type=${type} /></label>`)}
        <label>Level<select name="level"><option value="">any</option><option>severe</option><option>moderate</option><option>mild</option></select></label>
        <button type="submit">Show</button>
        <a id="alarms-csv" href=${"/api/alarms?" + query({ ...filters, format: "csv" })} download="alarms.csv">CSV</a>
      </form>
      <${ErrorBox} error=${errH} />${history ? html`<${Table} rows=${history} id="alarm-history" />` : null}</section>`;
}
