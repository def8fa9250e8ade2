// Loaded with `node --import ./test/setup.mjs --test …`, before any test file:
// React Testing Library binds `screen` to `document.body` when it is first
// imported, so the DOM must exist by then. The page sits on the SPA's origin
// (http://localhost:3000), where the redirect URI lives.
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><head></head><body></body></html>", {
  url: "http://localhost:3000/",
  pretendToBeVisual: true,
});

// Copy the window's globals that Node lacks (document, navigator, HTMLElement,
// sessionStorage, history, …). Node's own fetch, URL, crypto, AbortSignal,
// Headers and events stay: the SDK talks to the real issuer through them.
globalThis.window = dom.window;
for (const name of Object.getOwnPropertyNames(dom.window)) {
  if (!(name in globalThis)) {
    Object.defineProperty(globalThis, name, { configurable: true, get: () => dom.window[name] });
  }
}

globalThis.IS_REACT_ACT_ENVIRONMENT = true;
