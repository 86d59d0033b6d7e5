// The logged-in user's own account: change the password.
import { html, useState, ErrorBox } from "../ui.js";
import { post } from "../api.js";

export function Account({ session }) {
  const [msg, setMsg] = useState(null);
  const submit = async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    if (f.get("new_password") !== f.get("new_password2")) return setMsg({ error: new Error("the two new passwords differ") });
    try {
      await post("/api/password", { old_password: f.get("old_password"), new_password: f.get("new_password") });
      setMsg({ ok: "password changed" }); ev.target.reset();
    } catch (e) { setMsg({ error: e }); }
  };
  return html`<h1>Account: ${session.user} (${session.role})</h1>
    <section class="panel"><h2>Change password</h2>
      <form class="inline" onSubmit=${submit} id="password-form">
        <label>Current<input name="old_password" type="password" autocomplete="current-password" required /></label>
        <label>New<input name="new_password" type="password" autocomplete="new-password" required /></label>
        <label>New again<input name="new_password2" type="password" autocomplete="new-password" required /></label>
        <button type="submit">Change</button></form>
      ${msg && msg.ok ? html`<p class="notice" role="status">${msg.ok}</p>` : null}<${ErrorBox} error=${msg && msg.error} />
    </section>`;
}
