// The app of the server-rendering test, shared by the server side (a Node
// without a window) and the browser side (jsdom), as a framework shares a
// page's components between the two.
import React from "react";
import { AuthAgentProvider, SignInWithAuthAgent, useAuthAgent } from "../dist/index.js";

const h = React.createElement;

function Status() {
  const { user, isLoading, error } = useAuthAgent();
  return h(
    "main",
    null,
    h("p", { "data-testid": "user" }, user?.sub ?? "signed out"),
    h("p", { "data-testid": "loading" }, String(isLoading)),
    h("p", { role: "alert" }, error ? error.error : ""),
    h(SignInWithAuthAgent, { className: "signin" }),
  );
}

/** The provider, keeping its tokens in sessionStorage so a kept session is there to restore, around `Status`. */
export function App() {
  return h(
    AuthAgentProvider,
    { issuer: "http://127.0.0.1:9", clientId: "demo-site", redirectUri: "http://localhost:3000/callback", tokenStorage: "sessionStorage" },
    h(Status),
  );
}
