// Battery: stack and clusters, cell extremes with their location, and the heat-map of every cell.
import { html, num, usePoll, useState, ErrorBox } from "../ui.js";
import { get } from "../api.js";
import { Heatmap } from "../heatmap.js";

const at = (w) => (w ? `cell ${w.cell} (pack ${w.pack})` : "—");

export function Battery() {
  const [bat, err] = usePoll(() => get("/api/battery"), 2000);
  const [cells, cellErr] = usePoll(() => get("/api/cells"), 5000);
  const [quantity, setQuantity] = useState("v");
  return html`<h1>Battery</h1>
    <${ErrorBox} error=${err || cellErr} />
    <section class="panel heatmap"><h2>Every cell</h2>
      <div class="tabs"><button class=${quantity === "v" ? "on" : ""} onClick=${() => setQuantity("v")}>Voltage</button>
        <button class=${quantity === "t" ? "on" : ""} onClick=${() => setQuantity("t")}>Temperature</button></div>
      ${cells ? html`<${Heatmap} cells=${cells} quantity=${quantity} />` : html`<p class="muted">Loading cells…</p>`}
    </section>
    ${bat ? html`<section class="panel scroll"><h2>Clusters</h2><table id="clusters"><thead><tr>
      <th>Cluster</th><th class="num">Voltage V</th><th class="num">Current A</th><th class="num">Limits chg/dchg A</th>
      <th class="num">SOC %</th><th>Contactor</th><th>Cell V min</th><th>Cell V max</th><th>Cell °C min</th><th>Cell °C max</th>
      <th class="num">Balancing</th><th class="num">Bypassed packs</th></tr></thead><tbody>
      ${bat.clusters.map((c) => html`<tr data-cluster=${c.cluster}>
        <td>${c.cluster}${c.link_lost ? html` <span class="state-bad">link lost</span>` : null}</td>
        <td class="num">${num(c.voltage_v)}</td><td class="num">${num(c.current_a)}</td>
        <td class="num">${num(c.charge_limit_a, 0)} / ${num(c.discharge_limit_a, 0)}</td>
        <td class="num">${num(c.soc_pct)} ± ${num(c.soc_bound_pct)}</td>
        <td class=${c.contactor_closed ? "state-ok" : "state-bad"}>${c.contactor_closed ? "closed" : "open"}</td>
        <td>${num(c.cell_v_min, 3)} V, ${at(c.cell_v_min_at)}</td><td>${num(c.cell_v_max, 3)} V, ${at(c.cell_v_max_at)}</td>
        <td>${num(c.cell_t_min)} °C, ${at(c.cell_t_min_at)}</td><td>${num(c.cell_t_max)} °C, ${at(c.cell_t_max_at)}</td>
        <td class="num">${c.balancing_cells}</td><td class="num">${c.bypassed_packs}</td></tr>`)}
      </tbody></table></section>` : null}`;
}
