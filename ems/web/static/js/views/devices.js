// Devices: the equipment list with each device's comm state and when it was last seen.
import { html, usePoll, ErrorBox } from "../ui.js";
import { get } from "../api.js";

export function Devices() {
  const [rows, err] = usePoll(() => get("/api/devices"), 5000);
  return html`<h1>Devices</h1><${ErrorBox} error=${err} />
    <section class="panel scroll">${rows ? html`<table id="devices"><thead><tr><th>Device ID</th><th>Name</th><th>Protocol</th>
      <th>Model</th><th>Address</th><th class="num">Poll ms</th><th>Comm</th><th>Last seen</th></tr></thead><tbody>
      ${rows.map((d) => html`<tr><td>${d.device_id}</td><td>${d.name}</td><td>${d.protocol}</td><td>${d.model}</td>
        <td>${d.address}</td><td class="num">${d.cycle_ms}</td>
        <td class=${d.status === "online" ? "state-ok" : "state-bad"}>${d.status}</td><td>${d.last_seen || "—"}</td></tr>`)}
      </tbody></table>` : null}
      <p><a href="/api/devices?format=csv" download="devices.csv">CSV</a></p></section>`;
}
