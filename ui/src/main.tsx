// The web console's entry: reads what `aether ui` talks to, then routes on the URL's hash
// (#/cluster, #/node, #/vm/NAME, #/deployments). Cluster screens exist only with an aggregator.
import "@xterm/xterm/css/xterm.css";
import "./style.css";
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { loadConfig, sentence, type UiConfig } from "./api";
import { ClusterScreen } from "./cluster";
import { NodeScreen } from "./node";
import { VmScreen } from "./vm";
import { DeploymentsScreen } from "./deployments";

function useHash(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return hash;
}

function App() {
  const [config, setConfig] = useState<UiConfig>();
  const [error, setError] = useState<string>();
  const hash = useHash();
  useEffect(() => void loadConfig().then(setConfig, (err) => setError(sentence(err))), []);
  if (error !== undefined) return <div class="error">{error}</div>;
  if (config === undefined) return <div class="busy">loading…</div>;
  const clustered = config.cluster !== null;
  const route = hash.replace(/^#\/?/, "") || (clustered ? "cluster" : "node");
  const [screen, arg] = [route.split("/")[0], decodeURIComponent(route.split("/").slice(1).join("/"))];
  const link = (to: string, label: string) => (
    <a href={`#/${to}`} class={screen === to ? "here" : ""}>
      {label}
    </a>
  );
  return (
    <>
      <nav>
        <strong style="color:#fff">Aether</strong>
        {clustered && link("cluster", "Cluster")}
        {link("node", "Node")}
        {clustered && link("deployments", "Deployments")}
        <span class="peer">
          {config.node}
          {clustered ? ` · ${config.cluster}` : ""}
        </span>
      </nav>
      <main>
        {screen === "cluster" && clustered && <ClusterScreen />}
        {screen === "deployments" && clustered && <DeploymentsScreen />}
        {screen === "node" && <NodeScreen />}
        {screen === "vm" && <VmScreen name={arg} />}
        {screen === "nodes" && clustered && <ClusterNode path={arg} />}
      </main>
    </>
  );
}

/** #/nodes/ID (a cluster node) or #/nodes/ID/vm/NAME (a VM on it). */
function ClusterNode({ path }: { path: string }) {
  const [id, what, ...rest] = path.split("/");
  if (what === "vm") return <VmScreen node={id} name={rest.join("/")} />;
  return <NodeScreen node={id} />;
}

render(<App />, document.getElementById("app") as HTMLElement);
