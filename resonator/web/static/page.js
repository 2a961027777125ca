// resonator-web's page. Everything it shows comes from two Server-Sent Events
// streams: /events (the computations, the processes, the story of a scenario)
// and /tree?id=ID (the tree of the computation chosen). Each event is the whole
// of one part, so a stream that reconnects is up to date at once. Nothing here
// asks the server for a node: the server reads the tree, and pushes it.
"use strict";

const $ = (id) => document.getElementById(id);

let chosen = null; // the id of the computation whose tree is shown
let newest = null; // the newest computation listed: a new one is chosen
let following = null; // the tree's stream
let runs = {}; // computation id -> [[step, what, processes], ...]
let setup = { own: false, scenarios: [] };
let story = { said: [], playing: "" };

// An element with attributes and children (text is always set as text).
function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined) element.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) element.append(child);
  }
  return element;
}

async function ask(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return response.json();
}

// ── The prompt ──────────────────────────────────────────────────────────────

$("prompt").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("expression").value;
  const id = $("id").value;
  $("message").textContent = "";
  const answer = await ask("/compute", { text, id });
  if (answer.error) {
    $("message").textContent = answer.error;
    return;
  }
  $("expression").value = "";
  $("id").value = "";
  choose(answer.id);
});

function showComputations(list) {
  $("none").hidden = list.length > 0;
  $("computations").replaceChildren(
    ...list.map((c) => {
      const outcome =
        c.state === "running"
          ? "…"
          : c.state === "resolved"
            ? `= ${c.value}`
            : c.message || c.state;
      const item = el(
        "li",
        { "data-id": c.id, "data-state": c.state, class: c.id === chosen ? "chosen" : null },
        el("span", { class: "id" }, c.id),
        el("span", { class: "text" }, c.text || "…"),
        el("span", { class: "state" }, c.state),
        el("span", { class: "value" }, outcome),
        el("span", { class: "took" }, c.took === null ? "" : `${c.took.toFixed(1)} s`),
      );
      item.addEventListener("click", () => choose(c.id));
      return item;
    }),
  );
  if (list.length && list[0].id !== newest) {
    newest = list[0].id;
    choose(newest);
  }
}

// ── The tree ────────────────────────────────────────────────────────────────

function choose(id) {
  for (const item of $("computations").children) {
    item.classList.toggle("chosen", item.dataset.id === id);
  }
  if (id === chosen) return;
  chosen = id;
  if (following) following.close();
  $("selected").textContent = id;
  $("tree").replaceChildren();
  $("tree-message").textContent = "reading…";
  showRuns();
  following = new EventSource(`/tree?id=${encodeURIComponent(id)}`);
  following.addEventListener("tree", (event) => {
    const tree = JSON.parse(event.data);
    if (tree.error) {
      $("tree-message").textContent = tree.error;
      return;
    }
    $("tree-message").textContent = tree.said; // how a big tree was folded, if it was
    $("tree").replaceChildren(branch(tree.root));
    showWorkers();
  });
}

// A row of the tree: a promise, or a run of levels passed over (``levels``),
// with what it stands for folded into it, and the rows under it.
function branch(row) {
  const folded = row.folded ? el("span", { class: "folded" }, row.folded) : null;
  const shown =
    row.levels === undefined
      ? el(
          "div",
          { class: "node", "data-id": row.id, "data-state": row.state, "data-where": row.where },
          el("span", { class: "what" }, row.what),
          el("span", { class: "where" }, row.where),
          row.where === "ops" ? el("span", { class: "ran" }) : null,
          el("span", { class: "state" }, row.state),
          row.value === "" ? null : el("span", { class: "value" }, `= ${row.value}`),
          el("span", { class: "id" }, row.name),
          folded,
        )
      : el("div", { class: "levels" }, `┆ ${row.levels.toLocaleString("en")} levels, each awaiting the next`, folded);
  const item = el("li", {}, shown);
  if (row.children.length) item.append(el("ul", {}, ...row.children.map(branch)));
  return item;
}

// Each operator's node names the worker that ran it, from the workers' trace
// lines (the server forgets who held a task once it is done).
function showWorkers() {
  const ran = new Map((runs[chosen] || []).map(([step, , processes]) => [step, processes]));
  for (const node of $("tree").querySelectorAll('.node[data-where="ops"]')) {
    const processes = ran.get(node.dataset.id) || [];
    node.dataset.ran = processes.join(" ");
    node.querySelector(".ran").textContent = processes.length ? `ran on ${processes.join(", ")}` : "";
  }
}

const LISTED_RUNS = 12; // operators listed one by one; of more, those that ran again only

function showRuns() {
  const steps = runs[chosen] || [];
  const spread = new Map();
  for (const [, , processes] of steps) {
    for (const process of processes) spread.set(process, (spread.get(process) || 0) + 1);
  }
  const again = steps.filter(([, , processes]) => processes.length > 1);
  const listed = steps.length > LISTED_RUNS ? again : steps;
  const workers = [...spread].sort().map(([process, n]) => `${process} ${n}`);
  $("spread").textContent = !steps.length
    ? "None has run yet."
    : `${steps.length} operators; runs by worker: ${workers.join(", ")}.` +
      (listed === again ? ` Listed: those that ran more than once (${again.length}).` : "");
  $("runs").replaceChildren(
    ...listed.map(([step, what, processes]) => {
      const times = processes.length === 1 ? "once" : processes.length === 2 ? "twice" : `${processes.length} times`;
      return el(
        "li",
        { "data-step": step, "data-runs": processes.length },
        el("span", { class: "what" }, what),
        ` [${step}] ran ${times}, on ${processes.join(", ")}`,
      );
    }),
  );
  showWorkers();
}

// ── The processes and the scenarios ─────────────────────────────────────────

// A button that asks for something; what it says comes on the streams, or
// under the prompt, if it was refused. ``after`` puts the page right again.
function button(label, path, body, after = () => {}) {
  const b = el("button", { type: "button" }, label);
  b.addEventListener("click", async () => {
    b.disabled = true;
    const answer = await ask(path, body);
    b.disabled = false;
    $("message").textContent = answer.error || "";
    after();
  });
  return b;
}

// A process's button says "Kill" on its card; to a screen reader, "Kill exp/lhs".
function act(verb, p, path, body) {
  const b = button(verb, path, body);
  b.setAttribute("aria-label", `${verb} ${p.title}`);
  return b;
}

function showProcesses(list) {
  $("processes").replaceChildren(
    ...list.map((p) =>
      el(
        "div",
        { class: "process", "data-name": p.name, "data-up": p.up ? "up" : "down" },
        el(
          "div",
          { class: "head" },
          el("span", { class: "name" }, p.title),
          el("span", { class: "pid" }, `pid ${p.pid}`),
          el("span", { class: "up" }, p.up ? "up" : `down: ${p.ended}`),
          p.up
            ? act("Kill", p, "/kill", { pid: p.pid })
            : p.restartable && act("Start", p, "/start", { name: p.name }),
        ),
        el("pre", { class: "lines" }, p.lines.join("\n")),
      ),
    ),
  );
  const pool = list.filter((p) => p.pool);
  $("pool-size").textContent = `ops pool: ${pool.filter((p) => p.up).length} up`;
}

function showSetup() {
  $("server").textContent = setup.own
    ? `Its own topology, on the Resonate server at ${setup.server}.`
    : `Attached to the Resonate server at ${setup.server}: no processes of its own.`;
  $("scenarios").hidden = !setup.own;
  $("counts").hidden = !setup.own;
  $("pool").hidden = !setup.own;
  $("plays").replaceChildren(
    ...setup.scenarios.map((s) =>
      button(`Scenario ${s.name}: ${s.what}`, "/play", { name: s.name }, showStory),
    ),
  );
}

function showStory() {
  for (const play of $("plays").children) play.disabled = story.playing !== "";
  $("story").replaceChildren(...story.said.map((line) => el("li", {}, line)));
  $("story").scrollTop = $("story").scrollHeight; // the latest, in a box that keeps its height
}

// The ops pool grows by a worker, or loses the last one it gained.
for (const act of ["add", "remove"]) {
  $(act).addEventListener("click", async () => {
    $(act).disabled = true;
    const answer = await ask("/pool", { act });
    $(act).disabled = false;
    $("message").textContent = answer.error || "";
  });
}

// ── The stream of everything else ───────────────────────────────────────────

const events = new EventSource("/events");
events.addEventListener("open", () => {
  $("link").dataset.state = "live";
  $("link").textContent = "live";
});
events.addEventListener("error", () => {
  $("link").dataset.state = "lost";
  $("link").textContent = "reconnecting…";
});
events.addEventListener("setup", (event) => {
  setup = JSON.parse(event.data);
  showSetup();
});
events.addEventListener("computations", (event) => showComputations(JSON.parse(event.data)));
events.addEventListener("processes", (event) => showProcesses(JSON.parse(event.data)));
events.addEventListener("story", (event) => {
  story = JSON.parse(event.data);
  showStory();
});
events.addEventListener("runs", (event) => {
  runs = JSON.parse(event.data);
  showRuns();
});
