// One VM: details, lifecycle buttons (start, stop, pause, resume, delete), exec through the guest
// agent, live migration to another aetherd with its progress, and the serial console.
import { useEffect, useRef, useState } from "preact/hooks";
import { Terminal } from "@xterm/xterm";
import { Acceleration, MigrationPhase, MigrationState, VmProfile, VmState } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { nodeApi, sentence } from "./api";
import { bytes, State, time, word } from "./format";
import { useAction, usePolled } from "./hooks";
import { attachConsole } from "./console";

export function VmScreen({ name, node }: { name: string; node?: string }) {
  const api = nodeApi(node);
  const got = usePolled(() => api.vm.getVm({ vm: name }), 1000, [name]);
  const action = useAction();
  const vm = got.value?.vm;
  const [consoleOpen, setConsoleOpen] = useState(false);
  const [command, setCommand] = useState("uname -a");
  const [output, setOutput] = useState<string>();
  const [target, setTarget] = useState("");
  const [migration, setMigration] = useState<string>();
  if (vm === undefined) return got.error ? <div class="error">{got.error}</div> : <div class="busy">loading {name}…</div>;
  const tenant = vm.tenant;
  const ref = { vm: vm.id, tenant };
  const running = vm.state === VmState.RUNNING;
  const exec = () =>
    action.run("running the command in the guest", async () => {
      const r = await api.vm.execVm({ ...ref, argv: ["/bin/sh", "-c", command], timeout: { seconds: 60n } });
      setOutput(`exit ${r.exitCode}\n${new TextDecoder().decode(r.stdout)}${new TextDecoder().decode(r.stderr)}`);
    });
  const migrate = () =>
    action.run(`migrating to ${target}`, async () => {
      const { migration: m } = await api.vm.migrateVm({ ...ref, target });
      if (m === undefined) return;
      for await (const w of api.vm.watchMigration({ migration: m.id, tenant })) {
        const x = w.migration;
        if (x === undefined) continue;
        setMigration(
          `${word(MigrationState, x.state)} ${word(MigrationPhase, x.phase)}: disk ${bytes(x.diskTransferredBytes)} sent, memory ${bytes(x.memoryTransferredBytes)} sent ${x.stateReason}`,
        );
        if (x.state === MigrationState.FAILED) throw new Error(x.stateReason);
      }
    });
  return (
    <>
      <h2>
        VM {vm.name} <State e={VmState} v={vm.state} />
      </h2>
      {vm.stateReason && <div>{vm.stateReason}</div>}
      {action.busy && <div class="busy">{action.busy}…</div>}
      {action.error && <div class="error">{action.error}</div>}
      <div id="actions">
        <button disabled={!!action.busy || running} onClick={() => action.run(`starting ${vm.name}`, () => api.vm.startVm(ref))}>
          Start
        </button>
        <button
          disabled={!!action.busy || !running}
          onClick={() => action.run(`stopping ${vm.name}`, () => api.vm.stopVm({ ...ref, timeout: { seconds: 30n } }))}
        >
          Stop
        </button>
        <button disabled={!!action.busy || !running} onClick={() => action.run(`pausing ${vm.name}`, () => api.vm.pauseVm(ref))}>
          Pause
        </button>
        <button
          disabled={!!action.busy || vm.state !== VmState.PAUSED}
          onClick={() => action.run(`resuming ${vm.name}`, () => api.vm.resumeVm(ref))}
        >
          Resume
        </button>
        <button
          disabled={!!action.busy}
          onClick={() =>
            confirm(`Delete ${vm.name}?`) &&
            action.run(`deleting ${vm.name}`, async () => {
              await api.vm.deleteVm({ ...ref, force: true });
              location.hash = node === undefined ? "#/node" : `#/nodes/${encodeURIComponent(node)}`;
            })
          }
        >
          Delete
        </button>
      </div>
      <table id="details">
        <tbody>
          <tr>
            <th>ID</th>
            <td>{vm.id}</td>
          </tr>
          <tr>
            <th>TENANT</th>
            <td>{vm.tenant}</td>
          </tr>
          <tr>
            <th>PROFILE</th>
            <td>{word(VmProfile, vm.profile)}</td>
          </tr>
          <tr>
            <th>ACCELERATION</th>
            <td>{word(Acceleration, vm.effectiveAcceleration)}</td>
          </tr>
          <tr>
            <th>VCPUS / MEMORY</th>
            <td>
              {vm.vcpus} / {bytes(vm.memoryBytes)}
            </td>
          </tr>
          <tr>
            <th>DISKS</th>
            <td>{vm.disks.map((d) => d.source.value ?? "").join(", ")}</td>
          </tr>
          <tr>
            <th>GUEST AGENT</th>
            <td>{vm.guestAgent ? (vm.agentReady ? "ready" : "not ready") : "off"}</td>
          </tr>
          <tr>
            <th>STARTED</th>
            <td>{time(vm.startTime)}</td>
          </tr>
        </tbody>
      </table>
      <h2>Exec</h2>
      <input id="command" value={command} onInput={(e) => setCommand((e.target as HTMLInputElement).value)} size={60} />
      <button disabled={!!action.busy || !vm.agentReady} onClick={exec}>
        Run
      </button>
      {output !== undefined && (
        <pre class="out" id="exec-output">
          {output}
        </pre>
      )}
      <h2>Migrate</h2>
      <input
        placeholder="https://other-node:7443"
        value={target}
        onInput={(e) => setTarget((e.target as HTMLInputElement).value)}
        size={40}
      />
      <button disabled={!!action.busy || !running || target === ""} onClick={migrate}>
        Migrate
      </button>
      {migration && <div>{migration}</div>}
      <h2>Console</h2>
      {consoleOpen ? (
        <Console vm={vm.id} tenant={tenant} node={node} />
      ) : (
        <button id="open-console" onClick={() => setConsoleOpen(true)}>
          Open console
        </button>
      )}
    </>
  );
}

function Console({ vm, tenant, node }: { vm: string; tenant: string; node: string | undefined }) {
  const box = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState("attaching…");
  useEffect(() => {
    const term = new Terminal({ convertEol: false, fontSize: 13, rows: 22 });
    term.open(box.current as HTMLDivElement);
    term.focus();
    const abort = new AbortController();
    setStatus("attached");
    attachConsole(term, { vm, tenant, node }, abort.signal).then(
      () => setStatus("the console ended (the VM stopped)"),
      (err) => abort.signal.aborted || setStatus(sentence(err)),
    );
    // The test and scripts read what the terminal shows through this element's text.
    (window as unknown as { aetherTerminal?: Terminal }).aetherTerminal = term;
    return () => {
      abort.abort();
      term.dispose();
    };
  }, [vm, tenant, node]);
  return (
    <>
      <div id="console-status">{status}</div>
      <div class="term" id="console" ref={box} />
    </>
  );
}
