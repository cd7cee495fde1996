// The cluster at a glance (aether-aggregator): nodes with state, lease, capacity, position and
// placements; the latest auctions with every bid and the winner; cluster events as they happen.
import {
  AuctionState,
  BidOutcome,
  ClusterEventKind,
  NodeLifecycle,
  NodeState,
  PlacementState,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { aggregator, nodeApi } from "./api";
import { ago, bytes, State, time, word } from "./format";
import { usePolled, useStream } from "./hooks";

export function ClusterScreen() {
  const nodes = usePolled(() => aggregator.listNodes({ pageSize: 1000 }), 2000);
  const placements = usePolled(() => aggregator.listPlacements({ pageSize: 1000 }), 3000);
  const auctions = usePolled(() => aggregator.listAuctions({ pageSize: 20 }), 2000);
  // Nodes by id, to show names where the records carry ids.
  const names = new Map(nodes.value?.nodes.map((n) => [n.id, n.name]) ?? []);
  const nodeName = (id: string) => names.get(id) ?? id;
  const events = useStream(
    (signal) => aggregator.streamClusterEvents({ start: { case: "tailEvents", value: 20 }, follow: true }, { signal }),
    50,
  );
  return (
    <>
      <h2>Nodes</h2>
      {nodes.error && <div class="error">{nodes.error}</div>}
      <table id="nodes">
        <thead>
          <tr>
            <th>NAME</th>
            <th>STATE</th>
            <th>LIFECYCLE</th>
            <th>LEASE</th>
            <th>HEARTBEAT</th>
            <th>LOAD (1m)</th>
            <th>MEMORY USED</th>
            <th>CPUS</th>
            <th>MEMORY</th>
            <th>CHASSIS/SLOT</th>
            <th>PLACEMENTS</th>
            <th>ADDRESS</th>
          </tr>
        </thead>
        <tbody>
          {nodes.value?.nodes.map((n) => (
            <tr key={n.id} data-node={n.name}>
              <td>
                <a href={`#/nodes/${encodeURIComponent(n.id)}`}>{n.name}</a>
              </td>
              <td>
                <State e={NodeState} v={n.state} />
              </td>
              <td>{word(NodeLifecycle, n.lifecycle)}</td>
              <td>{n.lease?.expireTime ? `expires ${ago(n.lease.expireTime)}` : ""}</td>
              <td>{ago(n.heartbeatTime)}</td>
              <NodeLoad id={n.id} />
              <td>{n.capabilities?.cpuCount ?? ""}</td>
              <td>{n.capabilities ? bytes(n.capabilities.memoryTotalBytes) : ""}</td>
              <td>{n.position?.chassis ? `${n.position.chassis}/${n.position.slot}` : ""}</td>
              <td>{n.placementCount}</td>
              <td>{n.address}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Placements</h2>
      {placements.error && <div class="error">{placements.error}</div>}
      <table id="placements">
        <thead>
          <tr>
            <th>WORKLOAD</th>
            <th>TENANT</th>
            <th>NODE</th>
            <th>STATE</th>
          </tr>
        </thead>
        <tbody>
          {placements.value?.placements.map((p) => (
            <tr key={`${p.tenant}/${p.workloadId}`}>
              <td>{p.workloadId}</td>
              <td>{p.tenant}</td>
              <td>{nodeName(p.node)}</td>
              <td>
                <State e={PlacementState} v={p.state} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Auctions</h2>
      {auctions.error && <div class="error">{auctions.error}</div>}
      <table id="auctions">
        <thead>
          <tr>
            <th>WORKLOAD</th>
            <th>STATE</th>
            <th>WINNER</th>
            <th>BIDS</th>
            <th>WHEN</th>
          </tr>
        </thead>
        <tbody>
          {auctions.value?.auctions.map((a) => (
            <tr key={a.id} data-auction={a.id}>
              <td>{a.workloadId}</td>
              <td>
                <State e={AuctionState} v={a.state} />
                {a.stateReason ? ` (${a.stateReason})` : ""}
              </td>
              <td class="winner">{nodeName(a.winner)}</td>
              <td class="bids">
                {a.bids.map((b) => (
                  <div key={b.node}>
                    {nodeName(b.node)}: {word(BidOutcome, b.outcome)} score {b.score}
                    {b.error ? ` (${b.error})` : ""}
                  </div>
                ))}
              </td>
              <td>{ago(a.createTime)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Events</h2>
      {events.error && <div class="error">{events.error}</div>}
      <ul class="events" id="events">
        {events.items.map(
          (r) =>
            r.event && (
              <li key={String(r.event.sequence)}>
                {time(r.event.time)} {word(ClusterEventKind, r.event.kind)} {nodeName(r.event.node)} {r.event.workloadId} {r.event.message}
              </li>
            ),
        )}
      </ul>
    </>
  );
}

/** A node's load and memory in use, asked of the node itself (its telemetry) every 5 s. */
function NodeLoad({ id }: { id: string }) {
  const t = usePolled(() => nodeApi(id).observe.getTelemetry({}), 5000, [id]).value?.telemetry;
  if (t === undefined)
    return (
      <>
        <td />
        <td />
      </>
    );
  return (
    <>
      <td class="load">{t.loadAverage1m.toFixed(2)}</td>
      <td class="memory">
        {bytes(t.memoryTotalBytes - t.memoryAvailableBytes)} of {bytes(t.memoryTotalBytes)}
      </td>
    </>
  );
}
