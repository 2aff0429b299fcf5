// In-page half of bench/ui/measure.py: installed with CDP
// Page.addScriptToEvaluateOnNewDocument, so it runs in every new document before the
// page's own scripts. measure.py prepends `const CFG = {...};` (marker, first, scroll).
//
// Every 10 ms (a timer: it runs only when the page's main thread is free, as a user
// would see it) it asks whether the text CFG.marker is visible. At the first check
// where it is, it stamps seenAt and then, in the next requestAnimationFrame callback
// (the start of the frame that paints that state), visibleAt: ms since navigation
// start (performance.now()), and visibleEpoch, the same in ms since the epoch.
// Not a requestAnimationFrame loop: asking for a frame every vsync made Chromium lay
// out and paint a page still being parsed at every frame, which slowed loading a
// 100,000-element page by a quarter or more.
//
// "Visible" = a Range over the marker's characters, in one text node, has a client rect
// inside the window's viewport AND hit-testing the middle of that rect lands on those
// very characters (so text clipped by a scroll container, or covered, does not count).
//
// Finding the text node: each check walks the document's text nodes backwards from its
// end (the marker is the log's last line), at most SCAN_NODES of them, plus the nodes
// found before; a log viewer that renders only what is in view has few nodes, a page
// that renders every line has the marker near its end. As a fallback for anything else,
// the whole document's text is searched now and then (every 2 s or ten times what the
// last search took). No MutationObserver: on a page that inserts 100,000 elements its
// records alone slowed loading by a quarter.
//
// With CFG.scroll == "end", once the HTML has been parsed (DOMContentLoaded) and while
// the marker is not visible, each check also scrolls the document and every scrollable
// element under a few points of the viewport to their bottom, as a user holding the End
// key would (more often than key repeat, ~30/s, so a page that needs it is not held up
// by the interval); scrollMoves counts the scrolls that moved something. (Not while
// parsing: each scroll makes the browser lay out the part parsed so far, which slowed a
// page of 100,000 elements that scrolls itself to its end by a tenth.)
//
// window.__uiBench.rafRoundTrips(n) and .goTo(where, text, timeoutMs) are called by
// measure.py after the marker was seen (responsiveness checks; those do run every
// frame). Until the marker was seen, searchMs is this script's time spent searching
// text (work the page would not do), checkMs its whole time in the checks and scrolls
// (that includes any layout they made the browser do before it would have).
(() => {
  if (window.top !== window || window.__uiBench) return;
  const CHECK_EVERY_MS = 10;
  const SCAN_NODES = 2000; // text nodes walked per check, from the end (or the start)
  const XS = [0.05, 0.35, 0.65]; // where to look for scrollers, fractions of innerWidth
  const B = (window.__uiBench = {
    seenAt: null,
    visibleAt: null,
    visibleEpoch: null,
    checks: 0,
    searchMs: 0,
    checkMs: 0,
    fullScans: 0,
    scrollMoves: 0,
  });
  const known = new Map([CFG.marker, CFG.first].map((n) => [n, new Set()]));

  // text nodes holding needle: those found before, and a walk of at most SCAN_NODES
  // from the document's end (fromEnd) or start
  function find(needle, fromEnd) {
    const set = known.get(needle);
    for (const n of set) if (!n.isConnected || !n.data.includes(needle)) set.delete(n);
    const root = document.body;
    if (!root) return set;
    const w = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    let n = fromEnd ? w.lastChild() : w.nextNode();
    for (let i = 0; n && i < SCAN_NODES; i++) {
      if (n.data.includes(needle)) set.add(n);
      n = fromEnd ? w.previousNode() : w.nextNode();
    }
    return set;
  }

  function fullScan(needle) {
    const root = document.body;
    if (!root || !root.textContent.includes(needle)) return;
    const w = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let n = w.nextNode(); n; n = w.nextNode()) if (n.data.includes(needle)) known.get(needle).add(n);
  }

  let nextFull = performance.now() + 2000;
  function search(needle, fromEnd) {
    const t = performance.now();
    let set = find(needle, fromEnd);
    if (set.size === 0 && t >= nextFull) {
      B.fullScans++;
      fullScan(needle);
      const took = performance.now() - t;
      nextFull = performance.now() + Math.max(2000, 10 * took);
      set = known.get(needle);
    }
    if (B.seenAt === null) B.searchMs += performance.now() - t;
    return set;
  }

  function hitIsOn(node, start, end, x, y) {
    const r = document.caretRangeFromPoint(x, y);
    return !!r && r.startContainer === node && r.startOffset >= start && r.startOffset <= end;
  }

  // Is text at node[idx..] visible (see above)?
  function occurrenceVisible(node, idx, len) {
    const range = document.createRange();
    range.setStart(node, idx);
    range.setEnd(node, idx + len);
    const w = window.innerWidth, h = window.innerHeight;
    for (const rect of range.getClientRects()) {
      if (rect.width <= 0 || rect.height <= 0) continue;
      const top = Math.max(rect.top, 0), bottom = Math.min(rect.bottom, h);
      const left = Math.max(rect.left, 0), right = Math.min(rect.right, w);
      if (bottom - top < 1 || right - left < 1) continue;
      if (hitIsOn(node, idx, idx + len, (left + right) / 2, (top + bottom) / 2)) return true;
    }
    return false;
  }

  function textVisible(needle, fromEnd) {
    for (const node of search(needle, fromEnd)) {
      const d = node.data;
      for (let i = d.indexOf(needle); i >= 0; i = d.indexOf(needle, i + 1)) {
        if (occurrenceVisible(node, i, needle.length)) return true;
      }
    }
    return false;
  }

  function scrollable(el) {
    if (el.scrollHeight <= el.clientHeight + 1) return false;
    const o = getComputedStyle(el).overflowY;
    return o === "auto" || o === "scroll" || o === "overlay";
  }

  // the document's scroller and every scrollable element under a few points of the viewport
  function scrollers() {
    const found = [];
    const root = document.scrollingElement || document.documentElement;
    if (root) found.push(root);
    const w = window.innerWidth, h = window.innerHeight;
    for (const fy of [0.2, 0.5, 0.8]) {
      for (const fx of XS) {
        for (let el = document.elementFromPoint(fx * w, fy * h); el && el !== root; el = el.parentElement) {
          if (!found.includes(el) && scrollable(el)) found.push(el);
        }
      }
    }
    return found;
  }

  function scrollAll(where) {
    let moved = false;
    for (const el of scrollers()) {
      const before = el.scrollTop;
      el.scrollTop = where === "top" ? 0 : el.scrollHeight;
      if (el.scrollTop !== before) moved = true;
    }
    return moved;
  }

  function check() {
    B.checks++;
    const t = performance.now();
    if (document.body !== null) {
      if (textVisible(CFG.marker, true)) {
        B.seenAt = performance.now();
        requestAnimationFrame(() => {
          B.visibleAt = performance.now();
          B.visibleEpoch = performance.timeOrigin + B.visibleAt;
        });
      } else if (CFG.scroll === "end" && document.readyState !== "loading") {
        if (scrollAll("end")) B.scrollMoves++;
      }
    }
    B.checkMs += performance.now() - t;
    if (B.seenAt === null) setTimeout(check, CHECK_EVERY_MS);
  }
  setTimeout(check, CHECK_EVERY_MS);

  const nextFrame = () => new Promise((resolve) => requestAnimationFrame(resolve));

  // n sequential requestAnimationFrame round trips: ms from asking to the callback
  B.rafRoundTrips = async (n) => {
    const out = [];
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      await nextFrame();
      out.push(performance.now() - t);
    }
    return out;
  };

  // scroll every scroller to the top or the end (again each frame, like a held key)
  // until `text` is visible; {ms, moves}, ms null after timeoutMs
  B.goTo = async (where, text, timeoutMs) => {
    const t = performance.now();
    let moves = 0;
    for (;;) {
      if (scrollAll(where)) moves++;
      await nextFrame();
      if (textVisible(text, where === "end")) return { ms: performance.now() - t, moves };
      if (performance.now() - t > timeoutMs) return { ms: null, moves };
    }
  };
})();
