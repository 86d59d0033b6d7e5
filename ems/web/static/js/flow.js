// The power-flow diagram: grid, PV, generator, load and battery around the AC bus, each line lit and
// arrowed in the direction power flows, with its kW. Signs as everywhere in the EMS: sources positive
// (grid_w > 0 import, pcs_w > 0 discharge, pv_w / dg_w generation, load_w consumption).
import { html, kw } from "./ui.js";

const BUS = { x: 280, y: 170 };
const NODES = [
  { key: "grid_w", label: "Grid", x: 80, y: 60, into: 1 },       // into: +1 when a positive value flows to the bus
  { key: "pv_w", label: "PV", x: 280, y: 40, into: 1 },
  { key: "dg_w", label: "Generator", x: 480, y: 60, into: 1 },
  { key: "load_w", label: "Load", x: 480, y: 290, into: -1 },
  { key: "pcs_w", label: "Battery", x: 80, y: 290, into: 1 },
];

function Line({ n, w }) {
  const active = w !== null && w !== undefined && Math.abs(w) >= 50;
  const toBus = active && Math.sign(w) * n.into > 0;
  const [x1, y1, x2, y2] = toBus ? [n.x, n.y, BUS.x, BUS.y] : [BUS.x, BUS.y, n.x, n.y];
  const mx = (x1 + x2) / 2, my = (y1 + y2) / 2, a = Math.atan2(y2 - y1, x2 - x1) * 180 / Math.PI;
  return html`<g>
    <line class=${"line" + (active ? " active" : "")} x1=${n.x} y1=${n.y} x2=${BUS.x} y2=${BUS.y} />
    ${active ? html`<polygon class="arrow" points="-9,-7 9,0 -9,7" transform=${`translate(${mx},${my}) rotate(${a})`}
      data-flow=${n.key} data-dir=${toBus ? "to-bus" : "from-bus"} />` : null}</g>`;
}

export function PowerFlow({ s }) {
  return html`<svg viewBox="0 0 560 340" role="img" aria-label="power flow">
    ${NODES.map((n) => html`<${Line} n=${n} w=${s[n.key]} />`)}
    <circle cx=${BUS.x} cy=${BUS.y} r="10" class="node" />
    ${NODES.map((n) => html`<g>
      <rect class="node" x=${n.x - 62} y=${n.y - 28} width="124" height="56" rx="8" />
      <text class="node-label" x=${n.x} y=${n.y - 8}>${n.label}</text>
      <text class="node-value" x=${n.x} y=${n.y + 16} data-flow-value=${n.key}>${kw(s[n.key] === null || s[n.key] === undefined ? null : Math.abs(s[n.key]))} kW</text></g>`)}
  </svg>`;
}
