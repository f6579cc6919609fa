// The report's only script: draws the trees from the JSON in #mothertree-data, and answers pointing,
// clicking, searching and collapsing. Written for this page; it loads nothing.
(function () {
  "use strict";

  const data = JSON.parse(document.getElementById("mothertree-data").textContent);
  const NODE_H = 24, LEVEL = 70, GAP = 14, PAD = 12, TOP = 28, BOTTOM = 22, TOGGLE_ROOM = 18;
  const FONT = '12px system-ui, -apple-system, "Segoe UI", sans-serif';
  const TRUTH_COLOUR = { right: "#1a7f37", reversed: "#8250df", misplaced: "#cf222e" };
  const TRUTH_MARK = { right: "✓", reversed: "⇅", misplaced: "✗" };
  const TRUTH_TEXT = {
    right: "right: this parent → child edge is true",
    reversed: "reversed: the two are parent and child, but the true edge points the other way",
    misplaced: "misplaced: the true tree does not join these two models",
  };
  // Dash patterns for relations, in the order relations are first met; an edge without one is solid.
  const DASHES = ["", "7 4", "2 3", "10 3 2 3", "1 5"];
  const KNOWN_EDGE_KEYS = ["parent", "child", "distance", "confidence", "direction_probability", "direction",
    "known", "relation", "truth"];

  const model = new Map(data.models.map((m) => [m.id, m]));
  const edgeTo = new Map();
  const kids = new Map();
  // The tree is drawn from one edge per child: a merge (several parents) hangs from its heaviest parent.
  for (const e of data.edges) {
    const held = edgeTo.get(e.child);
    if (held && (held.weight || 0) >= (e.weight || 0)) continue;
    if (held) kids.set(held.parent, kids.get(held.parent).filter((c) => c !== e.child));
    edgeTo.set(e.child, e);
    if (!kids.has(e.parent)) kids.set(e.parent, []);
    kids.get(e.parent).push(e.child);
  }
  for (const list of kids.values()) list.sort();
  const treeOf = new Map();
  data.trees.forEach((t, k) => t.models.forEach((id) => treeOf.set(id, k)));
  const relations = [...new Set(data.edges.map((e) => e.relation).filter((r) => r != null))];

  const state = { collapsed: new Set(), scale: 1, query: "", selected: null,
    colourBy: data.truth ? "truth" : "confidence" };

  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const fmt = (x) => (typeof x === "number" ? (Math.abs(x) >= 0.001 || x === 0 ? x.toFixed(4) : x.toPrecision(3)) : String(x));
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

  const canvas = document.createElement("canvas").getContext("2d");
  canvas.font = FONT;
  const widthCache = new Map();
  function labelWidth(id) {
    if (!widthCache.has(id)) widthCache.set(id, Math.ceil(canvas.measureText(id).width) + 2 * PAD);
    return widthCache.get(id);
  }
  const ROOT_NOTE = "root: no parent in this collection";
  canvas.font = "italic 11px system-ui, -apple-system, \"Segoe UI\", sans-serif";
  const ROOT_NOTE_W = Math.ceil(canvas.measureText(ROOT_NOTE).width) + 8;
  canvas.font = FONT;

  function visibleKids(id) {
    return state.collapsed.has(id) ? [] : kids.get(id) || [];
  }

  function descendants(id) {
    let n = 0;
    const stack = [...(kids.get(id) || [])];
    while (stack.length) {
      n += 1;
      stack.push(...(kids.get(stack.pop()) || []));
    }
    return n;
  }

  function edgeColour(e) {
    if (state.colourBy === "truth" && e.truth) return TRUTH_COLOUR[e.truth];
    return data.bands.find((b) => e.confidence >= b.low).colour;
  }

  // Each subtree gets a span as wide as its children's spans side by side (or its own label); a parent
  // sits midway between its first and last child. Loops, not recursion: a chain may be 1,000 deep.
  function layout(root) {
    const order = [];
    const stack = [root];
    while (stack.length) {
      const id = stack.pop();
      order.push(id);
      for (const k of visibleKids(id)) stack.push(k);
    }
    const span = new Map();
    for (let i = order.length - 1; i >= 0; i--) {
      const id = order[i];
      const ks = visibleKids(id);
      const inner = ks.reduce((sum, k) => sum + span.get(k), 0) + GAP * Math.max(0, ks.length - 1);
      // A node's room: its label, the collapse button beside it, and over a root the root's note.
      const own = labelWidth(id) + (kids.has(id) ? 2 * TOGGLE_ROOM : 0);
      span.set(id, Math.max(id === root ? Math.max(own, ROOT_NOTE_W) : own, inner));
    }
    const left = new Map([[root, 0]]);
    const depth = new Map([[root, 0]]);
    for (const id of order) {
      const ks = visibleKids(id);
      const inner = ks.reduce((sum, k) => sum + span.get(k), 0) + GAP * Math.max(0, ks.length - 1);
      let x = left.get(id) + (span.get(id) - inner) / 2;
      for (const k of ks) {
        left.set(k, x);
        depth.set(k, depth.get(id) + 1);
        x += span.get(k) + GAP;
      }
    }
    const pos = new Map();
    let maxDepth = 0;
    for (let i = order.length - 1; i >= 0; i--) {
      const id = order[i];
      const ks = visibleKids(id);
      const cx = ks.length ? (pos.get(ks[0]).x + pos.get(ks[ks.length - 1]).x) / 2 : left.get(id) + span.get(id) / 2;
      pos.set(id, { x: cx, y: TOP + depth.get(id) * LEVEL });
      maxDepth = Math.max(maxDepth, depth.get(id));
    }
    return { pos, order, width: span.get(root), height: TOP + maxDepth * LEVEL + NODE_H + BOTTOM };
  }

  function matches(id) {
    return state.query !== "" && id.toLowerCase().includes(state.query);
  }

  function curve(a, b) {
    const y1 = a.y + NODE_H, y2 = b.y, mid = (y1 + y2) / 2;
    return `M ${a.x} ${y1} C ${a.x} ${mid}, ${b.x} ${mid}, ${b.x} ${y2}`;
  }

  function edgeTitle(e) {
    let t = `${e.parent} → ${e.child}\ndistance ${fmt(e.distance)}, confidence ${fmt(e.confidence)}`;
    if (e.relation === "merge") t += `\nmerge, weight ${fmt(e.weight)}`;
    if (e.direction === "undetermined") t += `\ndirection undetermined (${fmt(e.direction_probability)})`;
    if (e.truth) t += `\n${e.truth}`;
    return t;
  }

  function drawTree(tree, k) {
    const { pos, order, width, height } = layout(tree.root);
    const anyMatch = state.query === "" || tree.models.some(matches);
    const parts = [];
    for (const id of order) {
      if (id === tree.root) continue;
      const e = edgeTo.get(id);
      const a = pos.get(e.parent), b = pos.get(id);
      const colour = edgeColour(e);
      const dash = e.relation != null ? DASHES[relations.indexOf(e.relation) % DASHES.length] : "";
      const classes = ["edge", e.known ? "known" : "", e.truth ? `truth-${e.truth}` : "",
        e.direction === "undetermined" ? "undetermined" : "",
        state.query && !(matches(id) || matches(e.parent)) ? "dim" : "",
        state.selected && state.selected.edge === id ? "selected" : ""].filter(Boolean).join(" ");
      const d = curve(a, b);
      let g = `<g class="${classes}" data-parent="${esc(e.parent)}" data-child="${esc(id)}"><title>${esc(edgeTitle(e))}</title>` +
        `<path class="hit" d="${d}"></path><path class="line" d="${d}" stroke="${colour}"` +
        `${dash ? ` stroke-dasharray="${dash}"` : ""} marker-end="url(#arrow)"></path>`;
      if (e.direction === "undetermined") {
        g += `<text class="qmark" x="${(a.x + b.x) / 2}" y="${(a.y + NODE_H + b.y) / 2 + 4}" fill="${colour}">?</text>`;
      }
      parts.push(g + "</g>");
    }
    // A merge's other parents: the tree hangs it from its heaviest; the rest are drawn straight to it, or,
    // from a parent in another tree, as a short edge from a label that leads to that parent.
    for (const e of data.edges) {
      if (edgeTo.get(e.child) === e || !pos.has(e.child)) continue;
      const b = pos.get(e.child);
      const head = `<g class="edge merge-edge${pos.has(e.parent) ? "" : " cross-tree"}" data-parent="${esc(e.parent)}" ` +
        `data-child="${esc(e.child)}"><title>${esc(edgeTitle(e))}</title>`;
      if (pos.has(e.parent)) {
        const a = pos.get(e.parent);
        parts.push(head + `<path class="line" d="M ${a.x} ${a.y + NODE_H} L ${b.x} ${b.y}" stroke="${edgeColour(e)}" marker-end="url(#arrow)"></path></g>`);
      } else {
        const x = b.x + 30, y = b.y - 20;
        parts.push(head + `<path class="line" d="M ${x} ${y + 4} L ${b.x + 10} ${b.y}" stroke="${edgeColour(e)}" marker-end="url(#arrow)"></path>` +
          `<text class="cross-parent" data-goto="${esc(e.parent)}" x="${x + 2}" y="${y}">from ${esc(e.parent)} (tree ${treeOf.get(e.parent)})</text></g>`);
      }
    }
    if (data.truth) {
      for (const [p, c] of data.truth.missing) {
        if (pos.has(p) && pos.has(c)) {
          const a = pos.get(p), b = pos.get(c);
          parts.push(`<path class="missing-edge" data-parent="${esc(p)}" data-child="${esc(c)}" d="M ${a.x} ${a.y + NODE_H} L ${b.x} ${b.y}"><title>missing: ${esc(p)} → ${esc(c)} is a true edge</title></path>`);
        }
      }
    }
    for (const id of order) {
      const p = pos.get(id), w = labelWidth(id), m = model.get(id) || { path: "" };
      const classes = ["node", id === tree.root ? "root" : "", matches(id) ? "match" : "",
        state.query && !matches(id) ? "dim" : "",
        state.selected && state.selected.model === id ? "selected" : ""].filter(Boolean).join(" ");
      let g = `<g class="${classes}" data-id="${esc(id)}" transform="translate(${p.x},${p.y})"><title>${esc(id)}\n${esc(m.path)}</title>` +
        `<rect x="${-w / 2}" y="0" width="${w}" height="${NODE_H}" rx="4"></rect><text y="16">${esc(id)}</text>`;
      if (id === tree.root) g += `<text class="root-note" y="-8">${ROOT_NOTE}</text>`;
      const e = edgeTo.get(id);
      if (e && e.truth && state.colourBy === "truth") {
        g += `<text class="badge ${e.truth}" x="${-w / 2 - 3}" y="16" text-anchor="end">${TRUTH_MARK[e.truth]}</text>`;
      }
      if (kids.has(id)) {
        const closed = state.collapsed.has(id);
        g += `<g class="toggle" data-toggle="${esc(id)}" transform="translate(${w / 2 + 10},${NODE_H / 2})"><title>${closed ? "expand" : "collapse"} the subtree</title>` +
          `<circle r="7"></circle><text y="4">${closed ? "+" : "−"}</text></g>`;
        if (closed) g += `<text class="hidden-count" y="${NODE_H + 14}">${plural(descendants(id), "model")} hidden</text>`;
      }
      parts.push(g + "</g>");
    }
    const s = state.scale;
    const heading = `tree ${k}: ${plural(tree.models.length, "model")}` +
      (tree.cue ? ` <span class="cue">· oriented by: ${esc(tree.cue)}</span>` : "");
    return `<div class="tree-block" data-tree="${k}"${anyMatch ? "" : " hidden"}><h3>${heading}</h3>` +
      `<svg class="tree" data-tree="${k}" width="${Math.ceil(width * s) + 40}" height="${Math.ceil(height * s)}" ` +
      `viewBox="-20 0 ${width + 40} ${height}" role="img" aria-label="tree ${k}">${parts.join("")}</svg></div>`;
  }

  function render() {
    const started = performance.now();
    $("trees").innerHTML = data.trees.map(drawTree).join("");
    if (state.query) {
      const n = data.models.filter((m) => matches(m.id)).length;
      $("search-count").textContent = `${n} of ${plural(data.models.length, "model")}`;
    } else {
      $("search-count").textContent = "";
    }
    document.body.dataset.renderMs = String(Math.round(performance.now() - started));
    document.body.dataset.rendered = "true";
  }

  function modelLink(id) {
    return `<a class="model-link" data-goto="${esc(id)}">${esc(id)}</a>`;
  }

  function rows(pairs) {
    return "<dl>" + pairs.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`).join("") + "</dl>";
  }

  function distanceKind() {
    const used = data.params.distances_used;
    return Array.isArray(used) && used.length && used.every((u) => u === used[0]) ? ` (${esc(used[0])})` : "";
  }

  function showEdge(child, parent) {
    // A merge has an edge from each parent: the one named, else the one the tree hangs it from.
    const e = data.edges.find((d) => d.child === child && d.parent === parent) || edgeTo.get(child);
    const tree = data.trees[treeOf.get(child)];
    const pairs = [
      ["distance", esc(fmt(e.distance)) + distanceKind()],
      ["confidence", `${esc(fmt(e.confidence))} <span class="note">estimated probability that the edge is right: placed right and pointing the right way</span>`],
      ["direction probability", esc(fmt(e.direction_probability))],
      ["direction", e.direction === "undetermined"
        ? "undetermined: the two are related, but the weights do not tell which came first"
        : "determined"],
      ["direction cue", tree && tree.cue ? `the tree's: ${esc(tree.cue)}` : "none"],
    ];
    if (e.known) pairs.push(["known", "yes: an adapter read on its base, not inferred"]);
    if (e.relation != null) pairs.push(["relation", esc(e.relation)]);
    for (const key of Object.keys(e)) {
      if (!KNOWN_EDGE_KEYS.includes(key) && e[key] != null) pairs.push([key.replace(/_/g, " "), esc(fmt(e[key]))]);
    }
    if (e.truth) {
      const trueParent = data.truth.parent[child];
      pairs.push(["truth", `<b style="color:${TRUTH_COLOUR[e.truth]}">${esc(TRUTH_TEXT[e.truth])}</b>`]);
      pairs.push(["true parent of child", trueParent ? modelLink(trueParent) : "none in this collection"]);
    }
    setDetails(`<h2 class="edge-title">${modelLink(e.parent)} → ${modelLink(child)}</h2>` + rows(pairs));
  }

  let shownDetails = null;
  function setDetails(html) {
    // Redrawing the trees under a resting pointer fires mouseover again: rewriting the same panel would
    // only replace its elements (a flicker, and a lost text selection).
    if (html === shownDetails) return;
    shownDetails = html;
    $("details").innerHTML = html;
  }

  function showModel(id) {
    const m = model.get(id) || { id, path: "", tree: treeOf.get(id) };
    const tree = data.trees[m.tree];
    const parentEdge = edgeTo.get(id);
    const children = kids.get(id) || [];
    const siblings = parentEdge ? (kids.get(parentEdge.parent) || []).filter((s) => s !== id) : [];
    const pairs = [["path", esc(m.path)], ["tree", `${m.tree}${tree && tree.cue ? ` (oriented by ${esc(tree.cue)})` : ""}`]];
    for (const key of Object.keys(m)) {
      if (!["id", "path", "tree"].includes(key)) pairs.push([key.replace(/_/g, " "), esc(fmt(m[key]))]);
    }
    pairs.push(["parent", parentEdge
      ? `${modelLink(parentEdge.parent)} <span class="note">d ${esc(fmt(parentEdge.distance))}, confidence ${esc(fmt(parentEdge.confidence))}</span>`
      : "none: no parent in this collection (a root)"]);
    const merged = data.edges.filter((e) => e.child === id && e.relation === "merge");
    if (merged.length > 1) {
      pairs.push(["merge of", merged.map((e) => `${modelLink(e.parent)} <span class="note">weight ${esc(fmt(e.weight))}` +
        `${treeOf.get(e.parent) !== m.tree ? `, tree ${treeOf.get(e.parent)}` : ""}</span>`).join(", ")]);
    }
    pairs.push(["children", children.length ? children.map(modelLink).join(", ") : "none"]);
    pairs.push(["siblings", siblings.length ? siblings.map(modelLink).join(", ") : "none"]);
    if (data.truth) {
      const trueParent = data.truth.parent[id];
      pairs.push(["true parent", trueParent ? modelLink(trueParent) : "none in this collection"]);
    }
    setDetails(`<h2 class="model-title">${esc(id)}</h2>` + rows(pairs));
  }

  function showSelected() {
    if (!state.selected) {
      setDetails('<p class="hint">Point at or click an edge or a model to see its evidence.</p>');
    } else if (state.selected.edge) {
      showEdge(state.selected.edge, state.selected.parent);
    } else {
      showModel(state.selected.model);
    }
  }

  function reveal(id) {
    // Open every collapsed ancestor, so that the model is drawn.
    for (let e = edgeTo.get(id); e; e = edgeTo.get(e.parent)) state.collapsed.delete(e.parent);
  }

  function goTo(id) {
    reveal(id);
    state.selected = { model: id };
    render();
    showSelected();
    const node = document.querySelector(`.node[data-id="${CSS.escape(id)}"]`);
    if (node) node.scrollIntoView({ block: "center", inline: "center" });
  }

  const trees = $("trees");
  trees.addEventListener("click", (event) => {
    if (event.target.closest("[data-goto]")) return;  // a link to a model: the document's handler follows it
    const toggle = event.target.closest(".toggle");
    const edge = event.target.closest(".edge");
    const node = event.target.closest(".node");
    if (toggle) {
      const id = toggle.dataset.toggle;
      if (state.collapsed.has(id)) state.collapsed.delete(id); else state.collapsed.add(id);
      render();
    } else if (edge) {
      state.selected = { edge: edge.dataset.child, parent: edge.dataset.parent };
      render();
      showSelected();
    } else if (node) {
      state.selected = { model: node.dataset.id };
      render();
      showSelected();
    }
  });
  trees.addEventListener("mouseover", (event) => {
    const edge = event.target.closest(".edge");
    const node = event.target.closest(".node");
    if (edge) showEdge(edge.dataset.child, edge.dataset.parent);
    else if (node && !event.target.closest(".toggle")) showModel(node.dataset.id);
  });
  trees.addEventListener("mouseleave", showSelected);
  document.addEventListener("click", (event) => {
    const link = event.target.closest("[data-goto]");
    if (link) goTo(link.dataset.goto);
  });

  let nextMatch = 0;
  $("search").addEventListener("input", (event) => {
    state.query = event.target.value.trim().toLowerCase();
    nextMatch = 0;
    if (state.query) data.models.filter((m) => matches(m.id)).forEach((m) => reveal(m.id));
    render();
  });
  $("search").addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || !state.query) return;
    const found = [...document.querySelectorAll(".node.match")];
    if (!found.length) return;
    found[nextMatch % found.length].scrollIntoView({ block: "center", inline: "center" });
    nextMatch += 1;
  });

  function zoom(factor) {
    state.scale = Math.min(4, Math.max(0.05, state.scale * factor));
    render();
  }
  $("zoom-in").addEventListener("click", () => zoom(1.25));
  $("zoom-out").addEventListener("click", () => zoom(0.8));
  $("zoom-fit").addEventListener("click", () => {
    const widest = Math.max(...data.trees.map((t) => layout(t.root).width + 40));
    state.scale = Math.min(1, (trees.clientWidth - 40) / widest);
    render();
  });
  $("expand-all").addEventListener("click", () => { state.collapsed.clear(); render(); });
  $("collapse-all").addEventListener("click", () => {
    const roots = new Set(data.trees.map((t) => t.root));
    state.collapsed = new Set([...kids.keys()].filter((id) => !roots.has(id)));
    render();
  });
  $("colour").addEventListener("change", (event) => { state.colourBy = event.target.value; render(); legend(); });

  function legend() {
    const items = [];
    if (state.colourBy === "truth" && data.truth) {
      for (const key of ["right", "reversed", "misplaced"]) {
        items.push(`<span><span class="swatch" style="border-color:${TRUTH_COLOUR[key]}"></span>${TRUTH_MARK[key]} ${key}</span>`);
      }
      items.push('<span><span class="swatch" style="border-top-style:dotted;border-color:#6e7781"></span>missing (a true edge not recovered)</span>');
    } else {
      items.push("<span>confidence:</span>");
      for (const b of data.bands) items.push(`<span><span class="swatch" style="border-color:${b.colour}"></span>${esc(b.label)}</span>`);
    }
    relations.forEach((r, i) => {
      const dash = DASHES[i % DASHES.length];
      items.push(`<span><svg width="24" height="6"><line x1="0" y1="3" x2="24" y2="3" stroke="#444" stroke-width="2"${dash ? ` stroke-dasharray="${dash}"` : ""}></line></svg> ${esc(r)}</span>`);
    });
    items.push("<span><b>?</b> direction undetermined</span>");
    if (data.edges.some((e) => e.known)) items.push('<span><span class="swatch" style="border-top-width:5px;border-color:#444"></span>known (adapter on its base)</span>');
    $("legend").innerHTML = items.join("");
  }

  function header() {
    const nEdges = data.edges.length;
    const undetermined = data.edges.filter((e) => e.direction === "undetermined").length;
    $("summary").textContent = `${plural(data.models.length, "model")} in ${plural(data.trees.length, "tree")}, ` +
      `${plural(nEdges, "edge")}` + (undetermined ? `, ${undetermined} with the direction undetermined (?)` : "");
    if (data.truth) {
      const s = data.truth.score;
      const count = (k) => data.edges.filter((e) => e.truth === k).length;
      const accuracy = $("accuracy");
      accuracy.hidden = false;
      accuracy.innerHTML = `against the truth: directed accuracy <b>${(100 * s.directed_accuracy).toFixed(1)}%</b> ` +
        `(${data.truth.n_directed_correct}/${s.n_edges} true edges), undirected ${(100 * s.undirected_accuracy).toFixed(1)}% ` +
        `(${data.truth.n_undirected_correct}/${s.n_edges}) · recovered edges: ${count("right")} right, ${count("reversed")} reversed, ` +
        `${count("misplaced")} misplaced; ${data.truth.missing.length} true edges missing`;
      $("colour-by").hidden = false;
      $("colour").value = state.colourBy;
      if (data.truth.missing.length) {
        $("missing").hidden = false;
        $("missing").innerHTML = "<h2>True edges not recovered</h2><ul>" +
          data.truth.missing.map(([p, c]) => `<li>${modelLink(p)} → ${modelLink(c)}</li>`).join("") + "</ul>";
      }
    }
    if (data.skipped.length) {
      $("skipped").hidden = false;
      $("skipped").innerHTML = `<h2>Skipped: ${plural(data.skipped.length, "model")} could not be read</h2><ul>` +
        data.skipped.map((s) => `<li><code>${esc(s.path)}</code>: ${esc(s.error)}</li>`).join("") + "</ul>";
    }
    const params = Object.entries(data.params).map(([k, v]) => `<code>${esc(k)}=${esc(JSON.stringify(v))}</code>`).join(" ");
    $("params").innerHTML = `Made by mothertree ${esc(data.mothertree_version)} with ${params || "no recorded parameters"}.`;
  }

  header();
  legend();
  render();
})();
