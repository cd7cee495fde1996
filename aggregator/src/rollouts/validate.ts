// A deployment's strategy and endpoint checked at the edge (CreateDeployment, UpdateDeployment).
import { clone } from "@bufbuild/protobuf";
import {
  DeploymentStrategySchema,
  DeploymentTrafficSchema,
  type DeploymentStrategy,
  type DeploymentTraffic,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { invalidArgument, msOf } from "@aether/server";
import { validateCommandCheck } from "./command-health-validate.js";

const HEADER = /^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$/;

export function normalizeStrategy(field: string, input: DeploymentStrategy | undefined, instances: number): DeploymentStrategy | undefined {
  if (input === undefined || input.kind.case === undefined) return undefined;
  const s = clone(DeploymentStrategySchema, input);
  switch (s.kind.case) {
    case "rolling": {
      const { maxSurge, maxUnavailable } = s.kind.value;
      if (maxSurge > 1000 || maxUnavailable > 1000)
        throw invalidArgument(`${field}.rolling: max_surge ${maxSurge} and max_unavailable ${maxUnavailable} must each be at most 1000.`);
      break;
    }
    case "canary": {
      const c = s.kind.value;
      let previous = 0;
      for (const stage of c.stages) {
        if (stage <= previous || stage > 100)
          throw invalidArgument(
            `${field}.canary.stages ${c.stages.join(", ")}: give increasing percents of 1 to 100 (e.g. 5, 25, 50, 100).`,
          );
        previous = stage;
      }
      if (c.stages.length > 0 && previous !== 100)
        throw invalidArgument(
          `${field}.canary.stages ${c.stages.join(", ")} must end at 100: the last stage sends all traffic to the new revision.`,
        );
      if (c.hold && (msOf(c.hold) < 0 || msOf(c.hold) > 86_400_000)) throw invalidArgument(`${field}.canary.hold must be 0 to 24 hours.`);
      if (!(c.maxErrorRate >= 0 && c.maxErrorRate <= 1))
        throw invalidArgument(`${field}.canary.max_error_rate ${c.maxErrorRate} is a share: give 0 to 1 (0.01 is 1 %).`);
      if (!(c.maxLatencyRatio >= 0 && c.maxLatencyRatio <= 1000))
        throw invalidArgument(`${field}.canary.max_latency_ratio ${c.maxLatencyRatio}: give 0 (default 2) to 1000.`);
      break;
    }
    case "blueGreen": {
      const grace = s.kind.value.gracePeriod;
      if (grace && (msOf(grace) < 0 || msOf(grace) > 3_600_000))
        throw invalidArgument(`${field}.blue_green.grace_period must be 0 to 1 hour.`);
      break;
    }
    case "ab": {
      const a = s.kind.value;
      if ((a.header === "") === (a.cookie === ""))
        throw invalidArgument(`${field}.ab: give exactly one of header or cookie (what identifies a caller).`);
      if (!HEADER.test(a.header || a.cookie)) throw invalidArgument(`${field}.ab: ${a.header || a.cookie} is not a header or cookie name.`);
      if (a.percent < 1 || a.percent > 99)
        throw invalidArgument(`${field}.ab.percent ${a.percent}: give 1 to 99 (the share of callers sent to the new revision).`);
      break;
    }
    default:
      break;
  }
  void instances;
  return s;
}

export function normalizeTraffic(
  field: string,
  input: DeploymentTraffic | undefined,
  hasExecutable: boolean,
): DeploymentTraffic | undefined {
  if (input === undefined) return undefined;
  const t = clone(DeploymentTrafficSchema, input);
  if (!/^(\[[0-9a-fA-F:.]+\]|[0-9.]+|[a-z0-9.-]+):\d{1,5}$/.test(t.listen))
    throw invalidArgument(`${field}.listen ${JSON.stringify(t.listen)} is not host:port (e.g. 127.0.0.1:8080).`);
  if (t.node === "") throw invalidArgument(`${field}.node is empty: name the node that runs the endpoint (aether node list).`);
  if (!hasExecutable) throw invalidArgument(`${field} is for executables (each given a port); a VM template cannot have an endpoint yet.`);
  const { backendPortFirst: first, backendPortLast: last } = t;
  if (first < 1024 || last > 65535 || last < first)
    throw invalidArgument(
      `${field}.backend_port_first..backend_port_last ${first}..${last}: give a range within 1024..65535 (each instance takes one).`,
    );
  if (t.healthPath !== "" && !t.healthPath.startsWith("/"))
    throw invalidArgument(`${field}.health_path ${t.healthPath} must start with '/'.`);
  if (t.healthInterval && (msOf(t.healthInterval) < 100 || msOf(t.healthInterval) > 60_000))
    throw invalidArgument(`${field}.health_interval must be 100 ms to 60 s.`);
  if (t.commandCheck) validateCommandCheck(`${field}.command_check`, t.commandCheck, hasExecutable);
  return t;
}
