// Shared by the tests: a page that uses the SDK the way an app would.
import { cleanup, render } from "@testing-library/react";
import React from "react";
import { AuthAgentProvider, SignInWithAuthAgent, useAuthAgent } from "../dist/index.js";

const h = React.createElement;

/** A component of the app: shows the state and offers sign-in and sign-out. */
function Page({ seen }) {
  const auth = useAuthAgent();
  seen.push(auth);
  return h(
    "main",
    null,
    h("p", { "data-testid": "user" }, auth.user?.sub ?? "signed out"),
    h("p", { "data-testid": "loading" }, String(auth.isLoading)),
    h("p", { role: "alert" }, auth.error ? auth.error.error : ""),
    h(SignInWithAuthAgent, null),
    h("button", { type: "button", onClick: () => void auth.signOut() }, "Sign out"),
  );
}

/**
 * Renders the provider around `Page` (after unmounting whatever an earlier
 * step rendered, as a full page load would). `seen` holds every value
 * `useAuthAgent()` returned, oldest first; `navigated` every URL `signIn`
 * sent the browser to. `strict` renders in `<React.StrictMode>`, which runs
 * effects twice.
 */
export function mount(props, children, { strict = false } = {}) {
  cleanup();
  const seen = [];
  const navigated = [];
  const app = h(AuthAgentProvider, { navigate: (url) => navigated.push(url), ...props }, children ?? h(Page, { seen }));
  const view = render(strict ? h(React.StrictMode, null, app) : app);
  return { view, seen, navigated, latest: () => seen[seen.length - 1] };
}

/** Puts the page at `href` (same origin as the jsdom page), as a redirect from the issuer would. */
export function goTo(href) {
  window.history.replaceState(null, "", href);
}

/** Every value in sessionStorage, to check what a script on the page could read. */
export function sessionStorageValues() {
  const values = [];
  for (let i = 0; i < window.sessionStorage.length; i++) {
    values.push(window.sessionStorage.getItem(window.sessionStorage.key(i)));
  }
  return values;
}

/**
 * A `fetch` for the provider's `fetch` prop that plays an issuer answering
 * only its discovery document; every other request fails as an unreachable
 * host would. `requests` lists every URL asked for. Enough for `signIn` to
 * build an authorization URL without a server.
 */
export function discoveryOnly(issuer) {
  const requests = [];
  const fetch = async (url) => {
    requests.push(String(url));
    if (String(url) === `${issuer}/.well-known/openid-configuration`) {
      return Response.json({
        issuer,
        authorization_endpoint: `${issuer}/oauth2/authorize`,
        token_endpoint: `${issuer}/oauth2/token`,
        jwks_uri: `${issuer}/.well-known/jwks.json`,
      });
    }
    throw new TypeError("fetch failed");
  };
  return { fetch, requests };
}
