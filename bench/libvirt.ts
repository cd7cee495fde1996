// libvirt from Debian as the baseline a user would otherwise pick: installed and started by the
// bench (no systemd here: virtlogd and libvirtd are started as daemons), driven with virsh.
import { execFileSync, spawnSync } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";

const virsh = (...args: string[]) => spawnSync("virsh", ["-c", "qemu:///system", ...args], { encoding: "utf8" });

/** Makes libvirtd answer on qemu:///system, installing and configuring it as its package would. */
export function ensureLibvirt(): void {
  if (spawnSync("sh", ["-c", "command -v virsh && command -v libvirtd"]).status !== 0) {
    execFileSync(
      "apt-get",
      ["install", "-y", "-qq", "--no-install-recommends", "libvirt-daemon", "libvirt-daemon-driver-qemu", "libvirt-clients"],
      {
        env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
        stdio: "ignore",
      },
    );
  }
  // What libvirt-daemon-system's maintainer scripts would do: the qemu user, and (no SELinux or
  // AppArmor here) no security driver.
  const sh = (cmd: string) => spawnSync("sh", ["-c", cmd], { stdio: "ignore" });
  sh(
    "getent group kvm || groupadd --system kvm; getent group libvirt-qemu || groupadd --system libvirt-qemu; id libvirt-qemu || useradd --system --no-create-home -g libvirt-qemu -G kvm libvirt-qemu",
  );
  const conf = "/etc/libvirt/qemu.conf";
  if (!existsSync(conf) || !readFileSync(conf, "utf8").includes('security_driver = "none"'))
    appendFileSync(conf, '\nuser = "root"\ngroup = "root"\nsecurity_driver = "none"\n');
  for (const d of ["/var/log/libvirt", "/var/run/libvirt"]) mkdirSync(d, { recursive: true });
  if (virsh("version").status !== 0) {
    spawnSync("virtlogd", ["-d"]);
    spawnSync("libvirtd", ["-d"]);
    for (let i = 0; i < 50 && virsh("version").status !== 0; i++) spawnSync("sleep", ["0.1"]);
  }
  if (virsh("version").status !== 0) throw new Error(`libvirtd did not start: ${virsh("version").stderr}`);
}

/** A transient q35 domain booting the same kernel and initramfs, with the guest agent channel. */
export function domainXml(name: string, kernel: string, initrd: string): string {
  return `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type><kernel>${kernel}</kernel><initrd>${initrd}</initrd><cmdline>console=ttyS0 quiet no_timer_check</cmdline></os>
  <on_reboot>destroy</on_reboot>
  <devices><serial type='pty'/><channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel></devices>
</domain>`;
}

/** `virsh create`, then the guest agent's ping until it answers: the same "ready" aetherd waits for. */
export async function libvirtCreateToReady(name: string, xmlFile: string, xml: string): Promise<number> {
  writeFileSync(xmlFile, xml);
  const t = performance.now();
  const created = virsh("create", xmlFile);
  if (created.status !== 0) throw new Error(`virsh create failed: ${created.stderr}`);
  try {
    for (;;) {
      if (virsh("qemu-agent-command", name, '{"execute":"guest-ping"}').status === 0) return performance.now() - t;
      if (performance.now() - t > 120_000) throw new Error("the libvirt guest did not answer within 120 s");
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    virsh("destroy", name);
  }
}
