// Injected into a copy of memleak.html by tests/test_report_layout.py: after the page is laid out
// (every <details> opened), writes what overlaps, what is clipped and how wide the page is, as JSON in <pre id="layout-result">.
window.addEventListener("load", () => {
  for (const d of document.querySelectorAll("details")) d.open = true;  // everything a reader can open, shown
  const out = { scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth, texts: 0, overlaps: [], clipped: [] };
  const boxes = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent.trim();
    if (!text) continue;
    const closed = node.parentElement.closest("details:not([open])");
    if (closed && !node.parentElement.closest("summary")) continue;  // not shown until it is opened
    const range = document.createRange();
    range.selectNodeContents(node);
    for (const r of range.getClientRects()) {
      if (r.width < 1 || r.height < 1) continue;
      boxes.push({ node, text: text.slice(0, 60), l: r.left, t: r.top + scrollY, r: r.right, b: r.bottom + scrollY });
    }
  }
  out.texts = boxes.length;
  boxes.sort((a, b) => a.t - b.t);
  for (let i = 0; i < boxes.length; i++) {
    const a = boxes[i];
    for (let j = i + 1; j < boxes.length && boxes[j].t < a.b; j++) {
      const b = boxes[j];
      if (a.node === b.node) continue;
      const w = Math.min(a.r, b.r) - Math.max(a.l, b.l);
      const h = Math.min(a.b, b.b) - Math.max(a.t, b.t);
      if (w > 2 && h > 2) out.overlaps.push([a.text, b.text, Math.round(a.t)]);
    }
  }
  for (const el of document.body.querySelectorAll("*")) {
    if (el.closest("svg")) continue;
    const style = getComputedStyle(el);
    const hides = ["hidden", "clip"];
    if ((hides.includes(style.overflowX) && el.scrollWidth > el.clientWidth + 1) ||
        (hides.includes(style.overflowY) && el.scrollHeight > el.clientHeight + 1)) {
      out.clipped.push(el.tagName.toLowerCase() + (el.className ? "." + el.className : "") + ": " + el.textContent.trim().slice(0, 60));
    }
  }
  const pre = document.createElement("pre");
  pre.id = "layout-result";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
