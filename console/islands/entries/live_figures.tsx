/// <reference lib="dom" />
/** Browser entry for the live figures island: hydrates every server-rendered instance. */
import { hydrate } from "preact";
import { LiveFigures, type LiveFiguresProps } from "../live_figures.tsx";

for (const el of document.querySelectorAll<HTMLElement>("[data-island=live_figures]")) {
  const props = JSON.parse(el.dataset.props ?? "{}") as LiveFiguresProps;
  hydrate(<LiveFigures {...props} />, el);
}
