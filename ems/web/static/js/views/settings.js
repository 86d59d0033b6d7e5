// Settings: one form per section, generated from the schema (GET /api/schema: type, default, range, unit,
// help), filled with the site file's values (GET /api/parameters), saved with PATCH /api/parameters. The
// server validates exactly as `ems config check` does; its problems are shown next to their fields.
// List sections (the time-based plan's weekly groups, feed-in periods) are edited as tables.
import { html, useState, useEffect, ErrorBox } from "../ui.js";
import { get, api } from "../api.js";

function parse(f, raw) {
  if (f.type === "bool") return raw;
  if (f.type === "int") return raw === "" ? raw : Number.parseInt(raw, 10);
  if (f.type === "float") return raw === "" ? raw : Number(raw);
  if (f.type === "strings") return raw.split(",").map((x) => x.trim()).filter((x) => x);
  if (f.type === "numbers") return raw.split(",").map((x) => x.trim()).filter((x) => x).map(Number);
  return raw;
}

const show = (f, v) => (Array.isArray(v) ? v.join(", ") : v === null || v === undefined ? "" : String(v));

function Input({ f, value, onChange, disabled, id }) {
  if (f.type === "bool") {
    return html`<input id=${id} type="checkbox" checked=${!!value} disabled=${disabled} onChange=${(e) => onChange(e.target.checked)} />`;
  }
  if (f.type === "choice") {
    return html`<select id=${id} disabled=${disabled} onChange=${(e) => onChange(e.target.value)}>
      ${f.choices.map((c) => html`<option value=${c} selected=${c === value}>${c}</option>`)}</select>`;
  }
  const numeric = f.type === "int" || f.type === "float";
  return html`<input id=${id} type=${numeric ? "number" : "text"} step=${f.type === "int" ? "1" : "any"}
    min=${numeric && f.lo !== null ? f.lo : undefined} max=${numeric && f.hi !== null ? f.hi : undefined}
    value=${show(f, value)} disabled=${disabled} onInput=${(e) => onChange(parse(f, e.target.value))} />`;
}

const range = (f) => (f.lo !== null && f.hi !== null ? `${f.lo} … ${f.hi} ${f.unit}`.trim() : f.choices ? f.choices.join(" / ") : "");

function ListTable({ f, rows, onChange, disabled, errors, prefix }) {
  const set = (i, key, v) => onChange(rows.map((r, j) => (j === i ? { ...r, [key]: v } : r)));
  const add = () => onChange([...rows, Object.fromEntries(f.item.map((g) => [g.key, g.default]))]);
  const del = (i) => onChange(rows.filter((_, j) => j !== i));
  return html`<div class="scroll"><table class="list-table" data-list=${f.key}><thead><tr>
      ${f.item.map((g) => html`<th title=${g.doc}>${g.key}${g.unit ? ` (${g.unit})` : ""}</th>`)}<th></th></tr></thead><tbody>
    ${rows.map((r, i) => html`<tr>${f.item.map((g) => html`<td><${Input} f=${g} value=${r[g.key]} disabled=${disabled}
        id=${`${prefix}.${f.key}.${i}.${g.key}`} onChange=${(v) => set(i, g.key, v)} /></td>`)}
      <td><button class="secondary" type="button" disabled=${disabled} onClick=${() => del(i)}>remove</button></td></tr>`)}
    </tbody></table>
    <button class="secondary" type="button" disabled=${disabled || (f.max_items && rows.length >= f.max_items)} onClick=${add}>add a row</button>
    ${f.max_items ? html`<span class="muted"> at most ${f.max_items}</span>` : null}
    ${errors.map((e) => html`<p class="error field-error">${e}</p>`)}</div>`;
}

const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const NAMED = { all: DAYS, weekdays: DAYS.slice(0, 5), weekend: DAYS.slice(5) };
const minutes = (hhmm) => { const m = /^(\d\d):(\d\d)$/.exec(hhmm || ""); return m ? Number(m[1]) * 60 + Number(m[2]) : null; };

// The time-based plan as a week: every half hour of every day, the group that holds it (what the edits in
// the table above would save; outside every group self-consumption runs).
function WeekGrid({ groups }) {
  const cell = (day, slot) => {
    const t0 = slot * 30, hits = [];
    (groups || []).forEach((g, i) => {
      const days = Array.isArray(g.days) ? g.days.flatMap((d) => NAMED[d] || [d]) : NAMED[g.days] || [g.days];
      const a = minutes(g.start), b = g.end === "24:00" ? 1440 : minutes(g.end);
      if (days.includes(day) && a !== null && b !== null && t0 >= a && t0 < b) hits.push(i);
    });
    return hits;
  };
  return html`<div class="scroll"><table class="week" id="week-grid"><thead><tr><th></th>
      ${Array.from({ length: 24 }, (_, h) => html`<th colspan="2">${h}</th>`)}</tr></thead><tbody>
    ${DAYS.map((d) => html`<tr><th>${d}</th>${Array.from({ length: 48 }, (_, s) => {
      const hits = cell(d, s), g = hits.length ? groups[hits[0]] : null;
      const cls = hits.length > 1 ? "overlap" : g ? g.mode : "";
      const at = `${String(Math.floor(s / 2)).padStart(2, "0")}:${s % 2 ? "30" : "00"}`;
      return html`<td class=${cls} data-slot=${`${d}-${at}`} title=${g ? `${d} ${at}: group ${hits.map((h) => h + 1).join(" + ")}, ${g.mode} ${g.power_w / 1000} kW to ${g.cutoff_soc_pct} %` : `${d} ${at}: self-consumption`}></td>`;
    })}</tr>`)}</tbody></table>
    <p class="legend"><span class="swatch charge"></span> charge <span class="swatch discharge"></span> discharge
      <span class="swatch overlap"></span> groups overlap (the server refuses it) · empty: self-consumption</p></div>`;
}

export function Settings({ session, can }) {
  const [schema, setSchema] = useState(null);
  const [params, setParams] = useState(null);
  const [error, setError] = useState(null);
  const [sel, setSel] = useState(new URLSearchParams(location.hash.split("?")[1] || "").get("s") || "self_use");
  const [draft, setDraft] = useState({});
  const [result, setResult] = useState(null);
  const [fieldErrors, setFieldErrors] = useState({});
  const load = async () => {
    try {
      const [s, p] = await Promise.all([get("/api/schema"), get("/api/parameters")]);
      setSchema(s); setParams(p); setError(null);
    } catch (e) { setError(e); }
  };
  useEffect(() => { load(); }, []);
  if (!schema || !params) return html`<h1>Settings</h1><${ErrorBox} error=${error} /><p class="muted">Loading…</p>`;
  const sec = schema.find((x) => x.section === sel) || schema[0];
  const values = sec.section.split(".").reduce((o, k) => (o ? o[k] : undefined), params.parameters) || {};
  const value = (k) => (k in draft ? draft[k] : values[k]);
  const mayChange = params.file && can(sec.operational ? "parameters_operational" : "parameters_installation");
  const choose = (name) => { setSel(name); setDraft({}); setResult(null); setFieldErrors({}); location.hash = `#/settings?s=${name}`; };
  const save = async (ev) => {
    ev.preventDefault();
    const changes = {};
    for (const [k, v] of Object.entries(draft)) changes[`${sec.section}.${k}`] = v;
    if (!Object.keys(changes).length) return setResult({ text: "nothing changed" });
    try {
      const r = await api("PATCH", "/api/parameters", changes);
      setResult({ ok: true, r }); setFieldErrors({}); setDraft({}); await load();
    } catch (e) {
      const byField = {};
      for (const p of (e.problems && e.status === 400 ? (e.fields || []) : [])) (byField[p.key] = byField[p.key] || []).push(p.message);
      setResult({ error: e }); setFieldErrors(byField);
    }
  };
  const errorsFor = (key) => {
    const full = `${sec.section}.${key}`;
    return Object.entries(fieldErrors).filter(([k]) => k === full || k.startsWith(full + "[") || k.startsWith(full + "."))
      .flatMap(([, m]) => m);
  };
  return html`<h1>Settings</h1>
    <div class="settings">
      <label>Section<select id="section" onChange=${(e) => choose(e.target.value)}>
        ${schema.map((x) => html`<option value=${x.section} selected=${x.section === sec.section}>${x.section}</option>`)}</select></label>
      ${!params.file ? html`<p class="notice">This controller runs without a site file: settings can be read here, not changed.</p>` : null}
      ${params.file && !mayChange ? html`<p class="notice">Your role (${session.role}) may not change [${sec.section}].</p>` : null}
      <form class="panel" id="settings-form" novalidate onSubmit=${save}>
        <h2>[${sec.section}] <span class="muted">${sec.live ? "applies live" : "applies after a restart"}</span></h2>
        ${sec.doc ? html`<p class="muted">${sec.doc}</p>` : null}
        ${sec.fields.map((f) => html`<div class="field" data-field=${f.key}>
          <label for=${`${sec.section}.${f.key}`}><b>${f.key}</b>${f.unit ? ` (${f.unit})` : ""}</label>
          ${f.type === "list"
            ? html`<${ListTable} f=${f} rows=${value(f.key) || []} disabled=${!mayChange} errors=${errorsFor(f.key)} prefix=${sec.section}
                 onChange=${(v) => setDraft({ ...draft, [f.key]: v })} />`
            : html`<${Input} f=${f} id=${`${sec.section}.${f.key}`} value=${value(f.key)} disabled=${!mayChange}
                 onChange=${(v) => setDraft({ ...draft, [f.key]: v })} />`}
          <small class="muted">${f.doc}${range(f) ? ` — ${range(f)}` : ""}; default ${show(f, f.default) || "none"}</small>
          ${f.type !== "list" ? errorsFor(f.key).map((m) => html`<p class="error field-error" data-error-for=${f.key}>${m}</p>`) : null}
        </div>`)}
        ${sec.section === "time_based" ? html`<h2>The week</h2><${WeekGrid} groups=${value("groups")} />` : null}
        ${mayChange ? html`<p><button type="submit" id="save">Save</button></p>` : null}
        ${result && result.ok ? html`<p class="notice" role="status" id="save-result">saved ${result.r.saved.join(", ")}${
          result.r.applied_live.length ? `; applied live: ${result.r.applied_live.join(", ")}` : ""}${
          result.r.after_restart.length ? `; applies after restart: ${result.r.after_restart.join(", ")}` : ""}${
          result.r.pending_live && result.r.pending_live.length ? `; taken by the controller at its next cycle (${result.r.not_live_because}): ${result.r.pending_live.join(", ")}` : ""}${
          result.r.not_live_because && result.r.after_restart.length ? ` (not live: ${result.r.not_live_because})` : ""}</p>` : null}
        ${result && result.text ? html`<p class="muted">${result.text}</p>` : null}
        <${ErrorBox} error=${result && result.error} />
      </form></div>`;
}
