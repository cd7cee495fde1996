// Issue 20: the web console in a real browser (Debian's Chromium driven by playwright-core, no
// browser download) against a real aetherd that joined a real aether-aggregator on loopback, both
// through `aether ui` as an operator runs it. One browser and one TCG guest for the whole file.
// The cluster page lists the node (and opens its page) and an auction started from the CLI with
// its bids, the deployments page a deployment; a VM is started from its page, its console shows the
// guest's banner and a typed command's output, a command runs through the guest agent, and it is
// paused, resumed and stopped from the page; a tenant's console shows only that tenant's objects,
// and the server's sentence for another's; another Host header, another Origin, an unknown node
// and a request without the token are refused. The cluster page's screenshot is
// docs/ui-cluster.png, shown in README's "Web console" section.
import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { chromium, type Browser, type Page } from "playwright-core";
import { connect, vm as vmApi, type AetherClient } from "@aether/sdk";
import { eventually, repoRoot, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { createCa } from "./helpers/pki.js";
import { freePort } from "./helpers/net.js";
import { guestImage } from "./helpers/guest.js";
import { binDir, runCommand } from "./helpers/run.js";

const MiB = 1024n * 1024n;

/** `aether ui` running; resolves once it printed its URL. */
async function startUi(env: NodeJS.ProcessEnv, args: string[] = []): Promise<{ url: string; origin: string; child: ChildProcess }> {
  const child = spawn(join(binDir, "aether"), ["ui", "--listen", "127.0.0.1:0", ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
  const url = await eventually(() => /(http:\/\/127\.0\.0\.1:\d+\/\?token=\S+)/.exec(out)?.[1], 20_000, `aether ui prints its URL: ${out}`);
  return { url, origin: new URL(url).origin, child };
}

/** One raw HTTP request, with the headers given (a browser would not let us forge Host). */
function raw(
  origin: string,
  path: string,
  headers: Record<string, string>,
  method = "GET",
  body = "",
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${origin}${path}`, { method, headers }, (res) => {
      let text = "";
      res.on("data", (d: Buffer) => (text += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

describe("the web console (aether ui) in Chromium", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-ui-"));
  let agg: TestAggregator;
  let daemon: TestDaemon;
  let admin: AetherClient;
  let alice: AetherClient;
  let browser: Browser;
  let page: Page;
  let ui: { url: string; origin: string; child: ChildProcess };
  let tenantUi: { url: string; origin: string; child: ChildProcess };
  let pkiDir: string | undefined;
  const g = guestImage();

  before(async () => {
    // The app as `npm run build` makes it, from the sources under test (one esbuild run, about a second).
    execFileSync(process.execPath, [join(repoRoot, "ui", "build.mjs")], { stdio: "inherit" });
    const ca = createCa("ui-ca");
    pkiDir = ca.dir;
    const server = ca.issue("aetherd", { server: true });
    const port = await freePort();
    agg = await startAggregator({ dir: join(dir, "agg"), args: ["--lease-ttl-ms", "6000"] });
    const config = join(dir, "node.toml");
    writeFileSync(config, `[cluster]\naggregator = "unix://${agg.socket}"\nname = "ui-node"\n`);
    mkdirSync(join(dir, "node"));
    daemon = await startDaemon({
      dir: join(dir, "node"),
      args: [
        "--config",
        config,
        "--listen",
        `127.0.0.1:${port}`,
        "--tls-cert",
        server.cert,
        "--tls-key",
        server.key,
        "--tls-client-ca",
        ca.cert,
      ],
    });
    admin = await daemon.client();
    await eventually(
      async () => ((await agg.client.aggregator.listNodes({})).nodes.length === 1 ? true : undefined),
      20_000,
      "ui-node registers",
    );
    // Tenant a's user, with a client config of its own (XDG_CONFIG_HOME) as `aether pki issue user --write-config` writes it.
    const user = ca.issue("alice", { uri: "spiffe://test/tenant/a/user/alice" });
    const home = join(dir, "alice-config");
    mkdirSync(join(home, "aether"), { recursive: true });
    writeFileSync(
      join(home, "aether", "config.toml"),
      `address = "https://127.0.0.1:${port}"\nca = "${ca.cert}"\ncert = "${user.cert}"\nkey = "${user.key}"\n`,
    );
    alice = await connect({ address: `https://127.0.0.1:${port}`, tls: { ca: ca.cert, ...user } });
    await alice.runtime.startExecutable({ name: "alices-sleeper", argv: ["/bin/sleep", "600"] });
    await admin.vm.createVm({
      name: "web",
      acceleration: vmApi.Acceleration.TCG,
      profile: vmApi.VmProfile.EPHEMERAL,
      memoryBytes: 128n * MiB,
      vcpus: 1,
      guestAgent: true,
      boot: { source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "quiet" } } },
    });
    ui = await startUi({ AETHER_HOST: daemon.address, AETHER_AGGREGATOR: `unix://${agg.socket}` });
    tenantUi = await startUi({ XDG_CONFIG_HOME: home, AETHER_HOST: "", AETHER_AGGREGATOR: "" });
    browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"], headless: true });
    page = await (await browser.newContext({ viewport: { width: 1280, height: 860 } })).newPage();
  });

  after(async () => {
    await browser?.close();
    for (const u of [ui, tenantUi]) u?.child.kill("SIGTERM");
    alice?.close();
    if (admin) {
      await stopWorkloads(admin);
      for (const v of (await admin.vm.listVms({})).vms) await admin.vm.deleteVm({ vm: v.id, force: true }).catch(() => undefined);
      admin.close();
    }
    await daemon?.stop();
    daemon?.cleanup();
    await agg?.stop();
    rmSync(dir, { recursive: true, force: true });
    if (pkiDir !== undefined) rmSync(pkiDir, { recursive: true, force: true });
  });

  it("the cluster page lists the registered node and an auction started from the CLI with its bids and winner; deployments; a node's page", async () => {
    await page.goto(ui.url);
    await page.locator("#nodes tr[data-node='ui-node']").waitFor({ timeout: 15_000 });
    assert.match(await page.locator("#nodes tr[data-node='ui-node']").innerText(), /READY/);
    // Its load and memory in use, asked of the node through the aggregator's registry.
    await page.locator("#nodes tr[data-node='ui-node'] td.load", { hasText: /^\d+\.\d\d$/ }).waitFor({ timeout: 10_000 });
    assert.match(await page.locator("#nodes tr[data-node='ui-node'] td.memory").innerText(), /^[\d.]+ [MG]iB of [\d.]+ GiB$/);
    const deployed = await runCommand(
      "aether",
      ["cluster", "deploy", "from-the-cli", "--cpu", "10", "--memory", "1M", "--", "/bin/sleep", "600"],
      {
        env: { AETHER_AGGREGATOR: `unix://${agg.socket}` },
      },
    );
    assert.equal(deployed.code, 0, deployed.stderr);
    const auction = /auction ([0-9a-f-]{36})/.exec(deployed.stdout)?.[1];
    const row = page.locator(`#auctions tr[data-auction='${auction}']`);
    await row.waitFor({ timeout: 10_000 }).catch(async (err: Error) => {
      throw new Error(`${err.message}\nthe page shows:\n${await page.locator("main").innerText()}`);
    });
    assert.equal(await row.locator(".winner").innerText(), "ui-node", "the winner, by name");
    assert.match(await row.locator(".bids").innerText(), /^ui-node: BID score \d+$/, "its one bid");
    await page.locator("#events li").first().waitFor({ timeout: 10_000 });
    await page.locator("#placements td", { hasText: "ui-node" }).waitFor({ timeout: 10_000 });
    await page.screenshot({ path: join(repoRoot, "docs", "ui-cluster.png") });
    // Deployments, read-only.
    await agg.client.aggregator.createDeployment({
      deployment: {
        name: "sleepers",
        instances: 1,
        template: {
          requirements: { cpuMillis: 10, memoryBytes: 1n << 20n },
          kind: { case: "executable", value: { argv: ["/bin/sleep", "600"] } },
        },
      },
    });
    await page.locator("nav a", { hasText: "Deployments" }).click();
    await page.locator("#deployments tr", { hasText: "sleepers" }).locator(".state-AVAILABLE").waitFor({ timeout: 20_000 });
    await page.locator("nav a", { hasText: "Cluster" }).click();
    // A node of the cluster, reached through the address the aggregator registered for it.
    await page.locator("#nodes a", { hasText: "ui-node" }).click();
    await page.locator("#vms tr[data-vm='web']").waitFor({ timeout: 10_000 });
    assert.match(page.url(), /#\/nodes\/[0-9a-f-]{36}$/);
  });

  it("a VM started from its page becomes RUNNING; its console shows the banner and a typed command's output; exec, pause, resume and stop from the page", async () => {
    await page.goto(`${ui.origin}/#/vm/web`);
    await page.getByRole("button", { name: "Start" }).click();
    await page.locator("h2 .state-RUNNING").waitFor({ timeout: 60_000 });
    await page.locator("#open-console").click();
    const screen = page.locator("#console .xterm-rows");
    await eventually(
      async () => ((await screen.innerText()).includes("aether-guest: ready") ? true : undefined),
      90_000,
      "the guest's banner",
    );
    await page.locator("#console").click();
    await page.keyboard.type("echo from-the-browser-$((6*7))");
    await page.keyboard.press("Enter");
    await eventually(
      async () => ((await screen.innerText()).includes("from-the-browser-42") ? true : undefined),
      20_000,
      "the command's output",
    );
    // A command through the guest agent, from the page.
    await eventually(
      async () => ((await page.getByRole("button", { name: "Run" }).isEnabled()) ? true : undefined),
      60_000,
      "the guest agent",
    );
    await page.locator("#command").fill("echo exec-$((2+3))");
    await page.getByRole("button", { name: "Run" }).click();
    await page.locator("#exec-output", { hasText: "exec-5" }).waitFor({ timeout: 30_000 });
    assert.match(await page.locator("#exec-output").innerText(), /^exit 0\nexec-5/);
    await page.getByRole("button", { name: "Pause" }).click();
    await page.locator("h2 .state-PAUSED").waitFor({ timeout: 20_000 });
    await page.getByRole("button", { name: "Resume" }).click();
    await page.locator("h2 .state-RUNNING").waitFor({ timeout: 20_000 });
    await page.getByRole("button", { name: "Stop" }).click();
    await page.locator("h2 .state-STOPPED").waitFor({ timeout: 60_000 });
    assert.equal((await admin.vm.getVm({ vm: "web" })).vm?.state, vmApi.VmState.STOPPED);
  });

  it("a tenant's console shows its own objects and not the others', and no cluster views without an aggregator", async () => {
    // The same browser profile as the operator's page: two consoles on one host keep their own cookies.
    const tenantPage = await page.context().newPage();
    await tenantPage.goto(tenantUi.url);
    await tenantPage.locator("#executables td", { hasText: "alices-sleeper" }).waitFor({ timeout: 15_000 });
    assert.equal(await tenantPage.locator("#vms tr[data-vm='web']").count(), 0, "the default tenant's VM is not shown");
    assert.equal(await tenantPage.locator("nav a", { hasText: "Cluster" }).count(), 0);
    // What the server refuses shows as its sentence: another tenant's VM is not found.
    await tenantPage.goto(`${tenantUi.origin}/#/vm/web`);
    assert.match(await tenantPage.locator(".error").innerText({ timeout: 10_000 }), /^no VM with id or name "web" in tenant a/);
    await page.goto(`${ui.origin}/#/node`);
    await page.locator("#vms tr[data-vm='web']").waitFor({ timeout: 10_000 });
    await tenantPage.close();
  });

  it("another Host header, another Origin and a request without the token are refused", async () => {
    const host = new URL(ui.origin).host;
    const cookie = (await page.context().cookies()).map((c) => `${c.name}=${c.value}`).join("; ");
    const call = (headers: Record<string, string>) =>
      raw(ui.origin, "/api/node/aether.vm.v1.VmService/ListVms", { "content-type": "application/json", ...headers }, "POST", "{}");
    assert.equal((await call({ cookie })).status, 200, "the page's own call passes");
    const rebinding = await call({ cookie, host: `evil.example:${new URL(ui.origin).port}` });
    assert.equal(rebinding.status, 421);
    assert.match(rebinding.text, /answers only to Host/);
    const crossOrigin = await call({ cookie, host, origin: "http://evil.example" });
    assert.equal(crossOrigin.status, 403);
    const unknownNode = await raw(
      ui.origin,
      "/api/nodes/nope/aether.vm.v1.VmService/ListVms",
      { cookie, "content-type": "application/json" },
      "POST",
      "{}",
    );
    assert.equal(unknownNode.status, 404, "the page cannot name a node the aggregator does not have");
    assert.match(unknownNode.text, /the aggregator has no node nope/);
    const noToken = await raw(ui.origin, "/", {});
    assert.equal(noToken.status, 401);
    assert.doesNotMatch(noToken.text, /app\.js/, "no page without the token");
    assert.equal((await call({})).status, 401);
    assert.equal((await raw(ui.origin, "/?token=wrong", {})).status, 401);
  });
});
