// uPlot, loaded when a chart is first shown (the overview does not pay for it), with its stylesheet.
let uPlotModule = null;

export async function loadUPlot() {
  if (!uPlotModule) {
    const css = document.createElement("link");
    css.rel = "stylesheet"; css.href = "/static/vendor/uplot.css";
    document.head.appendChild(css);
    uPlotModule = (await import("../vendor/uplot.mjs")).default;
  }
  return uPlotModule;
}
