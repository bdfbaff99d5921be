/** Form building blocks: every control has a label, every state-changing form a CSRF token. */
import type { ComponentChildren } from "preact";

/** A POST form carrying the session's CSRF token. */
export function PostForm(
  props: { action: string; csrf: string; class?: string; children: ComponentChildren },
) {
  return (
    <form method="post" action={props.action} class={props.class}>
      <input type="hidden" name="_csrf" value={props.csrf} />
      {props.children}
    </form>
  );
}

type FieldProps = {
  name: string;
  label: string;
  value?: string | null;
  type?: "text" | "password" | "search" | "url" | "datetime-local";
  placeholder?: string;
  required?: boolean;
  hint?: string;
  error?: string | null;
  autocomplete?: string;
};

/** The input's attributes; typed loosely because preact narrows input attributes per type. */
function inputAttributes(props: FieldProps, id: string): Record<string, unknown> {
  return {
    id,
    name: props.name,
    type: props.type ?? "text",
    value: props.value ?? "",
    placeholder: props.placeholder,
    required: props.required,
    autocomplete: props.autocomplete,
    "aria-invalid": props.error ? "true" : undefined,
    "aria-describedby": props.error || props.hint ? `${id}-note` : undefined,
  };
}

/** A labelled input. */
export function Field(props: FieldProps) {
  const id = `f-${props.name}`;
  return (
    <div class={props.error ? "field invalid" : "field"}>
      <label for={id}>{props.label}</label>
      <input {...inputAttributes(props, id)} />
      {(props.error || props.hint) && (
        <small id={`${id}-note`} class={props.error ? "field-error" : "field-hint"}>
          {props.error ?? props.hint}
        </small>
      )}
    </div>
  );
}

/** A labelled select. */
export function Select(
  props: {
    name: string;
    label: string;
    value?: string | null;
    options: [string, string][];
    error?: string | null;
  },
) {
  const id = `f-${props.name}`;
  return (
    <div class={props.error ? "field invalid" : "field"}>
      <label for={id}>{props.label}</label>
      <select
        id={id}
        name={props.name}
        aria-invalid={props.error ? "true" : undefined}
        aria-describedby={props.error ? `${id}-note` : undefined}
      >
        {props.options.map(([value, text]) => (
          <option value={value} selected={value === (props.value ?? "")}>{text}</option>
        ))}
      </select>
      {props.error && <small id={`${id}-note`} class="field-error">{props.error}</small>}
    </div>
  );
}

/** A GET filter bar above a list. */
export function FilterForm(
  props: { action: string; label: string; children: ComponentChildren; clear?: boolean },
) {
  return (
    <form method="get" action={props.action} class="filters" role="search" aria-label={props.label}>
      {props.children}
      <div class="filter-actions">
        <button type="submit">Apply</button>
        {props.clear && <a href={props.action}>Clear</a>}
      </div>
    </form>
  );
}
