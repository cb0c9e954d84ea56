// The rab-certify dashboard: a page of the public /v1 API, nothing else. Every figure shown is
// read from the API with the key the user signed in with (kept in this tab's sessionStorage).
"use strict";

const KEY = "rab.apiKey";
const MY_JOBS = "rab.jobs"; // ids of jobs submitted from this tab (used where GET /v1/jobs is absent)
const POLL_MS = 1000;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
let timer = null;

// ---- helpers -------------------------------------------------------------------------------

/** An element with attributes (on* are listeners) and children (strings become text). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "text") el.textContent = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** A figure as the API sent it: integers as they are, other numbers to 4 decimals. */
function fmt(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(4);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function table(headers, rows, id) {
  return h("table", { id },
    h("thead", {}, h("tr", {}, headers.map((c) => h("th", { text: c })))),
    h("tbody", {}, rows.map((row) => h("tr", {}, row.map((cell) =>
      cell instanceof Node ? h("td", {}, cell)
        : h("td", { class: typeof cell === "number" ? "num" : null, text: fmt(cell) }))))));
}

function keyValues(obj, id) {
  return table(["field", "value"], Object.entries(obj || {}).map(([k, v]) => [k, v]), id);
}

/** JSON with integers beyond 2^53 (seeds are up to 2^63 - 1) kept exact, as their digits. */
function parseJson(text) {
  return JSON.parse(text, (key, value, context) =>
    (Number.isInteger(value) && !Number.isSafeInteger(value) && context ? context.source : value));
}

/** An integer typed in a form, exact in the JSON sent (digits, not a rounded double). */
function exactInt(text) {
  return JSON.rawJSON ? JSON.rawJSON(BigInt(text).toString()) : Number(text);
}

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
  }
}

/** A call of the public API with the signed-in key; JSON (or the raw response) back. */
async function api(path, { method = "GET", json, body, raw = false } = {}) {
  const headers = { "X-API-Key": sessionStorage.getItem(KEY) || "" };
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const response = await fetch(path, { method, headers, body });
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    throw new ApiError(response.status, problem);
  }
  return raw ? response : parseJson(await response.text());
}

function showError(error) {
  const box = document.getElementById("error");
  box.hidden = !error;
  box.textContent = error ? `Error: ${error.message}` : "";
}

function rememberJob(id) {
  const ids = JSON.parse(sessionStorage.getItem(MY_JOBS) || "[]").filter((x) => x !== id);
  sessionStorage.setItem(MY_JOBS, JSON.stringify([id, ...ids]));
}

function stateBadge(state) {
  return h("span", { class: `state state-${state}`, "data-state": state, text: state });
}

function progressOf(job) {
  const { done, total, phase } = job.progress;
  return h("span", { class: "progress" },
    total > 0 ? h("progress", { value: done, max: total }) : null,
    ` ${done} / ${total} `, h("em", { text: phase }));
}

function poll(fn) {
  clearTimeout(timer);
  timer = setTimeout(() => fn().catch(showError), POLL_MS);
}

// ---- pages ---------------------------------------------------------------------------------

function signIn(main) {
  document.getElementById("nav").hidden = true;
  const input = h("input", { id: "api-key", type: "password", size: 50, autocomplete: "off",
    placeholder: "rab_…", required: true });
  main.append(h("section", {},
    h("h2", { text: "Sign in" }),
    h("p", { text: "Paste an API key (made with `rab keys create`)." }),
    h("form", { id: "sign-in", onsubmit: async (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY, input.value.trim());
      try {
        await api("/v1/datasets?limit=1"); // checks the key
        showError(null);
        route();
      } catch (error) {
        sessionStorage.removeItem(KEY);
        showError(error);
      }
    } }, input, " ", h("button", { type: "submit", text: "Sign in" }))));
}

/** Items of a listing, or null where the server does not offer it (404/405). */
async function listing(path) {
  try {
    return await api(path);
  } catch (error) {
    if (error.status === 404 || error.status === 405) return null;
    throw error;
  }
}

async function overview(main, query) {
  const after = new URLSearchParams(query).get("after");
  const datasets = await api("/v1/datasets?limit=100");
  main.append(h("section", { id: "datasets" }, h("h2", { text: "Datasets" }),
    datasets.items.length === 0 ? h("p", { text: "No datasets yet." }) : table(
      ["name", "id", "shape", "classes", "train", "test", "sha256", "created"],
      datasets.items.map((d) => [d.name, h("code", { text: d.id }), d.input_shape.join("×"),
        d.num_classes, d.train_size, d.test_size, h("span", { class: "hash", text: d.sha256 }),
        d.created_at]), "datasets-table")));

  const jobsBox = h("section", { id: "jobs" });
  const modelsBox = h("section", { id: "models" });
  main.append(jobsBox, modelsBox);
  const refresh = async () => {
    const jobs = await jobsList(jobsBox, after);
    await modelsList(modelsBox, jobs);
    const onOverview = ["", "#", "#/"].includes(location.hash) || location.hash.startsWith("#/?");
    if (onOverview && jobs.some((j) => !TERMINAL.has(j.state))) poll(refresh);
  };
  await refresh();
}

async function jobsList(box, after) {
  const page = await listing(`/v1/jobs?limit=50${after ? `&after=${encodeURIComponent(after)}` : ""}`);
  let jobs;
  let note = null;
  if (page === null) {
    const ids = JSON.parse(sessionStorage.getItem(MY_JOBS) || "[]");
    jobs = (await Promise.all(ids.map((id) => api(`/v1/jobs/${id}`).catch(() => null))))
      .filter(Boolean);
    note = h("p", { class: "note", id: "jobs-note", text: "This server does not list jobs "
      + "(GET /v1/jobs); shown are the jobs submitted from this tab. Open any job by its id:" },
    h("form", { onsubmit: (e) => { e.preventDefault(); location.hash = `#/jobs/${e.target.id_.value.trim()}`; } },
      h("input", { name: "id_", size: 34, placeholder: "job id" }), " ", h("button", { text: "Open" })));
  } else {
    jobs = page.items;
    if (page.next_cursor) {  // newest first: the next page holds older jobs
      note = h("p", {}, h("a", { id: "older-jobs", href: `#/?after=${page.next_cursor}`, text: "Older jobs" }));
    }
  }
  box.replaceChildren(...h("div", {}, h("h2", { text: after ? "Jobs (older)" : "Jobs" }), note,
    jobs.length === 0 ? h("p", { text: "No jobs yet." }) : table(
      ["id", "method", "state", "progress", "dataset", "created"],
      jobs.map((j) => [h("a", { href: `#/jobs/${j.id}`, text: j.id }), j.method,
        stateBadge(j.state), progressOf(j), j.dataset_id, j.created_at]), "jobs-table")).childNodes);
  return jobs;
}

async function modelsList(box, jobs) {
  const page = await listing("/v1/models?limit=50");
  let models;
  let note = null;
  if (page === null) {
    const ids = jobs.filter((j) => j.model_id).map((j) => j.model_id);
    models = await Promise.all(ids.map((id) => api(`/v1/models/${id}`)));
    note = h("p", { class: "note", id: "models-note", text: "This server does not list models "
      + "(GET /v1/models); shown are the models of the jobs above." });
  } else {
    models = page.items;
  }
  box.replaceChildren(...h("div", {}, h("h2", { text: "Models" }), note,
    models.length === 0 ? h("p", { text: "No models yet." }) : table(
      ["id", "method", "job", "training set sha256", "code version", "created"],
      models.map((m) => [m.id, m.method, h("a", { href: `#/jobs/${m.job_id}`, text: m.job_id }),
        h("span", { class: "hash", text: m.train_sha256 }), m.code_version, m.created_at]),
      "models-table")).childNodes);
}

async function jobPage(main, id) {
  const job = await api(`/v1/jobs/${id}`);
  const head = h("section", { id: "job" },
    h("h2", {}, `Job `, h("code", { text: job.id }), " ", stateBadge(job.state)),
    h("p", { id: "job-progress" }, progressOf(job)),
    TERMINAL.has(job.state) ? null : h("button", { id: "cancel", type: "button", onclick: async () => {
      await api(`/v1/jobs/${id}`, { method: "DELETE" }).catch(showError);
      route();
    } }, "Cancel job"),
    job.error ? h("p", { class: "note", text: job.error }) : null,
    keyValues({ kind: job.kind, method: job.method, dataset_id: job.dataset_id,
      model_id: job.model_id, attempts: job.attempts, created_at: job.created_at,
      started_at: job.started_at, finished_at: job.finished_at }, "job-facts"),
    h("h3", { text: "Parameters" }), keyValues(job.params, "job-params"),
    job.attack ? [h("h3", { text: "Attack" }), keyValues(job.attack, "job-attack")] : null);
  main.append(head, await provenance(job));
  if (!TERMINAL.has(job.state)) {
    poll(async () => { if (location.hash === `#/jobs/${id}`) route(); });
    return;
  }
  if (job.state !== "succeeded") return;
  if (job.links.summary) main.append(await summary(job));
  if (job.links.curve) main.append(await curve(job));
  if (job.links.count_curve) main.append(await countCurve(job));
  main.append(certificates(job));
}

async function provenance(job) {
  const rows = [["seed: poisoning", job.seeds.poisoning], ["seed: training", job.seeds.training]];
  if (job.dataset_id) {
    const d = await api(`/v1/datasets/${job.dataset_id}`);
    rows.push(["dataset sha256", h("span", { class: "hash", text: d.sha256 })],
      ["dataset source", h("span", { class: "hash", text: fmt(d.provenance.source || d.source) })]);
  }
  let members = null;
  if (job.model_id) {
    const m = await api(`/v1/models/${job.model_id}`);
    rows.push(["model", m.id], ["code version", m.code_version],
      ["dataset sha256 (model)", h("span", { class: "hash", text: m.dataset_sha256 })],
      ["training set sha256", h("span", { class: "hash", text: m.train_sha256 })]);
    if (m.members.length) {
      members = [h("h3", { text: `Members (${m.members.length})` }), table(["index", "weights sha256", "noise seed"],
        m.members.map((x) => [x.index, h("span", { class: "hash", text: x.state_sha256 }), x.noise_seed]),
        "members-table")];
    }
  }
  return h("section", { id: "provenance" }, h("h2", { text: "Provenance" }),
    table(["", "value"], rows, "provenance-table"), members);
}

async function summary(job) {
  const s = await api(job.links.summary);
  const top = ["clean_accuracy", "backdoor_accuracy", "attack_success_rate", "attack_total_norm"]
    .filter((k) => s[k] !== undefined && s[k] !== null).map((k) => [k, s[k]]);
  const sets = ["clean", "backdoor"].filter((name) => s[name]).map((name) => {
    const m = s[name];
    return [h("h3", { text: `${name} test set` }),
      keyValues({ num_points: m.num_points, accuracy: m.accuracy, abstain_rate: m.abstain_rate,
        attack_success_rate: m.attack_success_rate,
        certified_accuracy_at_attack_norm: m.certified_accuracy_at_attack_norm }, `summary-${name}`),
      table(["radius R", "certified accuracy", "certified rate"],
        Object.keys(m.certified_accuracy).map((r) => [r, m.certified_accuracy[r], m.certified_rate[r]]),
        `radii-${name}`), m.poison_count ? counts(m.poison_count, name) : null];
  });
  return h("section", { id: "summary" }, h("h2", { text: "Summary" }),
    top.length ? table(["figure", "value"], top, "summary-top") : null, sets);
}

/** Certified accuracy against the poison count, of the classifier the count is proved for. */
function counts(c, name) {
  return [h("h4", { text: `poison count: ${c.classifier} (${c.method}), accuracy ${fmt(c.accuracy)}, median ${c.median_count}` }),
    table(["poison count r", "certified accuracy", "certified rate"],
      Object.keys(c.certified_accuracy).map((r) => [r, c.certified_accuracy[r], c.certified_rate[r]]),
      `counts-${name}`)];
}

async function countCurve(job) {
  const response = await api(job.links.count_curve, { raw: true }).catch(() => null);
  if (!response) return null; // a K-NN job from before the counts were stored
  const url = URL.createObjectURL(await response.blob());
  return h("section", { id: "count-curve" }, h("h2", { text: "Certified accuracy against the poison count" }),
    h("img", { class: "curve", id: "count-curve-img", src: url, alt: "certified accuracy against the poison count" }));
}

async function curve(job) {
  const response = await api(job.links.curve, { raw: true });
  const url = URL.createObjectURL(await response.blob());
  return h("section", { id: "curve" }, h("h2", { text: "Certified accuracy against the radius" }),
    h("img", { class: "curve", id: "curve-img", src: url, alt: "certified-accuracy curve" }));
}

/** The per-sample certificates: filters and pages through the API (keyset cursor), sorts the
 * page shown. */
function certificates(job) {
  const field = (name, el) => h("label", {}, `${name} `, el);
  const subset = h("select", { id: "cert-subset" },
    ["clean", "backdoor"].map((v) => h("option", { value: v, text: v })));
  const minRadius = h("input", { id: "cert-min-radius", type: "number", step: "any", min: 0 });
  const correct = h("select", { id: "cert-correct" },
    [["", "any"], ["true", "correct"], ["false", "wrong"]].map(([v, t]) => h("option", { value: v, text: t })));
  const abstain = h("select", { id: "cert-abstain" },
    [["", "any"], ["true", "abstained"], ["false", "predicted"]].map(([v, t]) => h("option", { value: v, text: t })));
  const limit = h("select", { id: "cert-limit" }, [10, 25, 100].map((v) => h("option", { value: v, text: v })));
  const sort = h("select", { id: "cert-sort" },
    [["index", "index"], ["radius", "radius (largest first)"], ["p_a", "p_A (largest first)"]]
      .map(([v, t]) => h("option", { value: v, text: t })));
  const body = h("div", { id: "cert-page" });
  const cursors = [null]; // cursor of each page read so far
  const load = async (pageNo) => {
    const query = new URLSearchParams({ subset: subset.value, limit: limit.value });
    if (minRadius.value) query.set("min_radius", minRadius.value);
    if (correct.value) query.set("correct", correct.value);
    if (abstain.value) query.set("abstain", abstain.value);
    if (cursors[pageNo] !== null) query.set("after", cursors[pageNo]);
    const page = await api(`/v1/jobs/${job.id}/certificates?${query}`);
    cursors[pageNo + 1] = page.next_cursor;
    const num = (v) => (v === "Infinity" ? Infinity : v);
    const items = [...page.items];
    const counted = items.some((c) => c.poison_count !== null && c.poison_count !== undefined);
    if (sort.value !== "index") items.sort((a, b) => num(b[sort.value]) - num(a[sort.value]));
    body.replaceChildren(
      table(["index", "label", "prediction", "p_A", "p_B", "radius", "abstain", "correct",
        ...(counted ? ["poison count", "count prediction"] : [])],
      items.map((c) => [c.index, c.label, c.prediction, c.p_a, c.p_b, c.radius, c.abstain, c.correct,
        ...(counted ? [c.poison_count, c.count_prediction] : [])]),
      "cert-table"),
      h("p", { class: "controls" },
        h("button", { id: "cert-prev", type: "button", disabled: pageNo === 0,
          onclick: () => load(pageNo - 1).catch(showError) }, "Previous page"),
        `page ${pageNo + 1}`,
        h("button", { id: "cert-next", type: "button", disabled: page.next_cursor === null,
          onclick: () => load(pageNo + 1).catch(showError) }, "Next page")));
  };
  const box = h("section", { id: "certificates" }, h("h2", { text: "Per-sample certificates" }),
    h("form", { class: "controls", onsubmit: (e) => { e.preventDefault(); cursors.length = 1; load(0).catch(showError); } },
      field("test set", subset), field("min radius", minRadius), field("correct", correct),
      field("abstain", abstain), field("per page", limit), field("sort page by", sort),
      h("button", { id: "cert-apply", type: "submit", text: "Apply" })), body);
  load(0).catch(showError);
  return box;
}

function uploadPage(main) {
  const form = h("form", { id: "upload-form", onsubmit: async (event) => {
    event.preventDefault();
    const f = event.target;
    const options = { test_fraction: Number(f.test_fraction.value), split_seed: Number(f.split_seed.value) };
    if (f.name_.value) options.name = f.name_.value;
    if (f.label_column.value !== "") options.label_column = Number(f.label_column.value);
    const data = new FormData();
    data.append("file", f.file.files[0]);
    if (f.format.value) data.append("format", f.format.value);
    data.append("options", JSON.stringify(options));
    try {
      const d = await api("/v1/datasets", { method: "POST", body: data });
      showError(null);
      result.replaceChildren(h("p", { id: "upload-result" }, "Stored dataset ", h("code", { text: d.id }),
        ` (${d.train_size} training, ${d.test_size} test points, sha256 ${d.sha256}). `,
        h("a", { href: `#/jobs/new?dataset=${d.id}`, text: "Submit a job on it" })));
    } catch (error) { showError(error); }
  } },
  h("label", {}, "File (CSV or npz) ", h("input", { type: "file", name: "file", id: "upload-file", required: true })),
  h("label", {}, "Format ", h("select", { name: "format" },
    [["", "from the file name"], ["csv", "csv"], ["npz", "npz"]].map(([v, t]) => h("option", { value: v, text: t })))),
  h("br"),
  h("label", {}, "Name ", h("input", { name: "name_" })),
  h("label", {}, "Test fraction ", h("input", { type: "number", name: "test_fraction", value: 0.2, step: "any" })),
  h("label", {}, "Split seed ", h("input", { type: "number", name: "split_seed", value: 0 })),
  h("label", {}, "CSV label column ", h("input", { type: "number", name: "label_column", placeholder: "-1" })),
  h("br"), h("button", { type: "submit", id: "upload-submit", text: "Upload" }));
  const result = h("div");
  main.append(h("section", {}, h("h2", { text: "Upload a dataset" }), form, result));
}

const num = (name, attrs = {}) => h("label", {}, `${name} `, h("input", { type: "number", step: "any", name, id: `f-${name}`, ...attrs }));

async function submitPage(main, query) {
  const datasets = await api("/v1/datasets?limit=1000");
  const chosen = new URLSearchParams(query).get("dataset");
  const method = h("select", { name: "method", id: "f-method" },
    ["knn", "ensemble", "partition"].map((v) => h("option", { value: v, text: v })));
  const knn = h("fieldset", { id: "knn-fields" }, h("legend", { text: "K-NN (Theorem 3)" }),
    num("k", { value: 5 }), num("num_levels", { value: 200 }), num("spread", { value: 1.0 }));
  const ensemble = h("fieldset", { id: "ensemble-fields", hidden: true }, h("legend", { text: "Ensemble (DNN-RAB)" }),
    num("num_models", { value: 100 }), num("epochs"), num("batch_size"), num("lr"), num("alpha", { value: 0.001 }),
    num("seed"), h("label", {}, "arch ", h("select", { name: "arch" },
      ["", "mlp", "mnist_cnn", "preact_resnet", "resnet18"].map((v) => h("option", { value: v, text: v || "preset" })))));
  const partition = h("fieldset", { id: "partition-fields", hidden: true },
    h("legend", { text: "Partition aggregation (poison-count certificates; no sigma)" }),
    num("p_k", { value: 50, min: 1 }), h("label", {}, "aggregation ", h("select", { name: "p_aggregation" },
      ["dpa", "fa"].map((v) => h("option", { value: v, text: v })))), num("p_d", { min: 1 }),
    num("p_epochs"), num("p_batch_size"), num("p_lr"), num("p_seed"));
  const sigma = num("sigma", { value: 1.0, required: true });
  method.addEventListener("change", () => {
    knn.hidden = method.value !== "knn";
    ensemble.hidden = method.value !== "ensemble";
    partition.hidden = method.value !== "partition";
    sigma.style.display = method.value === "partition" ? "none" : "";
    sigma.querySelector("input").required = method.value !== "partition";
  });
  const attack = h("fieldset", {}, h("legend", {}, h("label", {},
    h("input", { type: "checkbox", name: "with_attack", id: "f-with-attack" }), " backdoor attack")),
  h("label", {}, "kind ", h("select", { name: "kind" },
    ["one_pixel", "four_pixel", "blending", "badnets_patch"].map((v) => h("option", { value: v, text: v })))),
  num("norm", { value: 0.1 }), num("rate", { value: 0.02 }), num("target", { value: 0 }), num("attack_seed"));
  const form = h("form", { id: "job-form", onsubmit: async (event) => {
    event.preventDefault();
    const f = event.target;
    const read = (names) => Object.fromEntries(names.filter((n) => f[n].value !== "")
      .map((n) => [n, Number(f[n].value)]));
    const params = read(["num_test"]);
    if (method.value !== "partition") params.sigma = Number(f.sigma.value);
    if (method.value === "knn") Object.assign(params, read(["k", "num_levels", "spread"]));
    else if (method.value === "partition") {
      const fields = read(["p_k", "p_d", "p_epochs", "p_batch_size", "p_lr"]);
      for (const [name, value] of Object.entries(fields)) params[name.slice(2)] = value;
      params.aggregation = f.p_aggregation.value;
      if (f.p_seed.value !== "") params.seed = exactInt(f.p_seed.value);
    } else {
      Object.assign(params, read(["num_models", "epochs", "batch_size", "lr", "alpha"]));
      if (f.seed.value !== "") params.seed = exactInt(f.seed.value);
      if (f.arch.value) params.arch = f.arch.value;
    }
    const body = { dataset_id: f.dataset_id.value, method: method.value, params };
    if (f.with_attack.checked) {
      body.attack = { kind: f.kind.value, ...read(["norm", "rate", "target"]) };
      if (f.attack_seed.value !== "") body.attack.seed = exactInt(f.attack_seed.value);
    }
    try {
      const job = await api("/v1/jobs", { method: "POST", json: body });
      rememberJob(job.id);
      showError(null);
      location.hash = `#/jobs/${job.id}`;
    } catch (error) { showError(error); }
  } },
  h("label", {}, "Dataset ", h("select", { name: "dataset_id", id: "f-dataset", required: true },
    datasets.items.map((d) => h("option", { value: d.id, selected: d.id === chosen, text: `${d.name} (${d.id})` })))),
  h("label", {}, "Method ", method), h("br"),
  sigma, num("num_test", { min: 1 }),
  knn, ensemble, partition, attack, h("button", { type: "submit", id: "job-submit", text: "Submit job" }));
  main.append(h("section", {}, h("h2", { text: "Submit an evaluation job" }), form));
}

// ---- routing -------------------------------------------------------------------------------

async function route() {
  clearTimeout(timer);
  const main = document.getElementById("main");
  const fresh = h("main", { id: "main" });
  if (!sessionStorage.getItem(KEY)) {
    signIn(fresh);
    main.replaceWith(fresh);
    return;
  }
  document.getElementById("nav").hidden = false;
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const job = path.match(/^\/jobs\/([0-9a-f]{32})$/);
  try {
    if (job) await jobPage(fresh, job[1]);
    else if (path === "/datasets/new") uploadPage(fresh);
    else if (path === "/jobs/new") await submitPage(fresh, query || "");
    else await overview(fresh, query || "");
  } catch (error) {
    if (error.status === 401) sessionStorage.removeItem(KEY);
    showError(error);
  }
  main.replaceWith(fresh);
}

document.getElementById("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  location.hash = "#/";
  route();
});
window.addEventListener("hashchange", () => { showError(null); route(); });
route();
