// The cost of mutual TLS plus authorization on the executable-start round trip (StartExecutable +
// WaitExecutable of /bin/true), interleaved on one daemon in one run:
//  - the unix socket as admin: no TLS, and the policy's first binding decides: the baseline;
//  - mutual TLS on loopback TCP as a cluster operator;
//  - mutual TLS as a tenant's user under a policy of 60 rules and groups, with the request held to
//    its tenant: every check a tenant's call goes through.
// Also the policy decision alone, in-process, per call.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type AetherClient } from "@aether/sdk";
import { decide, parsePolicy } from "../server/src/policy.js";
import { startDaemon } from "../test/helpers/daemon.js";
import { createCa } from "../test/helpers/pki.js";
import { ms, percentile } from "./stats.js";
import { freePort } from "../test/helpers/net.js";

export interface AuthzBenchResult {
  rows: string[][];
  /** p50 of the tenant's mTLS + policy path over the unix-socket baseline. */
  overheadRatio: number;
  /** p50 of the tenant's path over the operator's (both mTLS): what the policy and tenant scoping add. */
  policyRatio: number;
  decideMicros: number;
}

/** A policy of a realistic size: 20 groups, 40 rules, the caller's grant found after all of them. */
function bigPolicy(): string {
  const lines: string[] = ["[groups]"];
  for (let g = 0; g < 20; g++)
    lines.push(`team${g} = [${Array.from({ length: 5 }, (_, i) => `"spiffe://bench/tenant/t${g}/user/u${i}"`).join(", ")}]`);
  for (let r = 0; r < 40; r++) {
    lines.push(
      "[[rules]]",
      `effect = "${r % 2 === 0 ? "deny" : "allow"}"`,
      `members = ["group:team${r % 20}"]`,
      `methods = ["aether.vm.v1.VmService/${r % 2 === 0 ? "Delete" : "List"}*"]`,
    );
  }
  return `${lines.join("\n")}\n`;
}

export async function benchAuthz(iterations: number): Promise<AuthzBenchResult> {
  const dir = mkdtempSync(join(tmpdir(), "aether-bench-authz-"));
  const ca = createCa("bench-ca", dir);
  const server = ca.issue("aetherd", { server: true });
  const policyText = bigPolicy();
  const policyPath = join(dir, "policy.toml");
  writeFileSync(policyPath, policyText);
  const port = await freePort();
  const daemon = await startDaemon({
    args: [
      "--listen",
      `127.0.0.1:${port}`,
      "--tls-cert",
      server.cert,
      "--tls-key",
      server.key,
      "--tls-client-ca",
      ca.cert,
      "--policy",
      policyPath,
    ],
  });
  const clients: AetherClient[] = [];
  try {
    const tls = (uri: string, name: string) => {
      const pair = ca.issue(name, { uri });
      return connect({ address: `https://127.0.0.1:${port}`, tls: { ca: ca.cert, cert: pair.cert, key: pair.key } });
    };
    const paths: Array<{ name: string; client: AetherClient; samples: number[] }> = [
      { name: "unix socket, admin (baseline)", client: await daemon.client(), samples: [] },
      { name: "mTLS, operator", client: await tls("spiffe://bench/user/op", "op"), samples: [] },
      { name: "mTLS, tenant user, 60-entry policy", client: await tls("spiffe://bench/tenant/t19/user/u4", "tenant"), samples: [] },
    ];
    clients.push(...paths.map((p) => p.client));
    const once = async (client: AetherClient) => {
      const { executable } = await client.runtime.startExecutable({ argv: ["/bin/true"], uid: 65534, gid: 65534 });
      await client.runtime.waitExecutable({ executable: executable?.id ?? "" });
      await client.runtime.deleteExecutable({ executable: executable?.id ?? "" });
    };
    for (let i = 0; i < 20; i++) for (const p of paths) await once(p.client); // warm-up
    for (let i = 0; i < iterations; i++) {
      for (const p of paths) {
        const t = performance.now();
        const { executable } = await p.client.runtime.startExecutable({ argv: ["/bin/true"], uid: 65534, gid: 65534 });
        await p.client.runtime.waitExecutable({ executable: executable?.id ?? "" });
        p.samples.push(performance.now() - t);
        await p.client.runtime.deleteExecutable({ executable: executable?.id ?? "" });
      }
    }
    const methods = [
      "aether.runtime.v1.ExecutableService/StartExecutable",
      "aether.vm.v1.VmService/DeleteVm",
      "aether.vm.v1.VmService/ListVms",
    ];
    const policy = parsePolicy(policyText, "bench", methods);
    const caller = { identity: "spiffe://bench/tenant/t19/user/u4", tenant: "t19" };
    const DECISIONS = 20_000;
    const t = performance.now();
    for (let i = 0; i < DECISIONS; i++) decide(policy, caller, methods[0] as string);
    const decideMicros = ((performance.now() - t) * 1000) / DECISIONS;
    const p50 = paths.map((p) => percentile(p.samples, 50));
    return {
      rows: paths.map((p) => [p.name, ms(percentile(p.samples, 50)), ms(percentile(p.samples, 99))]),
      overheadRatio: (p50[2] as number) / (p50[0] as number),
      policyRatio: (p50[2] as number) / (p50[1] as number),
      decideMicros,
    };
  } finally {
    clients.forEach((c) => c.close());
    await daemon.stop();
    daemon.cleanup();
  }
}
