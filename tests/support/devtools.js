// Drives a page of a running headless Chromium over its DevTools protocol
// (Node 20: run with --experimental-websocket), as a person would: waits
// for things to show, clicks with the mouse, reads what the page says.
//
//   node --experimental-websocket devtools.js PORT URL STEP...
//
// PORT is Chromium's --remote-debugging-port, URL the page it was opened
// on (the page whose URL starts with it is driven). Steps, in order:
//   wait:EXPR    until the JavaScript expression EXPR is truthy (30 s at most)
//   click:SEL    a mouse click (press and release) at the middle of the
//                first element matching the CSS selector SEL
//   type:SEL=TEXT  focuses the first element matching SEL and types TEXT
//                into it (as keyboard input: the page hears `input` events)
//   print:EXPR   prints the value of EXPR as one JSON line
// Exits 0 after the last step; 1 with the reason on stderr otherwise.
"use strict";

const [port, url, ...steps] = process.argv.slice(2);
const sleep = ms => new Promise(r => setTimeout(r, ms));

async function pageSocket() {
  for (let i = 0; i < 300; i++) {
    try {
      const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
      const page = list.find(t => t.type === "page" && t.url.startsWith(url));
      if (page) return page.webSocketDebuggerUrl;
    } catch (_) { /* not listening yet */ }
    await sleep(100);
  }
  throw new Error(`no page at ${url} in Chromium on port ${port}`);
}

function session(ws) {
  let next = 1;
  const waiting = new Map();
  ws.onmessage = event => {
    const msg = JSON.parse(event.data);
    const done = waiting.get(msg.id);
    if (!done) return;
    waiting.delete(msg.id);
    if (msg.error) done.reject(new Error(JSON.stringify(msg.error)));
    else done.resolve(msg.result);
  };
  return (method, params = {}) => new Promise((resolve, reject) => {
    const id = next++;
    waiting.set(id, { resolve, reject });
    ws.send(JSON.stringify({ id, method, params }));
  });
}

async function main() {
  const ws = new WebSocket(await pageSocket());
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
  const send = session(ws);
  const evaluate = async expression => {
    const { result, exceptionDetails } = await send("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true });
    if (exceptionDetails) throw new Error(`${expression}: ${exceptionDetails.exception?.description ?? exceptionDetails.text}`);
    return result.value;
  };
  for (const step of steps) {
    const colon = step.indexOf(":");
    const [kind, arg] = [step.slice(0, colon), step.slice(colon + 1)];
    if (kind === "wait") {
      // An expression that throws (the page not built yet: an element
      // still missing) is "not yet", like one that is false.
      let ok = false;
      let last = "";
      for (let i = 0; i < 300 && !ok; i++) {
        try {
          ok = Boolean(await evaluate(arg));
        } catch (error) {
          ok = false;
          last = ` (last: ${error.message})`;
        }
        if (!ok) await sleep(100);
      }
      if (!ok) throw new Error(`never true: ${arg}${last}; the page says: ${await evaluate("document.body.innerText")}`);
    } else if (kind === "click") {
      const box = await evaluate(`(() => { const e = document.querySelector(${JSON.stringify(arg)});
        if (!e) return null; e.scrollIntoView(); const r = e.getBoundingClientRect();
        return { x: r.left + r.width / 2, y: r.top + r.height / 2 }; })()`);
      if (!box) throw new Error(`nothing to click: ${arg}`);
      for (const type of ["mouseMoved", "mousePressed", "mouseReleased"])
        await send("Input.dispatchMouseEvent", { type, x: box.x, y: box.y, button: "left", clickCount: 1 });
    } else if (kind === "type") {
      const eq = arg.indexOf("=");
      const [selector, text] = [arg.slice(0, eq), arg.slice(eq + 1)];
      const found = await evaluate(`(() => { const e = document.querySelector(${JSON.stringify(selector)});
        if (!e) return false; e.focus(); return document.activeElement === e; })()`);
      if (!found) throw new Error(`nothing to type into: ${selector}`);
      await send("Input.insertText", { text });
    } else if (kind === "print") {
      console.log(JSON.stringify(await evaluate(arg)));
    } else {
      throw new Error(`unknown step ${step}`);
    }
  }
  ws.close();
}

main().then(() => process.exit(0), error => {
  console.error(String(error && error.stack || error));
  process.exit(1);
});
