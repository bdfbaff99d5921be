/// <reference lib="dom" />
/** Browser entry of the web chat island: hydrates the server-rendered chat with its props. */
import { hydrate } from "preact";
import { ChatApp, type ChatAppProps } from "../chat_app.tsx";

for (const el of document.querySelectorAll<HTMLElement>("[data-island=chat]")) {
  const props = JSON.parse(el.dataset.props ?? "{}") as ChatAppProps;
  hydrate(<ChatApp {...props} />, el);
}
