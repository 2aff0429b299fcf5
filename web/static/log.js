// The step log viewer (see web/src/log.rs). A virtual scroller: a spacer as
// tall as every line, and a window of the rows around the viewport, drawn
// from chunks of lines fetched from the REST API and kept in a small LRU.
// Log text only reaches the page as text nodes (textContent), never as HTML.
"use strict";

(() => {
  const CHUNK = 1000; // lines per fetch
  const KEEP = 24; // chunks kept
  const OVERSCAN = 70; // rows drawn above and below the viewport
  const MAX_HEIGHT = 8e6; // px: past this the scroll range is scaled (browsers cap heights)
  const MAX_CHARS = 10000; // characters of a line drawn; the raw log has the rest
  const PARALLEL = 2; // chunk fetches at once

  // ---- ANSI: SGR colours and bold as classes; every other escape removed ----

  // The visible text of one line and its runs of style. Mirrors the server's
  // search (pipeline/logs.rs): CSI, OSC and two-character escapes and control
  // characters other than tab are dropped, and a carriage return that does
  // not end the line starts the text over.
  function parseLine(line) {
    const st = { fg: -1, bg: -1, bold: false };
    let text = "";
    let runs = []; // [start, end, class]
    let cr = false;
    const n = line.length;
    let i = 0;
    while (i < n) {
      const c = line.charCodeAt(i);
      if (cr) {
        cr = false;
        text = "";
        runs = [];
      }
      if (c === 0x1b) {
        const next = line.charCodeAt(i + 1);
        if (next === 0x5b) {
          let j = i + 2;
          while (j < n) {
            const d = line.charCodeAt(j);
            if (d >= 0x40 && d <= 0x7e) break;
            j++;
          }
          if (j < n && line[j] === "m") sgr(line.slice(i + 2, j), st);
          i = j + 1;
        } else if (next === 0x5d) {
          let j = i + 2;
          while (j < n) {
            const d = line.charCodeAt(j);
            if (d === 0x07) { j += 1; break; }
            if (d === 0x1b) { j += 2; break; }
            j++;
          }
          i = j;
        } else {
          i += 2;
        }
        continue;
      }
      if (c === 0x0d) { cr = true; i++; continue; }
      if ((c < 0x20 && c !== 0x09) || c === 0x7f) { i++; continue; }
      let j = i + 1;
      while (j < n) {
        const d = line.charCodeAt(j);
        if (d === 0x1b || (d < 0x20 && d !== 0x09) || d === 0x7f) break;
        j++;
      }
      const cls = styleClass(st);
      const start = text.length;
      text += line.slice(i, j);
      const last = runs[runs.length - 1];
      if (last && last[2] === cls && last[1] === start) last[1] = text.length;
      else runs.push([start, text.length, cls]);
      i = j;
    }
    return { text, runs };
  }

  function sgr(params, st) {
    const ps = params === "" ? ["0"] : params.split(";");
    for (let k = 0; k < ps.length; k++) {
      if (ps[k].includes(":")) continue; // colon sub-parameters: extended colours
      const p = ps[k] === "" ? 0 : Number(ps[k]);
      if (p === 0) { st.fg = -1; st.bg = -1; st.bold = false; }
      else if (p === 1) st.bold = true;
      else if (p === 22) st.bold = false;
      else if (p >= 30 && p <= 37) st.fg = p - 30;
      else if (p === 39) st.fg = -1;
      else if (p >= 40 && p <= 47) st.bg = p - 40;
      else if (p === 49) st.bg = -1;
      else if (p >= 90 && p <= 97) st.fg = p - 90 + 8;
      else if (p === 38 || p === 48) {
        // 256-colour and RGB: skip their arguments, draw nothing.
        if (ps[k + 1] === "5") k += 2;
        else if (ps[k + 1] === "2") k += 4;
      }
    }
  }

  function styleClass(st) {
    let c = "";
    if (st.fg >= 0) c += "fg" + st.fg;
    if (st.bg >= 0) c += (c ? " " : "") + "bg" + st.bg;
    if (st.bold) c += (c ? " " : "") + "b";
    return c;
  }

  // ASCII-only case folding, as the server's search does (same length).
  function fold(s) {
    return s.replace(/[A-Z]+/g, (m) => m.toLowerCase());
  }

  function matchesIn(text, q, ignoreCase) {
    const out = [];
    if (!q) return out;
    const hay = ignoreCase ? fold(text) : text;
    const needle = ignoreCase ? fold(q) : q;
    let at = hay.indexOf(needle);
    while (at >= 0) {
      out.push([at, at + needle.length]);
      at = hay.indexOf(needle, at + needle.length);
    }
    return out;
  }

  // Runs of style cut at match boundaries, as nodes.
  function lineNodes(parsed, marks, into, rawCut) {
    const { text, runs } = parsed;
    const limit = Math.min(text.length, MAX_CHARS);
    let m = 0;
    for (const [rs, re0, cls] of runs) {
      const re = Math.min(re0, limit);
      let pos = rs;
      while (pos < re) {
        while (m < marks.length && marks[m][1] <= pos) m++;
        let end = re;
        let marked = false;
        if (m < marks.length) {
          if (marks[m][0] <= pos) { marked = true; end = Math.min(re, marks[m][1]); }
          else end = Math.min(re, marks[m][0]);
        }
        const piece = text.slice(pos, end);
        let node;
        if (cls) {
          node = document.createElement("span");
          node.className = cls;
          node.textContent = piece;
        } else {
          node = document.createTextNode(piece);
        }
        if (marked) {
          const mark = document.createElement("mark");
          mark.append(node);
          node = mark;
        }
        into.append(node);
        pos = end;
      }
      if (re0 > limit) break;
    }
    if (text.length > MAX_CHARS || rawCut) {
      const cut = document.createElement("span");
      cut.className = "cut";
      cut.textContent = " … (line shortened here; the raw log has all of it)";
      into.append(cut);
    }
  }

  function two(n) { return (n < 10 ? "0" : "") + n; }
  function clock(ms) {
    const d = new Date(ms);
    const milli = String(d.getUTCMilliseconds()).padStart(3, "0");
    return two(d.getUTCHours()) + ":" + two(d.getUTCMinutes()) + ":" + two(d.getUTCSeconds()) + "." + milli;
  }

  // Settings kept in the browser (where storage is allowed).
  function remembered(key) {
    try { return localStorage.getItem(key); } catch (e) { return null; }
  }
  function remember(key, value) {
    try { localStorage.setItem(key, value); } catch (e) { /* private mode: not kept */ }
  }

  // ---- the viewer ----

  class LogViewer {
    constructor(box) {
      this.box = box;
      this.spacer = box.querySelector(".log-spacer");
      this.win = box.querySelector(".log-window");
      const d = box.dataset;
      this.api = "/api/v1/jobs/" + d.job + "/steps/" + d.position + "/log";
      this.attempt = d.attempt;
      this.total = Number(d.lines) || 0;
      this.live = d.live === "true";
      this.liveFrom = Math.floor(Math.max(this.total - 1, 0) / CHUNK) * CHUNK;
      this.endOffset = 0;
      this.lastOpen = false; // the last line has no newline yet
      this.chunks = new Map(); // chunk index -> {lines, times, streamed}; Map order = LRU
      this.loading = new Set();
      this.wanted = [];
      this.inflight = 0;
      this.drawn = { from: 0, to: 0 };
      this.dirty = true;
      this.stick = true; // follow the bottom
      this.highlight = null; // [from, to] 0-based
      this.search = { q: "", ignoreCase: true, hits: [], next: null, cur: -1, key: "" };
      this.showTimes = remembered("slipway.log.times") === "1";
      this.frame = 0;
      this.lh = 20;
      this.shownAt = null; // performance.now() when lines were first drawn
    }

    url(params) {
      return this.api + "?attempt=" + encodeURIComponent(this.attempt) + "&" + params;
    }

    async json(url) {
      const r = await fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } });
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }

    note(text) {
      document.getElementById("log-note").textContent = text;
    }

    start() {
      this.measure();
      this.fit();
      this.bindUi();
      this.box.classList.toggle("times", this.showTimes);
      const target = this.parseHash();
      if (target) {
        this.stick = false;
        this.highlight = target;
      }
      this.resize();
      if (target) this.jumpTo(target[0]);
      else this.scrollToEnd();
      if (this.live) this.follow(!target);
      this.schedule();
    }

    measure() {
      const probe = document.createElement("div");
      probe.className = "r";
      probe.textContent = "0";
      this.win.append(probe);
      this.lh = probe.getBoundingClientRect().height || 20;
      probe.remove();
    }

    // ---- geometry: line <-> scrollTop, scaled past MAX_HEIGHT ----

    // The log box takes the rest of the window below the tools.
    fit() {
      const top = this.box.getBoundingClientRect().top + window.scrollY;
      const h = Math.max(240, Math.floor(window.innerHeight - top - 16));
      this.box.style.height = h + "px";
    }

    resize() {
      const full = this.total * this.lh;
      this.height = Math.min(full, MAX_HEIGHT);
      this.scaled = full > MAX_HEIGHT;
      this.spacer.style.height = this.height + "px";
      const digits = String(Math.max(this.total, 1)).length;
      this.box.style.setProperty("--gutter", digits + 2 + "ch");
      this.empty();
    }

    rows() {
      return Math.max(1, Math.floor(this.box.clientHeight / this.lh));
    }

    topLine() {
      const top = this.box.scrollTop;
      if (!this.scaled) return top / this.lh;
      const range = this.height - this.box.clientHeight;
      const lines = Math.max(0, this.total - this.box.clientHeight / this.lh);
      return range > 0 ? (top / range) * lines : 0;
    }

    scrollToLine(line) {
      const max = Math.max(0, this.total - this.box.clientHeight / this.lh);
      const l = Math.max(0, Math.min(line, max));
      if (!this.scaled) this.box.scrollTop = l * this.lh;
      else {
        const range = this.height - this.box.clientHeight;
        this.box.scrollTop = max > 0 ? (l / max) * range : 0;
      }
      this.schedule();
    }

    scrollToEnd() {
      this.box.scrollTop = this.box.scrollHeight;
      this.stick = true;
      this.schedule();
    }

    atBottom() {
      return this.box.scrollTop + this.box.clientHeight >= this.box.scrollHeight - this.lh / 2;
    }

    // A line a third of the way down the viewport.
    jumpTo(line) {
      this.stick = false;
      this.scrollToLine(line - Math.floor(this.rows() / 3));
    }

    empty() {
      let e = this.box.querySelector(".empty");
      if (this.total > 0) { if (e) e.remove(); return; }
      if (!e) {
        e = document.createElement("p");
        e.className = "empty";
        this.box.append(e);
      }
      e.textContent = this.live ? "No output yet; waiting for the step…" : "This step wrote no output.";
    }

    // ---- drawing ----

    schedule() {
      if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.update(); });
    }

    update() {
      const top = this.topLine();
      const first = Math.max(0, Math.floor(top));
      const last = Math.min(this.total, first + this.rows() + 1);
      const from = Math.max(0, first - OVERSCAN);
      const to = Math.min(this.total, last + OVERSCAN);
      if (this.dirty || first < this.drawn.from || last > this.drawn.to
          || (this.drawn.to < to && this.drawn.to < this.total)) {
        this.draw(from, to);
      }
      // Rows wider than the box bring a scrollbar that hides the last one: stay at the end.
      if (this.stick && !this.atBottom()) {
        this.box.scrollTop = this.box.scrollHeight;
        return this.schedule();
      }
      this.win.style.transform = "translateY(" + (this.box.scrollTop + (this.drawn.from - top) * this.lh) + "px)";
      const want = [];
      for (let c = Math.floor(first / CHUNK); c * CHUNK < last; c++) want.push(c);
      for (let c = Math.floor(from / CHUNK); c * CHUNK < to; c++) if (!want.includes(c)) want.push(c);
      this.wanted = want;
      this.pump();
    }

    line(i) {
      const chunk = this.chunks.get(Math.floor(i / CHUNK));
      if (!chunk) return null;
      const k = i % CHUNK;
      return k < chunk.lines.length ? { text: chunk.lines[k], time: chunk.times[k] } : null;
    }

    draw(from, to) {
      this.dirty = false;
      this.drawn = { from, to };
      for (let c = Math.floor(from / CHUNK); c * CHUNK < to; c++) {
        const chunk = this.chunks.get(c);
        if (chunk) { this.chunks.delete(c); this.chunks.set(c, chunk); }
      }
      const hl = this.highlight;
      const s = this.search;
      const cur = s.cur >= 0 ? s.hits[s.cur] : -1;
      const frag = document.createDocumentFragment();
      for (let i = from; i < to; i++) {
        const l = this.line(i);
        if (l && this.shownAt === null) {
          this.shownAt = performance.now();
          document.getElementById("log-tail")?.remove();
        }
        const row = document.createElement("div");
        let cls = "r";
        if (hl && i >= hl[0] && i <= hl[1]) cls += " hl";
        if (i === cur) cls += " cur";
        if (!l) cls += " wait";
        row.className = cls;
        const n = document.createElement("a");
        n.className = "n";
        n.href = "#L" + (i + 1);
        n.tabIndex = -1;
        n.dataset.line = String(i);
        n.textContent = String(i + 1);
        row.append(n);
        if (this.showTimes) {
          const t = document.createElement("span");
          t.className = "t";
          if (l && l.time) {
            t.textContent = clock(l.time);
            t.title = new Date(l.time).toISOString();
          }
          row.append(t);
        }
        const x = document.createElement("span");
        x.className = "x";
        if (l) {
          const raw = l.text.length > 4 * MAX_CHARS ? l.text.slice(0, 4 * MAX_CHARS) : l.text;
          const parsed = parseLine(raw);
          const marks = s.q ? matchesIn(parsed.text, s.q, s.ignoreCase) : [];
          lineNodes(parsed, marks, x, raw.length < l.text.length);
        }
        row.append(x);
        frag.append(row);
      }
      this.win.replaceChildren(frag);
    }

    // ---- fetching chunks ----

    pump() {
      while (this.inflight < PARALLEL) {
        // While following, the tail belongs to the stream.
        const c = this.wanted.find((k) => !this.chunks.has(k) && !this.loading.has(k)
          && !(this.live && k * CHUNK >= this.liveFrom));
        if (c === undefined) return;
        this.load(c, false);
      }
    }

    // Lines from..to, in as many requests as the server's size limit needs.
    async fetchLines(from, to) {
      const lines = [];
      const times = [];
      let r = null;
      while (from < to) {
        r = await this.json(this.url("format=json&from_line=" + from + "&to_line=" + to));
        if (r.to_line <= from) break;
        for (let k = 0; k < r.lines.length; k++) { lines.push(r.lines[k]); times.push(r.times[k]); }
        from = r.to_line;
        if (r.to_line >= r.total_lines) break;
      }
      return { lines, times, last: r };
    }

    async load(c, replace) {
      this.loading.add(c);
      this.inflight++;
      try {
        const end = this.live ? (c + 1) * CHUNK : Math.min((c + 1) * CHUNK, this.total);
        const got = await this.fetchLines(c * CHUNK, end);
        if (!replace || this.chunks.has(c)) {
          this.chunks.set(c, { lines: got.lines, times: got.times, streamed: false });
          this.evict();
        }
        this.dirty = true;
      } catch (e) {
        this.note("Could not read the log (" + e.message + "); retrying.");
        setTimeout(() => this.schedule(), 2000);
        this.loading.delete(c);
        this.inflight--;
        return;
      }
      this.loading.delete(c);
      this.inflight--;
      this.schedule();
    }

    evict() {
      if (this.chunks.size <= KEEP) return;
      const lo = Math.floor(this.drawn.from / CHUNK);
      const hi = Math.floor(Math.max(this.drawn.to - 1, 0) / CHUNK);
      for (const c of this.chunks.keys()) {
        if (this.chunks.size <= KEEP) break;
        if ((this.live && c * CHUNK >= this.liveFrom) || (c >= lo && c <= hi)) continue;
        this.chunks.delete(c);
      }
    }

    // ---- following a running step ----

    // The tail chunk first (its end offset is where the stream starts), then
    // the stream; lines it brings are appended with the time they arrived.
    async follow(stickToEnd) {
      const c = Math.floor(Math.max(this.total - 1, 0) / CHUNK);
      this.liveFrom = c * CHUNK;
      let got;
      try {
        got = await this.fetchLines(c * CHUNK, (c + 1) * CHUNK);
      } catch (e) {
        this.note("Could not read the log (" + e.message + "); retrying.");
        setTimeout(() => this.follow(stickToEnd), 2000);
        return;
      }
      this.chunks.set(c, { lines: got.lines, times: got.times, streamed: false });
      const r = got.last;
      this.total = r && r.finished ? Math.max(r.total_lines, c * CHUNK + got.lines.length) : c * CHUNK + got.lines.length;
      this.endOffset = r ? r.end_offset : 0;
      // A last line without its newline continues with what the stream brings.
      this.lastOpen = !!(r && r.to_line === r.total_lines && r.last_line_partial);
      if (r && r.finished) this.live = false;
      this.dirty = true;
      this.resize();
      if (stickToEnd && this.stick) this.scrollToEnd();
      this.schedule();
      if (this.live) this.stream();
      else this.ended(r ? r.status : "");
    }

    stream() {
      const es = new EventSource(this.url("offset=" + this.endOffset).replace("/log?", "/log/stream?"));
      this.es = es;
      es.addEventListener("log", (ev) => {
        const data = JSON.parse(ev.data);
        if (data.offset !== this.endOffset) {
          // Out of step (should not happen): start again from the tail.
          es.close();
          this.follow(this.stick);
          return;
        }
        this.append(data.text);
        this.endOffset = Number(ev.lastEventId) || data.offset;
        this.note("Following the log live.");
      });
      es.addEventListener("end", (ev) => {
        es.close();
        const data = JSON.parse(ev.data);
        this.ended(data.status);
      });
      es.onerror = () => {
        if (es.readyState === EventSource.CLOSED) this.note("Live updates stopped; reload the page to go on.");
        else this.note("Connection lost; reconnecting…");
      };
    }

    append(text) {
      if (!text) return;
      const now = Date.now();
      const parts = text.split("\n");
      for (let k = 0; k < parts.length; k++) {
        const p = parts[k];
        if (k === 0 && this.lastOpen) {
          const i = this.total - 1;
          const chunk = this.chunks.get(Math.floor(i / CHUNK));
          if (chunk) chunk.lines[i % CHUNK] += p;
        } else if (k === parts.length - 1 && p === "") {
          break;
        } else {
          const c = Math.floor(this.total / CHUNK);
          let chunk = this.chunks.get(c);
          if (!chunk) {
            chunk = { lines: [], times: [], streamed: true };
            this.chunks.set(c, chunk);
          }
          chunk.lines.push(p);
          chunk.times.push(now);
          chunk.streamed = true;
          this.total++;
        }
      }
      this.lastOpen = parts[parts.length - 1] !== "";
      const follow = this.stick;
      this.resize();
      if (this.total - 1 < this.drawn.to + OVERSCAN) this.dirty = true;
      if (follow) this.scrollToEnd();
      this.evict();
      this.schedule();
    }

    ended(status) {
      this.live = false;
      if (this.es) this.es.close();
      if (status) {
        const badge = document.getElementById("log-status");
        badge.className = "status status-" + status;
        badge.querySelector(".text").textContent = status;
        this.box.dataset.status = status;
      }
      this.note("The step has finished" + (status ? " (" + status + ")" : "") + ": " + this.total + " lines.");
      this.empty();
      // Streamed lines carry the browser's clock: read them again for the server's times.
      for (const [c, chunk] of this.chunks) if (chunk.streamed) this.load(c, true);
    }

    // ---- links to lines: #L12, #L10-L20 ----

    parseHash() {
      const m = /^#L(\d+)(?:-L?(\d+))?$/.exec(location.hash);
      if (!m) return null;
      const a = Number(m[1]) - 1;
      const b = m[2] ? Number(m[2]) - 1 : a;
      return [Math.max(0, Math.min(a, b)), Math.max(0, Math.max(a, b))];
    }

    clickLine(ev) {
      const a = ev.target.closest("a.n");
      if (!a) return;
      ev.preventDefault();
      const line = Number(a.dataset.line);
      let range = [line, line];
      if (ev.shiftKey && this.highlight) {
        const anchor = this.highlight[0];
        range = [Math.min(anchor, line), Math.max(anchor, line)];
      }
      this.highlight = range;
      const hash = range[0] === range[1] ? "#L" + (range[0] + 1) : "#L" + (range[0] + 1) + "-L" + (range[1] + 1);
      history.replaceState(null, "", hash);
      this.dirty = true;
      this.schedule();
    }

    // ---- search (on the server) ----

    async find(step) {
      const input = document.getElementById("log-q");
      const q = input.value;
      const ignoreCase = !document.getElementById("log-case").checked;
      const s = this.search;
      const key = (ignoreCase ? "i:" : "c:") + q;
      if (!q) {
        Object.assign(s, { q: "", hits: [], next: null, cur: -1, key: "" });
        this.hits("");
        this.dirty = true;
        this.schedule();
        return;
      }
      if (key !== s.key) {
        Object.assign(s, { q, ignoreCase, hits: [], next: null, cur: -1, key });
        this.hits("Searching…");
        try {
          const r = await this.json(this.url("q=" + encodeURIComponent(q) + "&ignore_case=" + (ignoreCase ? 1 : 0) + "&limit=1000").replace("/log?", "/log/search?"));
          if (s.key !== key) return;
          s.hits = r.lines;
          s.next = r.next_line;
        } catch (e) {
          this.hits("Search failed (" + e.message + ").");
          return;
        }
        if (!s.hits.length) {
          this.hits("No matches.");
          this.dirty = true;
          this.schedule();
          return;
        }
        // The first match from the top of the view on.
        const top = Math.floor(this.topLine());
        const at = s.hits.findIndex((l) => l >= top);
        s.cur = at >= 0 ? at : 0;
      } else if (s.hits.length) {
        let cur = s.cur + step;
        if (cur >= s.hits.length && s.next !== null) {
          try {
            const r = await this.json(this.url("q=" + encodeURIComponent(q) + "&ignore_case=" + (ignoreCase ? 1 : 0) + "&limit=1000&from_line=" + s.next).replace("/log?", "/log/search?"));
            if (s.key !== key) return;
            for (const l of r.lines) s.hits.push(l);
            s.next = r.next_line;
          } catch (e) {
            this.hits("Search failed (" + e.message + ").");
            return;
          }
        }
        if (cur >= s.hits.length) cur = 0;
        if (cur < 0) cur = s.hits.length - 1;
        s.cur = cur;
      } else {
        return;
      }
      const more = s.next !== null ? "+" : "";
      this.hits((s.cur + 1) + " of " + s.hits.length + more + " lines");
      this.jumpTo(s.hits[s.cur]);
      this.dirty = true;
      this.schedule();
    }

    hits(text) {
      document.getElementById("log-hits").textContent = text;
    }

    // ---- keyboard and controls ----

    key(ev) {
      if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
      const page = Math.max(1, this.rows() - 1);
      const top = this.topLine();
      const moves = {
        PageDown: () => this.scrollToLine(top + page),
        PageUp: () => this.scrollToLine(top - page),
        ArrowDown: () => this.scrollToLine(top + 1),
        ArrowUp: () => this.scrollToLine(top - 1),
        Home: () => this.scrollToLine(0),
        End: () => this.scrollToEnd(),
        " ": () => this.scrollToLine(top + (ev.shiftKey ? -page : page)),
      };
      const move = moves[ev.key];
      if (move) {
        ev.preventDefault();
        if (ev.key !== "End") this.stick = false;
        move();
      } else if (ev.key === "/") {
        ev.preventDefault();
        document.getElementById("log-q").focus();
      }
    }

    bindUi() {
      this.box.addEventListener("scroll", () => {
        this.stick = this.atBottom();
        this.schedule();
      }, { passive: true });
      this.box.addEventListener("keydown", (ev) => this.key(ev));
      this.win.addEventListener("click", (ev) => this.clickLine(ev));
      window.addEventListener("resize", () => { this.fit(); this.resize(); this.dirty = true; this.schedule(); });
      window.addEventListener("hashchange", () => {
        const t = this.parseHash();
        if (!t) return;
        this.highlight = t;
        this.jumpTo(t[0]);
        this.dirty = true;
      });
      const form = document.getElementById("log-search");
      form.addEventListener("submit", (ev) => { ev.preventDefault(); this.find(1); });
      document.getElementById("log-q").addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" && ev.shiftKey) { ev.preventDefault(); this.find(-1); }
        else if (ev.key === "Escape") this.box.focus();
      });
      document.getElementById("log-next").addEventListener("click", () => this.find(1));
      document.getElementById("log-prev").addEventListener("click", () => this.find(-1));
      document.getElementById("log-case").addEventListener("change", () => { if (this.search.q) this.find(0); });
      const times = document.getElementById("log-times");
      times.checked = this.showTimes;
      times.addEventListener("change", () => {
        this.showTimes = times.checked;
        remember("slipway.log.times", this.showTimes ? "1" : "0");
        this.box.classList.toggle("times", this.showTimes);
        this.dirty = true;
        this.schedule();
      });
      document.getElementById("log-end").addEventListener("click", () => { this.scrollToEnd(); this.box.focus(); });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const box = document.getElementById("log");
    if (box && document.body.dataset.page === "log") {
      const viewer = new LogViewer(box);
      window.slipwayLog = viewer; // for tests and the curious
      viewer.start();
    }
  });
})();
