// History and reports: power over days to a month (the storage intervals, 5 min by default), the
// manual's daily / monthly / annual reports and electricity statistics, as charts and tables, with CSV.
import { html, useState, useEffect, useRef, usePoll, ErrorBox, num } from "../ui.js";
import { get } from "../api.js";
import { loadUPlot } from "../chart.js";

const today = () => new Date().toISOString().slice(0, 10);
const daysAgo = (n) => new Date(Date.now() - n * 86400e3).toISOString().slice(0, 10);
const POWER = [["grid_w", "Grid", "#c62828"], ["pv_w", "PV", "#f9a825"], ["load_w", "Load", "#6a1b9a"],
               ["pcs_w", "PCS", "#0b6bcb"]];
const ENERGY = [["pv_kwh", "PV"], ["load_kwh", "Load"], ["charge_kwh", "Charge"], ["discharge_kwh", "Discharge"],
                ["import_kwh", "Import"], ["export_kwh", "Export"], ["generator_kwh", "Generator"]];

function Chart({ data, series, id, bars, xRange }) {
  const box = useRef(null);
  useEffect(() => {
    let plot = null, dead = false;
    loadUPlot().then((uPlot) => {
      if (dead || !box.current) return;
      const t0 = performance.now();
      const opts = {
        width: box.current.clientWidth || 800, height: 320,
        scales: { x: xRange ? { time: true, range: () => xRange } : { time: !bars }, y: {}, pct: { range: [0, 100] } },
        series: [bars ? { label: "period" } : {}, ...series.map((s) => ({ label: s.label, stroke: s.color, fill: bars ? s.color + "55" : undefined,
          width: bars ? 1 : 1.5, scale: s.scale || "y", paths: bars ? uPlot.paths.bars({ size: [0.8, 40] }) : undefined }))],
        axes: [bars ? { values: (u, ticks) => ticks.map((t) => data.labels[t] || "") } : {}, { label: series[0].unit },
               ...(series.some((s) => s.scale === "pct") ? [{ scale: "pct", side: 1, grid: { show: false }, label: "SOC %" }] : [])],
      };
      plot = new uPlot(opts, data.columns, box.current);
      const el = box.current;
      // uPlot draws in a microtask after the constructor: the time is taken at the next frame, drawn
      requestAnimationFrame(() => { el.dataset.renderedMs = (performance.now() - t0).toFixed(1); el.dataset.points = String(data.columns[0].length); });
    });
    return () => { dead = true; plot && plot.destroy(); };
  }, [data]);
  return html`<div ref=${box} class="chart" id=${id}></div>`;
}

function Power() {
  const [range, setRange] = useState({ since: daysAgo(1), until: today() });
  const [data, err] = usePoll(() => get(`/api/history/power?since=${range.since}&until=${range.until}T23:59:59`), 0,
                              [range.since, range.until]);
  const submit = (ev) => { ev.preventDefault(); const f = new FormData(ev.target); setRange({ since: f.get("since"), until: f.get("until") }); };
  const chart = data && {
    columns: [data.t, ...POWER.map(([k]) => data[k].map((x) => (x === null ? null : x / 1000))), data.soc_pct],
  };
  return html`<section class="panel"><h2>Power</h2>
    <form class="inline" onSubmit=${submit} id="power-range">
      <label>From<input type="date" name="since" value=${range.since} /></label>
      <label>To<input type="date" name="until" value=${range.until} /></label>
      <button type="submit">Show</button></form>
    <${ErrorBox} error=${err} />
    ${chart ? html`<${Chart} id="power-chart" data=${chart}
      xRange=${[new Date(range.since + "T00:00").getTime() / 1000, new Date(range.until + "T23:59:59").getTime() / 1000]}
      series=${[...POWER.map(([, label, color]) => ({ label: label + " (kW)", color, unit: "kW" })),
                { label: "SOC (%)", color: "#1d7f3b", scale: "pct" }]} />
      <p class="muted">${data.t.length} storage intervals (mean power of each); drag to zoom, double-click to reset.</p>` : null}
  </section>`;
}

function Reports() {
  const [kind, setKind] = useState("daily");
  const [when, setWhen] = useState(today());
  const [interval, setInterval] = useState("60m");
  const q = `date=${when}${kind === "daily" ? `&interval=${interval}` : ""}`;
  const [rows, err] = usePoll(() => get(`/api/reports/${kind}?${q}`), 0, [kind, when, interval]);
  const period = { daily: "day", monthly: "month", annual: "year" }[kind];
  const [stats, errS] = usePoll(() => get(`/api/stats/${period}?date=${when}`), 0, [period, when]);
  const pick = (k) => { setKind(k); setWhen(k === "daily" ? today() : k === "monthly" ? today().slice(0, 7) : today().slice(0, 4)); };
  const chart = rows && rows.length && {
    labels: rows.map((r) => r.period), columns: [rows.map((_, i) => i), ...ENERGY.map(([k]) => rows.map((r) => r[k]))],
  };
  const COLORS = ["#f9a825", "#6a1b9a", "#1d7f3b", "#0b6bcb", "#c62828", "#ef6c00", "#5d4037"];
  return html`<section class="panel"><h2>Reports and electricity statistics</h2>
    <form class="inline" id="report-form" onSubmit=${(e) => e.preventDefault()}>
      <label>Report<select onChange=${(e) => pick(e.target.value)} id="report-kind">
        ${["daily", "monthly", "annual"].map((k) => html`<option selected=${k === kind}>${k}</option>`)}</select></label>
      <label>${kind === "daily" ? "Day" : kind === "monthly" ? "Month" : "Year"}
        ${kind === "daily" ? html`<input type="date" value=${when} onChange=${(e) => setWhen(e.target.value)} />`
          : kind === "monthly" ? html`<input type="month" value=${when} onChange=${(e) => setWhen(e.target.value)} />`
          : html`<input type="number" min="1970" max="2999" value=${when} onChange=${(e) => setWhen(e.target.value)} />`}</label>
      ${kind === "daily" ? html`<label>Interval<select onChange=${(e) => setInterval(e.target.value)}>
        ${["5m", "10m", "30m", "60m"].map((i) => html`<option selected=${i === interval}>${i}</option>`)}</select></label>` : null}
      <a id="report-csv" href=${`/api/reports/${kind}?${q}&format=csv`} download=${`report_${kind}_${when}.csv`}>CSV</a>
    </form>
    <${ErrorBox} error=${err || errS} />
    ${stats ? html`<dl class="kv" id="kpis">
      <dt>PV</dt><dd>${num(stats.totals_kwh.pv_kwh)} kWh</dd><dt>Load</dt><dd>${num(stats.totals_kwh.load_kwh)} kWh</dd>
      <dt>Import / export</dt><dd>${num(stats.totals_kwh.import_kwh)} / ${num(stats.totals_kwh.export_kwh)} kWh</dd>
      <dt>Charge / discharge</dt><dd>${num(stats.totals_kwh.charge_kwh)} / ${num(stats.totals_kwh.discharge_kwh)} kWh</dd>
      <dt>Self-consumption</dt><dd>${num(stats.kpis.self_consumption_pct)} %</dd>
      <dt>Self-sufficiency</dt><dd>${num(stats.kpis.self_sufficiency_pct)} %</dd></dl>` : null}
    ${chart ? html`<${Chart} id="report-chart" bars=${true} data=${chart}
      series=${ENERGY.map(([, label], i) => ({ label: label + " (kWh)", color: COLORS[i], unit: "kWh" }))} />` : null}
    ${rows ? html`<div class="scroll"><table id="report-table"><thead><tr><th>Period</th>
      ${ENERGY.map(([, l]) => html`<th class="num">${l} kWh</th>`)}<th class="num">SOC end %</th></tr></thead><tbody>
      ${rows.map((r) => html`<tr><td>${r.period}</td>${ENERGY.map(([k]) => html`<td class="num">${num(r[k], 2)}</td>`)}
        <td class="num">${num(r.soc_end_pct)}</td></tr>`)}</tbody></table></div>` : null}
  </section>`;
}

export function History() {
  return html`<h1>History and reports</h1><${Power} /><${Reports} />`;
}
