// The live values since the page opened, for the curves: a ring of at most `max` points per series.
export const SERIES = [
  { key: "grid_w", label: "Grid", unit: "kW", scale: 1e-3 },
  { key: "pv_w", label: "PV", unit: "kW", scale: 1e-3 },
  { key: "load_w", label: "Load", unit: "kW", scale: 1e-3 },
  { key: "pcs_w", label: "PCS", unit: "kW", scale: 1e-3 },
  { key: "soc_pct", label: "SOC", unit: "%", scale: 1 },
];

export class LiveBuffer {
  constructor(max) { this.max = max; this.t = []; this.cols = SERIES.map(() => []); this.lastTime = null; }
  push(s) {
    if (!s || !s.time || s.time === this.lastTime) return;
    this.lastTime = s.time;
    this.t.push(Date.parse(s.time) / 1000);
    SERIES.forEach((d, i) => this.cols[i].push(s[d.key] === null || s[d.key] === undefined ? null : s[d.key] * d.scale));
    if (this.t.length > this.max) { this.t.shift(); this.cols.forEach((c) => c.shift()); }
  }
  data() { return [this.t, ...this.cols]; }
  // the server's backlog (GET /api/live/history), before the points the stream brought since
  backfill(h) {
    const first = this.t.length ? this.t[0] : Infinity;
    const keep = h.t.map((t, i) => i).filter((i) => h.t[i] < first);
    this.t = keep.map((i) => h.t[i]).concat(this.t);
    SERIES.forEach((d, j) => {
      this.cols[j] = keep.map((i) => (h[d.key][i] === null || h[d.key][i] === undefined ? null : h[d.key][i] * d.scale)).concat(this.cols[j]);
    });
    while (this.t.length > this.max) { this.t.shift(); this.cols.forEach((c) => c.shift()); }
  }
}
