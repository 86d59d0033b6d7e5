// Shared view helpers: preact + htm, number formats, and the error box.
import { h, render } from "../vendor/preact.mjs";
import { useState, useEffect, useRef, useCallback, useErrorBoundary } from "../vendor/hooks.mjs";
import htm from "../vendor/htm.mjs";

export const html = htm.bind(h);
export { h, render, useState, useEffect, useRef, useCallback };

// kW with one decimal; "—" for what was not measured (null), never a made-up zero
export const kw = (w) => (w === null || w === undefined ? "—" : (w / 1000).toFixed(1));
export const num = (x, d = 1) => (x === null || x === undefined ? "—" : Number(x).toFixed(d));

// A view that fails shows what failed, never a blank page; "try again" renders it anew.
export function Guard({ children }) {
  const [error, reset] = useErrorBoundary((e) => console.warn("view failed:", e));
  if (error) {
    return html`<p class="error" role="alert">This page failed: ${error.message || String(error)}.
      <button class="secondary" onClick=${reset}>Try again</button></p>`;
  }
  return children;
}

export function ErrorBox({ error }) {
  if (!error) return null;
  return html`<p class="error" role="alert">${error.message || String(error)}${
    error.problems && error.problems.length ? html`<ul>${error.problems.map((p) => html`<li>${p}</li>`)}</ul>` : null}</p>`;
}

// Poll a GET path every `every_ms` while the view is shown: [data, error]
export function usePoll(fetcher, every_ms, deps = []) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let stop = false, timer = null;
    const run = async () => {
      try { const d = await fetcher(); if (!stop) { setData(d); setError(null); } }
      catch (e) { if (!stop) setError(e); }
      if (!stop && every_ms) timer = setTimeout(run, every_ms);
    };
    run();
    return () => { stop = true; clearTimeout(timer); };
  }, deps);
  return [data, error];
}
