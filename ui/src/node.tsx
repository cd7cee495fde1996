// One node (the aetherd `aether ui` talks to): its VMs, executables, cells, volumes, pools and
// images, refreshed every two seconds, and its events live.
import { VmState } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { CellState } from "@aether/sdk/gen/aether/cells/v1/cells_pb";
import { ImageState, PoolDriver, VolumeState } from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import { nodeApi } from "./api";
import { bytes, State, time, word } from "./format";
import { usePolled, useStream } from "./hooks";

export function NodeScreen({ node }: { node?: string }) {
  const api = nodeApi(node);
  const info = usePolled(() => api.node.getNodeInfo({}), 10000);
  const vms = usePolled(() => api.vm.listVms({ pageSize: 1000 }), 2000);
  const exes = usePolled(() => api.runtime.listExecutables({ pageSize: 1000 }), 2000);
  const cells = usePolled(() => api.cells.listCells({ pageSize: 1000 }), 4000);
  const volumes = usePolled(() => api.storage.listVolumes({ pageSize: 1000 }), 4000);
  const pools = usePolled(() => api.storage.listPools({ pageSize: 1000 }), 4000);
  const images = usePolled(() => api.storage.listImages({ pageSize: 1000 }), 4000);
  const events = useStream((signal) => api.observe.streamEvents({}, { signal }), 30);
  const errors = [info, vms, exes, cells, volumes, pools, images].map((x) => x.error).filter((e) => e !== undefined);
  return (
    <>
      <h2>Node {info.value?.node?.hostname}</h2>
      {[...new Set(errors)].map((e) => (
        <div class="error">{e}</div>
      ))}
      <h2>VMs</h2>
      <table id="vms">
        <thead>
          <tr>
            <th>NAME</th>
            <th>TENANT</th>
            <th>STATE</th>
            <th>VCPUS</th>
            <th>MEMORY</th>
            <th>AGENT</th>
          </tr>
        </thead>
        <tbody>
          {vms.value?.vms.map((v) => (
            <tr key={v.id} data-vm={v.name}>
              <td>
                <a href={`${node === undefined ? "#" : `#/nodes/${encodeURIComponent(node)}`}/vm/${encodeURIComponent(v.name)}`}>
                  {v.name}
                </a>
              </td>
              <td>{v.tenant}</td>
              <td>
                <State e={VmState} v={v.state} />
              </td>
              <td>{v.vcpus}</td>
              <td>{bytes(v.memoryBytes)}</td>
              <td>{v.agentReady ? "ready" : ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Executables</h2>
      <table id="executables">
        <thead>
          <tr>
            <th>NAME</th>
            <th>TENANT</th>
            <th>STATE</th>
            <th>PID</th>
          </tr>
        </thead>
        <tbody>
          {exes.value?.executables.map((x) => (
            <tr key={x.id}>
              <td>{x.name}</td>
              <td>{x.tenant}</td>
              <td>
                <State e={ExecutableState} v={x.state} />
              </td>
              <td>{x.pid || ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Cells</h2>
      <table id="cells">
        <thead>
          <tr>
            <th>NAME</th>
            <th>TENANT</th>
            <th>STATE</th>
          </tr>
        </thead>
        <tbody>
          {cells.value?.cells.map((c) => (
            <tr key={c.id}>
              <td>{c.name}</td>
              <td>{c.tenant}</td>
              <td>
                <State e={CellState} v={c.state} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Volumes</h2>
      <table id="volumes">
        <thead>
          <tr>
            <th>NAME</th>
            <th>TENANT</th>
            <th>POOL</th>
            <th>SIZE</th>
            <th>STATE</th>
          </tr>
        </thead>
        <tbody>
          {volumes.value?.volumes.map((v) => (
            <tr key={v.id}>
              <td>{v.name}</td>
              <td>{v.tenant}</td>
              <td>{v.pool}</td>
              <td>{bytes(v.sizeBytes)}</td>
              <td>
                <State e={VolumeState} v={v.state} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Pools</h2>
      <table id="pools">
        <thead>
          <tr>
            <th>NAME</th>
            <th>DRIVER</th>
          </tr>
        </thead>
        <tbody>
          {pools.value?.pools.map((p) => (
            <tr key={p.name}>
              <td>{p.name}</td>
              <td>{word(PoolDriver, p.driver)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Images</h2>
      <table id="images">
        <thead>
          <tr>
            <th>NAME</th>
            <th>STATE</th>
          </tr>
        </thead>
        <tbody>
          {images.value?.images.map((i) => (
            <tr key={i.id}>
              <td>{i.name}</td>
              <td>
                <State e={ImageState} v={i.state} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Events</h2>
      {events.error && <div class="error">{events.error}</div>}
      <ul class="events" id="node-events">
        {events.items.map(
          (r, i) =>
            r.event && (
              <li key={i}>
                {time(r.event.time)} {r.event.kind} {r.event.resourceName} {r.event.message}
              </li>
            ),
        )}
      </ul>
    </>
  );
}
