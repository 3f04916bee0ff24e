// ZigZag ring attention: the context is cut into 2H chunks and host h holds chunks h and 2H − 1 − h,
// so every host does the same work at every ring step. Exact. Lengths that do not split into 2H
// chunks are padded at the end (the padding lands in the last chunks, the second chunks of hosts
// 0, 1, …, and is never attended).

import { PlanError } from "../errors.ts";
import {
  causal,
  contextSegment,
  type HostPlan,
  padSegment,
  type Segment,
  type Strategy,
} from "./strategy.ts";

/** Load-balanced ring attention. */
export function zigzag(): Strategy {
  return {
    name: "zigzag",
    params: {},
    communication: { pattern: "ring", overlapSteps: true },
    plan({ hosts, contextTokens }) {
      if (contextTokens < 2 * hosts) {
        throw new PlanError(
          `zigzag: ${hosts} hosts need at least ${
            2 * hosts
          } tokens (2 chunks each), got ${contextTokens}`,
        );
      }
      const chunk = Math.ceil(contextTokens / (2 * hosts));
      return Array.from({ length: hosts }, (_, h): HostPlan => {
        // Padding fills the last chunks, which are the back chunks of hosts 0, 1, ... in turn.
        const back = 2 * hosts - 1 - h;
        const backReal = Math.max(0, Math.min(chunk, contextTokens - back * chunk));
        const segments: Segment[] = [
          { ...contextSegment("front", "block", h * chunk, chunk), keep: true },
          { ...contextSegment("back", "block", back * chunk, backReal), keep: true },
        ];
        if (backReal < chunk) segments.push(padSegment(chunk - backReal));
        const tasks = Array.from({ length: hosts }, (_, step) => {
          const r = (h - step + hosts) % hosts;
          // Before r (r < h) both local chunks see r's front chunk; after r only our back chunk
          // sees anything of r. Causal masks resolve the rest from positions.
          const queries = r <= h ? ["front", "back"] : ["back"];
          return {
            queries: queries.map((segment) => ({ host: h, segment })),
            kv: [causal(r, "front"), causal(r, "back")],
            step,
          };
        });
        return { segments, tasks };
      });
    },
  };
}
