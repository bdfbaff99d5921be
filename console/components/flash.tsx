/** One-shot messages after an action: role=status for success, role=alert for errors. */
import type { Flash } from "../middleware/session.ts";

export function FlashMessages(props: { flash: Flash[] }) {
  if (props.flash.length === 0) return null;
  return (
    <div class="flashes">
      {props.flash.map((f) => (
        <p class={`flash ${f.kind}`} role={f.kind === "error" ? "alert" : "status"}>{f.text}</p>
      ))}
    </div>
  );
}

/** An inline error box for a page (bad filter, failed read). */
export function ErrorBox(props: { title: string; detail?: string | null; hint?: string | null }) {
  return (
    <div class="flash error" role="alert">
      <strong>{props.title}</strong>
      {props.detail && <span>{" " + props.detail}</span>}
      {props.hint && <p class="hint">{props.hint}</p>}
    </div>
  );
}
