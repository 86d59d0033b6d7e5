// The heat-map of every cell: one row per cluster, one column per cell (up to 32 × 400), drawn into an
// ImageData (one pixel per cell, scaled by CSS) so 12,800 cells cost one putImageData. Balancing cells
// are marked by a white dot row under their cluster, bypassed packs by a dark band; hover names the cell.
import { html, useEffect, useRef, useState } from "./ui.js";

const ROW = 4;         // pixels per cluster: 3 for the cells, 1 for the marks

function color(f) {    // 0 → blue, 0.5 → green, 1 → red
  f = Math.max(0, Math.min(1, f));
  const r = f < 0.5 ? 0 : Math.round(510 * (f - 0.5)), g = f < 0.5 ? Math.round(510 * f) : Math.round(255 - 510 * (f - 0.5));
  const b = f < 0.5 ? Math.round(255 - 510 * f) : 0;
  return [r, g, b];
}

export function draw(canvas, cells, quantity) {
  const rows = quantity === "v" ? cells.cell_mv : cells.cell_t_decic;
  const C = rows.length, N = C ? rows[0].length : 0;
  let lo = Infinity, hi = -Infinity;
  for (const r of rows) for (const x of r) if (x !== null) { if (x < lo) lo = x; if (x > hi) hi = x; }
  if (hi === lo) { hi = lo + 1; }
  canvas.width = N; canvas.height = C * ROW;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(N, C * ROW), d = img.data;
  const per = N / cells.packs_per_cluster;
  for (let c = 0; c < C; c++) {
    const bal = new Set(cells.balancing[c]), byp = new Set(cells.bypassed_packs[c]);
    for (let k = 0; k < N; k++) {
      const x = rows[c][k];
      const [r, g, b] = x === null ? [128, 128, 128] : color((x - lo) / (hi - lo));
      const dark = byp.has(Math.floor(k / per));
      for (let y = 0; y < ROW - 1; y++) {
        const i = ((c * ROW + y) * N + k) * 4;
        d[i] = dark ? r >> 2 : r; d[i + 1] = dark ? g >> 2 : g; d[i + 2] = dark ? b >> 2 : b; d[i + 3] = 255;
      }
      const i = ((c * ROW + ROW - 1) * N + k) * 4;
      const m = bal.has(k) ? 255 : 240;
      d[i] = m; d[i + 1] = bal.has(k) ? 255 : 244; d[i + 2] = bal.has(k) ? 255 : 248; d[i + 3] = bal.has(k) ? 255 : 0;
    }
  }
  ctx.putImageData(img, 0, 0);
  canvas.style.height = `${Math.max(48, Math.min(C * 20, 640))}px`;    // readable for 1 cluster and for 32
  return { lo, hi, C, N };
}

export function Heatmap({ cells, quantity }) {
  const ref = useRef(null);
  const [info, setInfo] = useState(null);
  const [hover, setHover] = useState("");
  useEffect(() => {
    const t0 = performance.now();
    const r = draw(ref.current, cells, quantity);
    setInfo((old) => ({ ...r, ms: performance.now() - t0, n: old ? old.n + 1 : 1 }));
  }, [cells, quantity]);
  const scale = quantity === "v" ? 1 : 10, unit = quantity === "v" ? "mV" : "°C";
  const onMove = (ev) => {
    if (!info) return;
    const box = ref.current.getBoundingClientRect();
    const k = Math.floor((ev.clientX - box.left) / box.width * info.N), c = Math.floor((ev.clientY - box.top) / box.height * info.C);
    const rows = quantity === "v" ? cells.cell_mv : cells.cell_t_decic;
    if (c < 0 || c >= info.C || k < 0 || k >= info.N) return setHover("");
    const x = rows[c][k], per = info.N / cells.packs_per_cluster;
    setHover(`cluster ${c + 1}, cell ${k + 1} (pack ${Math.floor(k / per) + 1}): ${x === null ? "no reading" : (x / scale).toFixed(quantity === "v" ? 0 : 1) + " " + unit}`
             + (cells.balancing[c].includes(k) ? ", balancing" : "") + (cells.bypassed_packs[c].includes(Math.floor(k / per)) ? ", pack bypassed" : ""));
  };
  return html`<div>
    <canvas ref=${ref} id="heatmap" onMouseMove=${onMove} data-rendered-ms=${info ? info.ms.toFixed(1) : ""} data-renders=${info ? info.n : 0}
      data-cells=${info ? info.C * info.N : 0}></canvas>
    <div class="legend">${info ? html`<span>${(info.lo / scale).toFixed(quantity === "v" ? 0 : 1)} ${unit}</span>
      <span>blue → green → red</span><span>${(info.hi / scale).toFixed(quantity === "v" ? 0 : 1)} ${unit}</span>
      <span>· white dot: balancing · dark: bypassed pack · grey: no reading</span>` : null}</div>
    <p class="muted" data-k="hover">${hover || `${info ? info.C : 0} clusters × ${info ? info.N : 0} cells; hover a cell for its value`}</p></div>`;
}
