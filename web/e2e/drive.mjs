// Drives headless Chromium (Debian's, through playwright-core) for
// browser_test.go. Protocol on stdout, one JSON object per line:
//   {"event":"ready","b":{...}}   page a is connected; page b (expired grant) is in its error state
//   {"event":"result","a":{...}}  after "expect N" on stdin: page a's records, copies, stats, statuses
// Diagnostics go to stderr. Every wait has a deadline; any failure exits 1.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [base] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
  const open = async (who) => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    page.on("console", (m) => process.stderr.write(`[page ${who}] ${m.type()}: ${m.text()}\n`));
    page.on("pageerror", (e) => process.stderr.write(`[page ${who}] error: ${e}\n`));
    await page.goto(`${base}/index.html?who=${who}`);
    return page;
  };
  const a = await open("a");
  const b = await open("b");
  const hook = await open("hook");
  await a.waitForFunction(() => window.__sy && window.__sy.room.status === "fallback", null, { timeout: 30000, polling: 50 });
  await hook.waitForFunction(() => window.__hook && window.__hook.status === "fallback", null, { timeout: 30000, polling: 50 });
  await b.waitForFunction(() => window.__sy && window.__sy.room.status === "error", null, { timeout: 30000, polling: 50 });
  const bState = await b.evaluate(() => ({
    status: window.__sy.room.status,
    error: { code: window.__sy.room.error?.code, status: window.__sy.room.error?.status, message: window.__sy.room.error?.message },
    statuses: window.__sy.statuses,
  }));
  out({ event: "ready", a: await a.evaluate(() => ({ status: window.__sy.room.status, visibility: window.__sy.hidden() })), b: bState });

  const { value } = await lines.next();
  const n = Number(String(value).split(" ")[1]);
  try {
    await a.waitForFunction((n) => window.__sy.records.length >= n && window.__sy.room.pending().messages === 0, n, { timeout: 45000, polling: 100 });
  } catch (e) {
    process.stderr.write(`waiting for ${n} messages: ${e}\n`);
  }
  // Let every receipt's window pass (the second copies arrive), then send them.
  await a.waitForFunction(() => window.__sy.room.pending().receipts === 0 || window.__sy.room.stats().receipts.finished >= window.__sy.records.length, null, { timeout: 20000, polling: 100 }).catch(() => {});
  await a.evaluate(() => window.__sy.room.flushReceipts());
  const res = await a.evaluate(() => ({
    records: window.__sy.records,
    copies: window.__sy.copies,
    stats: window.__sy.room.stats(),
    statuses: window.__sy.statuses,
    status: window.__sy.room.status,
    visibility: window.__sy.hidden(),
  }));
  await hook.waitForFunction((n) => window.__hook.seqs.length >= n, n, { timeout: 20000, polling: 100 }).catch((e) => process.stderr.write(`hook page: ${e}\n`));
  const hookRes = await hook.evaluate(() => ({ status: window.__hook.status, seqs: window.__hook.seqs, text: document.getElementById("hook")?.textContent }));
  out({ event: "result", a: res, hook: hookRes });
} finally {
  await browser.close();
}
