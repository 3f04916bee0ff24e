// Ring attention: host h holds block h; at step s it attends to the block of host h − s, which
// arrived from its neighbour while step s − 1 computed. Exact; host h does h + 1 block pairs.

import { PlanError } from "../errors.ts";
import {
  blocks,
  causal,
  contextSegment,
  type HostPlan,
  padSegment,
  type Segment,
  type Strategy,
} from "./strategy.ts";

/** Ring attention over contiguous blocks. */
export function ring(): Strategy {
  return {
    name: "ring",
    params: {},
    communication: { pattern: "ring", overlapSteps: true },
    plan({ hosts, contextTokens }) {
      if (contextTokens < hosts) {
        throw new PlanError(
          `ring: ${hosts} hosts need at least as many tokens, got ${contextTokens}`,
        );
      }
      const { block, pad } = blocks(contextTokens, hosts);
      return Array.from({ length: hosts }, (_, h): HostPlan => {
        const real = h === hosts - 1 ? block - pad : block;
        const segments: Segment[] = [{
          ...contextSegment("block", "block", h * block, real),
          keep: true,
        }];
        if (h === hosts - 1 && pad > 0) segments.push(padSegment(pad));
        const tasks = Array.from({ length: h + 1 }, (_, step) => ({
          queries: [{ host: h, segment: "block" }],
          kv: [causal(h - step, "block")],
          step,
        }));
        return { segments, tasks };
      });
    },
  };
}
