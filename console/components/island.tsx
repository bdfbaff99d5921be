/** Marks a server-rendered island so its browser bundle can hydrate it with the same props. */
import type { ComponentChildren } from "preact";

export function Island(props: { name: string; data: unknown; children: ComponentChildren }) {
  return (
    <div data-island={props.name} data-props={JSON.stringify(props.data)}>
      {props.children}
    </div>
  );
}
