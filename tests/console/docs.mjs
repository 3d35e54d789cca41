// Renders the gateway's API documentation pages in Debian's headless Chromium with every
// request to anywhere but the gateway blocked (aborted, and DNS mapped to nothing).
//   node tests/console/docs.mjs <gateway url> [page paths as JSON, default ["/docs"]]
// Prints one JSON object: per page the operations it lists, the requests it tried outside
// the gateway, requests that failed and console errors. Exits 0 when every page listed
// operations and nothing outside was asked for, 1 otherwise.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, rawPages] = process.argv.slice(2);
if (!url) {
  console.error("usage: node docs.mjs <gateway url> [pages JSON]");
  process.exit(2);
}
const pages = rawPages ? JSON.parse(rawPages) : ["/docs"];
const origin = new URL(url).origin;
const report = { ok: false, pages: {} };
const userDataDir = mkdtempSync(join(tmpdir(), "flywheel-docs-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    `--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE ${new URL(url).hostname}`],
});
const outside = [];
await context.route("**/*", (route) => {
  const asked = route.request().url();
  if (asked.startsWith(origin) || asked.startsWith("data:") || asked.startsWith("blob:")) return route.continue();
  outside.push(asked);
  return route.abort("blockedbyclient");
});
try {
  for (const path of pages) {
    const page = await context.newPage();
    const seen = { operations: [], outside: [], failed: [], console_errors: [] };
    page.on("console", (msg) => { if (msg.type() === "error") seen.console_errors.push(msg.text()); });
    page.on("pageerror", (error) => seen.console_errors.push(`uncaught: ${error.message}`));
    page.on("requestfailed", (request) => seen.failed.push(`${request.url()}: ${request.failure()?.errorText}`));
    const before = outside.length;
    await page.goto(url + path, { waitUntil: "load", timeout: 30_000 });
    if (path.startsWith("/redoc")) {
      await page.waitForSelector("[data-section-id^='operation/'], [id^='operation/']", { timeout: 30_000 });
      seen.operations = await page.$$eval("[id^='operation/']", (els) => els.map((e) => e.id));
    } else {
      await page.waitForSelector(".opblock-summary", { timeout: 30_000 });
      seen.operations = await page.$$eval(".opblock-summary", (els) => els.map((e) => {
        const method = e.querySelector(".opblock-summary-method")?.textContent?.trim() ?? "";
        const route = e.querySelector(".opblock-summary-path")?.getAttribute("data-path")
          ?? e.querySelector(".opblock-summary-path")?.textContent?.trim() ?? "";
        return `${method} ${route}`.replace(/\u200b/g, "");
      }));
      seen.title = await page.$eval(".info .title", (e) => e.textContent.trim()).catch(() => null);
    }
    seen.outside = outside.slice(before);
    report.pages[path] = seen;
    await page.close();
  }
  report.ok = Object.values(report.pages).every((p) => p.operations.length > 0 && p.outside.length === 0);
} catch (error) {
  report.error = String(error?.stack || error);
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
console.log(JSON.stringify(report, null, 1));
process.exit(report.ok ? 0 : 1);
