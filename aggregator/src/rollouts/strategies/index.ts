// The strategies by the name of their case in DeploymentStrategy.kind (unset: rolling).
import type { DeploymentStrategy } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { ab } from "./ab.js";
import { blueGreen } from "./blue-green.js";
import { canary } from "./canary.js";
import { immediate } from "./immediate.js";
import { rolling } from "./rolling.js";
import type { Strategy } from "./strategy.js";

export function strategyOf(s: DeploymentStrategy | undefined): Strategy {
  switch (s?.kind.case) {
    case "immediate":
      return immediate;
    case "canary":
      return canary;
    case "blueGreen":
      return blueGreen;
    case "ab":
      return ab;
    default:
      return rolling;
  }
}

export function strategyName(s: DeploymentStrategy | undefined): string {
  switch (s?.kind.case) {
    case "blueGreen":
      return "blue-green";
    case "immediate":
    case "canary":
    case "ab":
      return s.kind.case;
    default:
      return "rolling";
  }
}
