// Drives the admin console in Debian's headless Chromium through playwright-core.
//   node tests/console/run.mjs <gateway url> <admin key> <screenshot dir> [options as JSON]
// options: {"query": "...", "minSessions": 3, "trainingTimeoutS": 420, "rolloutTimeoutS": 420,
//           "dlqTopic": "clicks.dlq", "letterKey": "console-bad"}
// Prints one JSON object (what it saw) and exits 0 when every step passed and the browser
// logged no console error, 1 otherwise.
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, key, shotDir, rawOptions] = process.argv.slice(2);
if (!url || !key || !shotDir) {
  console.error("usage: node run.mjs <gateway url> <admin key> <screenshot dir> [options JSON]");
  process.exit(2);
}
const options = { query: "cats", minSessions: 3, trainingTimeoutS: 420, rolloutTimeoutS: 420, dlqTopic: null, letterKey: null,
  ...(rawOptions ? JSON.parse(rawOptions) : {}) };
const FINAL = ["succeeded", "failed", "rejected"];
const stubVersion = (version, status, metrics, percent, ctr) => ({
  version, status, active: status === "active", dim: 384, created_at: "2026-01-01T00:00:00Z", activated_at: null,
  metrics, traffic: { percent }, searches: 200, clicked_searches: Math.round(200 * ctr), ctr, mrr: ctr * 0.8,
  adjustments: {} });
const STUB_MODELS = {
  active_version: "2", ab_split: { candidate_version: "3", percent: 20 }, online_window_days: 7, online_sessions: 600,
  versions: [
    stubVersion("1", "retired", {}, 0, 0.41),
    stubVersion("2", "active", { "ndcg@10": 0.62, "mrr@10": 0.55, "recall@10": 0.81 }, 80, 0.47),
    { ...stubVersion("3", "retired", { "ndcg@10": 0.68, "mrr@10": 0.6, "recall@10": 0.86 }, 20, 0.52),
      owner: "console", lineage: { training_run: "run-3", base_version: "2", dataset: { pairs: 480, sessions: 120 },
        gate: { decision: "passed", margin: 0.01, reason: "nDCG@10 0.68 > 0.62 + 0.01" }, mlflow_run: null } },
  ] };
mkdirSync(shotDir, { recursive: true });

const report = { ok: false, steps: [], console_errors: [], screenshots: [] };
const step = (name, detail = {}) => { report.steps.push({ name, ...detail }); };

const userDataDir = mkdtempSync(join(tmpdir(), "flywheel-console-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = context.pages()[0] || await context.newPage();
page.setDefaultTimeout(30_000);
page.on("console", (msg) => {
  if (msg.type() === "error") report.console_errors.push({ text: msg.text(), location: msg.location() });
});
page.on("pageerror", (error) => report.console_errors.push({ text: `uncaught: ${error.message}` }));

async function shot(name) {
  await page.waitForTimeout(150); // let the last paint land
  const path = join(shotDir, `${name}.png`);
  // A screenshot waits for a frame: on a loaded machine (a reindex beside it) that takes longer.
  await page.screenshot({ path, fullPage: false, timeout: 120_000 });
  report.screenshots.push(path);
}

async function go(pageName) {
  await page.getByRole("link", { name: pageName, exact: true }).click();
  await page.waitForFunction((n) => document.querySelector("nav a[aria-current=page]")?.textContent === n, pageName);
}

async function search(query) {
  await go("Search");
  await page.getByLabel("Query").fill(query);
  await page.getByRole("button", { name: "Search", exact: true }).click();
  await page.locator("#answered-by").waitFor();
  return {
    results: await page.locator("tr.result").count(),
    model_version: await page.locator("#answered-by").textContent(),
    first: await page.locator("tr.result td:nth-child(2)").first().textContent().catch(() => null),
  };
}

try {
  // 1. The key, entered once.
  await page.goto(`${url}/console`);
  await page.getByLabel("API key").waitFor();
  await shot("login");
  await page.getByLabel("API key").fill(key);
  await page.keyboard.press("Enter"); // submit from the keyboard
  await page.locator("nav").waitFor();
  await page.waitForFunction(() => location.hash === "#/overview");
  step("signed in", { stored: await page.evaluate(() => Boolean(sessionStorage.getItem("flywheel.apiKey"))) });

  // 2. Overview: health, topics with lag (two polls give events/s), DLQ sizes.
  await page.locator("#h-health + .stats").waitFor({ timeout: 60_000 });
  await page.locator("section[aria-labelledby=h-flow] table").waitFor({ timeout: 60_000 });
  await page.locator("section[aria-labelledby=h-dead] table").waitFor({ timeout: 60_000 });
  await page.waitForFunction(() => !document.querySelector("section[aria-labelledby=h-flow] .stat")?.textContent.includes("…"),
    null, { timeout: 20_000 });
  const dlqLinks = await page.locator("section[aria-labelledby=h-dead] a.dlq-link").evaluateAll(
    (links) => links.map((a) => [a.textContent, a.getAttribute("href")]));
  step("overview", {
    dlq_links: dlqLinks,
    healthy: await page.locator("#h-health + .stats .stat").textContent(),
    topics: await page.locator("section[aria-labelledby=h-flow] tbody tr").count(),
    events_per_s: await page.locator("section[aria-labelledby=h-flow] .stat").textContent(),
  });
  await shot("overview");

  // 3. Search: results with scores and the version that answered; a metadata filter row.
  const first = await search(options.query);
  if (!first.results) throw new Error(`no results for ${options.query}`);
  first.title = await page.locator("tr.result .result-title").first().textContent();
  first.snippet = await page.locator("tr.result .snippet").first().textContent().catch(() => null);
  step("search", first);
  // Hybrid: each result's score in its vector and keyword parts.
  await page.getByLabel("Mode").selectOption("hybrid");
  await page.getByRole("button", { name: "Search", exact: true }).click();
  await page.locator("tr.result .parts").first().waitFor();
  step("hybrid search", { results: await page.locator("tr.result").count(),
    parts: await page.locator("tr.result .parts").first().textContent(),
    summary: await page.locator("#search-summary").textContent() });
  await shot("search-hybrid");
  await page.getByLabel("Mode").selectOption("vector");
  // The item page of the first result: what is stored, when it was indexed, by which versions.
  await page.locator("tr.result a.item-link").first().click();
  await page.waitForFunction(() => location.hash.startsWith("#/item/"));
  await page.locator("#item-text").waitFor();
  const item = { id: first.first, hash: await page.evaluate(() => location.hash),
    title: await page.locator("#h-item").textContent(), text: await page.locator("#item-text").textContent(),
    searchable: await page.locator("#item-searchable").textContent(),
    nav: await page.evaluate(() => document.querySelector("nav a[aria-current=page]")?.textContent) };
  step("item page", item);
  report.item = item;
  await shot("item");
  await page.getByRole("link", { name: "Back to search" }).click();
  await page.waitForFunction(() => location.hash === "#/search");
  await page.getByRole("button", { name: "Add filter" }).click();
  await page.locator(".filter-key").last().fill("kind");
  await page.locator(".filter-value").last().fill("animal");
  await page.getByRole("button", { name: "Search", exact: true }).click();
  await page.waitForFunction(() => [...document.querySelectorAll("tr.result")].every((r) => r.textContent.includes("animal")));
  step("filtered search", { results: await page.locator("tr.result").count() });
  await page.locator("section[aria-labelledby=h-tenants] table").waitFor();
  await shot("search");

  // 4. Training on the tiny corpus, watched on the Tasks page until a final status; when it
  //    passed the gate, its deploy and reindex tasks too, until the new version serves.
  await go("Models");
  await page.locator("#active-version").waitFor();
  await page.waitForFunction(() => /^\d+$/.test(document.querySelector("#active-version")?.textContent ?? ""));
  const activeBefore = (await page.locator("#active-version").textContent()).trim();
  // Recipe and epochs left empty: the trainer's default recipe, for its default epochs.
  if ((await page.getByLabel("Recipe").inputValue()) !== "") throw new Error("the recipe is not the trainer's default");
  await page.getByLabel("Epochs").fill("");
  await page.getByLabel("Min sessions").fill(String(options.minSessions));
  await page.getByLabel("Gate margin").fill("0");
  await page.getByRole("button", { name: "Request training" }).click();
  // A confirmation first: Escape cancels it and nothing is requested; then confirmed.
  await page.locator("#confirm[open]").waitFor();
  await page.keyboard.press("Escape");
  await page.locator("#confirm[open]").waitFor({ state: "detached" });
  if ((await page.locator("#train-task").count()) !== 0) throw new Error("a cancelled confirmation requested training");
  await page.getByRole("button", { name: "Request training" }).click();
  await page.locator("#confirm[open]").waitFor();
  await page.locator("#confirm-ok").click();
  await page.locator("#train-task").waitFor();
  const taskId = (await page.locator("#train-task").textContent()).trim();
  step("training requested", { task_id: taskId, active_before: activeBefore });
  await shot("models");
  await page.locator("#train-task").click();
  await page.waitForFunction(() => location.hash === "#/tasks");
  const row = page.locator(`tr.task[data-task-id="${taskId}"]`);
  await row.waitFor();
  await shot("tasks-running");
  await page.waitForFunction(([id, final]) => final.includes(
    document.querySelector(`tr.task[data-task-id="${id}"]`)?.dataset.status), [taskId, FINAL],
  { timeout: options.trainingTimeoutS * 1000, polling: 500 });
  const training = { task_id: taskId, status: await row.getAttribute("data-status"),
    stage: await row.locator("td.task-stage").textContent(), error: await row.locator("td.task-error").textContent(),
    mlflow_link: await row.getByRole("link", { name: "MLflow run" }).getAttribute("href").catch(() => null) };
  step("training finished", training);
  report.training = training;
  await shot("tasks");
  if (training.status === "succeeded") {
    // The tenant's reindex task is reindex-<version>-<tenant> (core.rollout.reindex_task_id).
    const mine = `tr.task[data-task-id^="reindex-"][data-task-id$="-${options.tenant}"]`;
    const reindexRow = page.locator(mine);
    await page.waitForFunction(([sel, final]) => [...document.querySelectorAll(sel)]
      .some((r) => final.includes(r.dataset.status)), [mine, FINAL], { timeout: options.rolloutTimeoutS * 1000, polling: 500 });
    const reindexId = await reindexRow.first().getAttribute("data-task-id");
    const version = reindexId.split("-")[1];
    report.rollout = {
      version,
      deploy: await page.locator(`tr.task[data-task-id="deploy-${version}"]`).getAttribute("data-status"),
      reindex: await page.locator(`tr.task[data-task-id="${reindexId}"]`).getAttribute("data-status"),
    };
    step("rolled out", report.rollout);
    await shot("tasks-rollout");
    await go("Models");
    await page.waitForFunction((v) => document.querySelector("#active-version")?.textContent === v, version,
      { timeout: 60_000 });
    await page.locator(".chart svg rect").first().waitFor();
    report.chart = { bars: await page.locator(".chart svg rect").count(),
      label: await page.locator(".chart svg").first().getAttribute("aria-label") };
    step("models chart", report.chart);
    await shot("models-rolled-out");
    const served = await search(options.query);
    step("search after rollout", served);
    report.search_rolled_out = served;
  }

  // 5. Activate a version (a confirmation dialog; Escape cancels it), then search with it:
  //    after a rollout, the version that served before it (a rollback).
  await go("Models");
  await page.locator("tr[data-version]").first().waitFor();
  const versions = await page.locator("tr[data-version]").evaluateAll((rows) => rows.map((r) => ({
    version: r.dataset.version, active: Boolean(r.querySelector(".badge.active")),
    activate: Boolean(r.querySelector("button[aria-label^='Activate version']")),
    building: r.querySelector("button")?.disabled,
    lineage: r.querySelector(".lineage")?.textContent ?? null,
    mlflow: r.querySelector("a.mlflow-link")?.getAttribute("href") ?? null })));
  report.versions = versions;
  const target = report.rollout ? activeBefore
    : versions.find((v) => !v.active && v.activate && !v.building)?.version;
  if (target === undefined) {
    // Training was rejected and no other version can serve: nothing to activate (the active
    // version has no Activate button).
    step("activated", { version: null, versions });
    report.activated = null;
  } else {
  const activateButton = page.getByRole("button", { name: `Activate version ${target}`, exact: true });
  await activateButton.focus();
  await page.keyboard.press("Enter");
  await page.locator("dialog[open]").waitFor();
  await shot("models-confirm");
  await page.keyboard.press("Escape");
  await page.locator("dialog[open]").waitFor({ state: "detached" });
  const focusBack = await page.evaluate(() => document.activeElement?.getAttribute("aria-label"));
  await activateButton.click();
  await page.getByRole("button", { name: `Activate v${target}`, exact: true }).click();
  await page.waitForFunction((v) => document.querySelector("#toast")?.textContent.startsWith(`Version ${v} is active`), target);
  await page.waitForFunction((v) => document.querySelector("#active-version")?.textContent === v, target);
  step("activated", { version: target, versions, focus_after_escape: focusBack });
  const after = await search(options.query);
  step("search after activation", after);
  report.activated = target;
  report.search_after = after;
  if (after.model_version !== target) throw new Error(`search answered with ${after.model_version}, not ${target}`);
  }

  // 6. Dead letters: from the overview's link of the topic, its letters only; inspect a letter;
  //    redrive the topic (with its confirmation).
  if (options.dlqTopic) {
    await go("Overview");
    await page.locator("section[aria-labelledby=h-dead] a.dlq-link", { hasText: options.dlqTopic }).first().click();
    await page.waitForFunction((t) => location.hash === `#/dlq/${encodeURIComponent(t)}`, options.dlqTopic);
    await page.locator("section[data-topic]").first().waitFor({ timeout: 60_000 });
    step("dead letters of a topic", { topics: await page.locator("section[data-topic]").evaluateAll(
      (sections) => sections.map((x) => x.dataset.topic)), heading: await page.locator("#page h2").textContent() });
  } else {
    await go("Dead letters");
  }
  await page.locator("section[data-topic]").first().waitFor({ timeout: 60_000 });
  const section = options.dlqTopic ? page.locator(`section[data-topic="${options.dlqTopic}"]`) : page.locator("section[data-topic]").first();
  // The letter with the given key when there is one (other letters may be listed first).
  const rows = options.letterKey ? section.locator("tr", { hasText: options.letterKey }) : section;
  const inspect = rows.getByRole("button", { name: /^Inspect letter/ });
  const letters = await inspect.count();
  let letter = null;
  if (letters) {
    await inspect.first().click();
    await page.locator("#letter pre").first().waitFor();
    letter = { error: await page.locator("#letter p").first().textContent(),
      value: await page.locator("#letter pre").last().textContent() };
  }
  step("dead letters", { topics: await page.locator("section[data-topic]").count(), letters, letter });
  await shot("dlq");
  if (options.dlqTopic) {
    await section.getByRole("button", { name: `Redrive ${options.dlqTopic}`, exact: true }).click();
    await page.locator("dialog[open]").waitFor();
    await shot("dlq-confirm");
    await page.locator("dialog[open]").getByRole("button", { name: "Redrive", exact: true }).click();
    await page.waitForFunction((t) => document.querySelector("#toast")?.textContent.includes(`redriven from ${t}`),
      options.dlqTopic, { timeout: 120_000 });
    const toast = await page.locator("#toast").textContent();
    report.redrive = { topic: options.dlqTopic, toast, redriven: Number(toast.split(" ")[0]) };
    step("redriven", report.redrive);
  }

  // 7. Keyboard: the skip link comes first, nav links are reachable and work with Enter.
  await page.reload();
  await page.locator("nav").waitFor();
  await page.keyboard.press("Tab");
  const firstFocus = await page.evaluate(() => document.activeElement?.textContent);
  await page.keyboard.press("Enter"); // the skip link focuses the content, the page stays
  const afterSkip = await page.evaluate(() => [document.activeElement?.id, location.hash]);
  await page.getByRole("link", { name: "Overview", exact: true }).focus();
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => location.hash === "#/overview");
  step("keyboard", { first_tab_stop: firstFocus, after_skip: afterSkip });

  // 8. The metrics chart and A/B split with three versions and a split in force, which the real
  //    stack above does not have at this point: this one view answers /v1/models from a stub;
  //    it is saved as models-chart-stubbed.png and changes nothing on the server.
  await page.route("**/v1/models", (r) => r.fulfill({ contentType: "application/json", body: JSON.stringify(STUB_MODELS) }));
  await go("Models");
  await page.locator(".chart svg rect").first().waitFor();
  step("models chart (stubbed /v1/models)", { bars: await page.locator(".chart svg rect").count(),
    split: await page.locator("#ab-split").textContent() });
  await shot("models-chart-stubbed");
  await page.unroute("**/v1/models");
  await go("Overview");

  // 9. A narrow screen (390x844): every page.
  await page.setViewportSize({ width: 390, height: 844 });
  for (const [name, label] of [["overview", "Overview"], ["search", "Search"], ["tasks", "Tasks"],
    ["models", "Models"], ["dlq", "Dead letters"]]) {
    await go(label);
    await page.waitForTimeout(name === "overview" ? 1500 : 800);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    step(`narrow ${name}`, { horizontal_overflow_px: overflow });
    await shot(`narrow-${name}`);
  }
  report.ok = true;
} catch (error) {
  report.error = String(error && error.stack || error);
  await shot("failure").catch(() => {});
} finally {
  await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}

process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
process.exit(report.ok && report.console_errors.length === 0 ? 0 : 1);
