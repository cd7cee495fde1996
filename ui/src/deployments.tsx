// Deployments on the aggregator: read-only, with their instances and state.
import { DeploymentState } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { aggregator } from "./api";
import { State } from "./format";
import { usePolled } from "./hooks";

export function DeploymentsScreen() {
  const list = usePolled(() => aggregator.listDeployments({ pageSize: 1000 }), 2000);
  return (
    <>
      <h2>Deployments</h2>
      {list.error && <div class="error">{list.error}</div>}
      <table id="deployments">
        <thead>
          <tr>
            <th>NAME</th>
            <th>TENANT</th>
            <th>STATE</th>
            <th>INSTANCES</th>
            <th>RUNNING</th>
            <th>PENDING</th>
            <th>REVISION</th>
          </tr>
        </thead>
        <tbody>
          {list.value?.deployments.map((d) => (
            <tr key={d.id}>
              <td>{d.name}</td>
              <td>{d.tenant}</td>
              <td>
                <State e={DeploymentState} v={d.state} />
                {d.stateReason ? ` (${d.stateReason})` : ""}
              </td>
              <td>{d.instances}</td>
              <td>{d.runningInstances}</td>
              <td>{d.pendingInstances}</td>
              <td>{String(d.revision)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}
