/**
 * The web chat's one page, rendered on the server with Preact: the shell, the server's key
 * fingerprint and the chat island in its first state; web/static/chat.js hydrates it.
 */
import { renderToString } from "preact-render-to-string";
import { ChatApp, type ChatAppProps } from "./islands/chat_app.tsx";

/** The chat page as HTML text. */
export function chatPage(props: ChatAppProps): string {
  return "<!doctype html>\n" + renderToString(
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>CommuCat chat · {props.domain}</title>
        <link rel="icon" href="data:," />
        <link rel="stylesheet" href="/chat/static/chat.css" />
        <script type="module" src="/chat/static/chat.js" />
      </head>
      <body>
        <div data-island="chat" data-props={JSON.stringify(props)}>
          <ChatApp {...props} />
        </div>
      </body>
    </html>,
  );
}
