// Dense: one host holds every token and attends causally. The baseline every strategy must match.

import { PlanError } from "../errors.ts";
import { causal, contextSegment, type Strategy } from "./strategy.ts";

/** Single-host causal attention over the whole context. */
export function dense(): Strategy {
  return {
    name: "dense",
    params: {},
    communication: { pattern: "none", overlapSteps: false },
    plan({ hosts, contextTokens }) {
      if (hosts !== 1) throw new PlanError(`dense runs on 1 host, not ${hosts}; use ring or apb`);
      const block = { ...contextSegment("block", "block", 0, contextTokens), keep: true };
      return [{
        segments: [block],
        tasks: [{ queries: [{ host: 0, segment: "block" }], kv: [causal(0, "block")] }],
      }];
    },
  };
}
