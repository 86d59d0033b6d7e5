// The EMS page: session, navigation by role, the live stream shared by every view.
import { html, render, useState, useEffect, Guard } from "./ui.js";
import { get, post, setCsrf, ApiError } from "./api.js";
import { Login, Setup } from "./views/login.js";
import { Overview } from "./views/overview.js";
import { Curves } from "./views/curves.js";
import { Battery } from "./views/battery.js";
import { Alarms } from "./views/alarms.js";
import { Devices } from "./views/devices.js";
import { Account } from "./views/account.js";
import { Settings } from "./views/settings.js";
import { History } from "./views/history.js";
import { Maintenance } from "./views/maintenance.js";
import { Users } from "./views/users.js";
import { LiveBuffer } from "./live.js";

const VIEWS = [
  { id: "overview", title: "Overview", need: "read", view: Overview },
  { id: "curves", title: "Live curves", need: "read", view: Curves },
  { id: "battery", title: "Battery", need: "read", view: Battery },
  { id: "alarms", title: "Alarms", need: "read", view: Alarms },
  { id: "history", title: "History", need: "read", view: History },
  { id: "settings", title: "Settings", need: "read", view: Settings },
  { id: "devices", title: "Devices", need: "read", view: Devices },
  { id: "maintenance", title: "Maintenance", need: "read", view: Maintenance },
  { id: "users", title: "Users", need: "users", view: Users },
  { id: "account", title: "Account", need: "read", view: Account },
];

function route() { return (location.hash.replace(/^#\/?/, "") || "overview").split("?")[0]; }

function Shell({ session, onLogout }) {
  const [page, setPage] = useState(route());
  const [live, setLive] = useState({ status: null, error: null, buffer: null });
  useEffect(() => {
    const onHash = () => setPage(route());
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);
  useEffect(() => {            // one live stream for the whole page (1 Hz); the browser reconnects it
    const buffer = new LiveBuffer(4 * 3600);
    const es = new EventSource("/api/live/stream");
    es.addEventListener("status", (ev) => {
      const s = JSON.parse(ev.data);
      buffer.push(s);
      setLive({ status: s, error: null, buffer });
    });
    es.onerror = () => setLive((l) => ({ ...l, error: new ApiError(0, "live stream interrupted: reconnecting…") }));
    get("/api/live").then((s) => { buffer.push(s); setLive({ status: s, error: null, buffer }); }).catch(() => {});
    get("/api/live/history").then((h) => { buffer.backfill(h); setLive((l) => ({ ...l, buffer })); }).catch(() => {});
    return () => es.close();
  }, []);
  const can = (p) => session.permissions.includes(p);
  const views = VIEWS.filter((v) => can(v.need));
  const current = views.find((v) => v.id === page) || views[0];
  const View = current.view;
  const s = live.status;
  return html`
    <header class="top">
      <span class="site">${s ? s.site : "EMS"}</span>
      ${s && s.simulated ? html`<span class="sim" title="the devices are a simulated site">SIMULATED</span>` : null}
      <nav>${views.map((v) => html`<a href=${"#/" + v.id} class=${v.id === current.id ? "active" : ""}>${v.title}</a>`)}</nav>
      <span class="who">${session.user} (${session.role})</span>
      <button onClick=${onLogout}>Log out</button>
    </header>
    <main><${Guard} key=${current.id}><${View} session=${session} can=${can} live=${live} /><//></main>`;
}

function App() {
  const [state, setState] = useState({ phase: "loading" });
  const start = async () => {
    try {
      const health = await get("/api/health");
      if (health.setup_required) return setState({ phase: "setup" });
      const session = await get("/api/session");
      setCsrf(session.csrf);
      setState({ phase: "in", session });
    } catch (e) {
      if (e.status === 401) setState({ phase: "login" });
      else setState({ phase: "error", error: e });
    }
  };
  useEffect(() => { start(); }, []);
  const logout = async () => { try { await post("/api/logout"); } catch {} setCsrf(null); setState({ phase: "login" }); };
  if (state.phase === "loading") return html`<p class="boot">Loading…</p>`;
  if (state.phase === "error") return html`<main><p class="error" role="alert">${state.error.message}</p></main>`;
  if (state.phase === "setup") return html`<${Setup} onDone=${() => setState({ phase: "login" })} />`;
  if (state.phase === "login") return html`<${Login} onDone=${start} />`;
  return html`<${Shell} session=${state.session} onLogout=${logout} />`;
}

render(html`<${App} />`, document.getElementById("app"));
