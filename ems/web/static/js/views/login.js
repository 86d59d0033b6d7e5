// First run (create the first admin) and login.
import { html, useState, ErrorBox } from "../ui.js";
import { post } from "../api.js";

function Form({ title, intro, button, onSubmit, confirm }) {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    if (confirm && f.get("password") !== f.get("password2")) return setError(new Error("the two passwords differ"));
    setBusy(true);
    try { await onSubmit(f.get("username"), f.get("password")); setError(null); }
    catch (e) { setError(e); }
    finally { setBusy(false); }
  };
  return html`<main class="login panel">
    <h1>${title}</h1>${intro ? html`<p class="muted">${intro}</p>` : null}
    <form onSubmit=${submit} id="login-form">
      <label>User name<input name="username" autocomplete="username" required maxlength="32" /></label>
      <label>Password<input name="password" type="password" autocomplete=${confirm ? "new-password" : "current-password"} required /></label>
      ${confirm ? html`<label>Password again<input name="password2" type="password" autocomplete="new-password" required /></label>` : null}
      <button type="submit" disabled=${busy}>${button}</button>
      <${ErrorBox} error=${error} />
    </form></main>`;
}

export function Setup({ onDone }) {
  return html`<${Form} title="First run: create the administrator"
    intro="This EMS has no users yet. The first account is the admin; it creates the others."
    button="Create admin" confirm=${true}
    onSubmit=${async (u, p) => { await post("/api/setup", { username: u, password: p }); onDone(); }} />`;
}

export function Login({ onDone }) {
  return html`<${Form} title="Log in" button="Log in"
    onSubmit=${async (u, p) => { await post("/api/login", { username: u, password: p, cookie: true }); onDone(); }} />`;
}
