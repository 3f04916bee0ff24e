// Star Attention (phase 1): every host but the first prefixes its block with an anchor, the first
// `anchor` context tokens at their own positions, and attends causally to [anchor | block] with no
// communication. Approximate; the anchor is the block length by default.

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

/** Options of {@linkcode star}. */
export interface StarOptions {
  /** Anchor length l_a; defaults to the block length. */
  anchor?: number;
}

/** Star Attention. */
export function star(options: StarOptions = {}): Strategy {
  return {
    name: "star",
    params: { ...options },
    communication: { pattern: "none", overlapSteps: false },
    plan({ hosts, contextTokens }) {
      if (contextTokens < hosts) {
        throw new PlanError(
          `star: ${hosts} hosts need at least as many tokens, got ${contextTokens}`,
        );
      }
      const { block, pad } = blocks(contextTokens, hosts);
      const anchor = options.anchor ?? block;
      if (anchor < 0 || anchor > block) {
        throw new PlanError(`star: anchor ${anchor} must be between 0 and the block (${block})`);
      }
      return Array.from({ length: hosts }, (_, h): HostPlan => {
        const real = h === hosts - 1 ? block - pad : block;
        const segments: Segment[] = [];
        if (h > 0 && anchor > 0) segments.push(contextSegment("anchor", "anchor", 0, anchor));
        segments.push({ ...contextSegment("block", "block", h * block, real), keep: true });
        if (h === hosts - 1 && pad > 0) segments.push(padSegment(pad));
        const own = segments.filter((s) => s.role !== "pad").map((s) => s.name);
        const tasks = [{
          queries: own.map((segment) => ({ host: h, segment })),
          kv: own.map((segment) => causal(h, segment)),
        }];
        return { segments, tasks };
      });
    },
  };
}
