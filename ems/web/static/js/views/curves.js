// Live curves: grid, PV, load, PCS (kW) and SOC (%) since the page opened, one point a second from the
// live stream. uPlot: drag to zoom, double-click to reset; the window buttons pan to the latest minutes.
import { html, useEffect, useRef, useState } from "../ui.js";
import { SERIES } from "../live.js";
import { loadUPlot } from "../chart.js";

const WINDOWS = [["5 min", 300], ["30 min", 1800], ["1 h", 3600], ["4 h", 14400], ["all", 0]];
const COLORS = ["#c62828", "#f9a825", "#6a1b9a", "#0b6bcb", "#1d7f3b"];

export function Curves({ live }) {
  const box = useRef(null), plot = useRef(null);
  const [win, setWin] = useState(1800);
  const [follow, setFollow] = useState(true);
  useEffect(() => {
    let dead = false;
    loadUPlot().then((uPlot) => {
      if (dead || !box.current) return;
      const opts = {
        width: box.current.clientWidth || 800, height: 360,
        scales: { x: { time: true }, kw: {}, pct: { range: [0, 100] } },
        series: [{}, ...SERIES.map((d, i) => ({ label: `${d.label} (${d.unit})`, stroke: COLORS[i], width: 1.5,
                                                scale: d.unit === "%" ? "pct" : "kw", spanGaps: false }))],
        axes: [{}, { scale: "kw", label: "kW" }, { scale: "pct", side: 1, label: "SOC %", grid: { show: false } }],
        cursor: { drag: { x: true, y: false } },
        hooks: { setSelect: [() => setFollow(false)] },
      };
      plot.current = new uPlot(opts, live.buffer ? live.buffer.data() : [[], ...SERIES.map(() => [])], box.current);
    });
    const onResize = () => plot.current && box.current && plot.current.setSize({ width: box.current.clientWidth, height: 360 });
    window.addEventListener("resize", onResize);
    return () => { dead = true; window.removeEventListener("resize", onResize); plot.current && plot.current.destroy(); plot.current = null; };
  }, []);
  useEffect(() => {
    const p = plot.current;
    if (!p || !live.buffer) return;
    const data = live.buffer.data();
    p.setData(data, false);
    const t = data[0];
    if (follow && t.length) {
      const max = t[t.length - 1], min = win ? max - win : t[0];
      p.setScale("x", { min, max });
    }
  }, [live.status, win, follow]);
  const n = live.buffer ? live.buffer.t.length : 0;
  return html`<h1>Live curves</h1>
    <div class="tabs">${WINDOWS.map(([label, s]) => html`<button class=${win === s && follow ? "on" : ""}
      onClick=${() => { setWin(s); setFollow(true); }}>${label}</button>`)}</div>
    <div class="panel"><div ref=${box} class="chart" data-points=${n}></div>
    <p class="muted">${n} points: the controller's last hours (every 5 s while no page was open) and one a second since. Drag across the chart to zoom; a window button returns to the latest.</p></div>`;
}
