// Ulysses (DeepSpeed): an all-to-all turns sequence shards into head shards, each host runs exact
// causal attention over the whole sequence for its heads, and a second all-to-all turns it back.

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

/** Ulysses sequence parallelism (all-to-all over heads). */
export function ulysses(): Strategy {
  return {
    name: "ulysses",
    params: {},
    communication: { pattern: "alltoall", overlapSteps: false },
    plan({ hosts, contextTokens, model }) {
      if (model.heads % hosts !== 0 || model.kvHeads % hosts !== 0) {
        throw new PlanError(
          `ulysses: ${hosts} hosts must divide both ${model.heads} query heads and ` +
            `${model.kvHeads} KV heads; choose hosts among the common divisors`,
        );
      }
      if (contextTokens < hosts) {
        throw new PlanError(`ulysses: ${hosts} hosts need at least as many tokens`);
      }
      const { block, pad } = blocks(contextTokens, hosts);
      const perHost = model.heads / hosts;
      const all = Array.from({ length: hosts }, (_, r) => r);
      return all.map((h): HostPlan => {
        const real = h === hosts - 1 ? block - pad : block;
        const segments: Segment[] = [{
          ...contextSegment("block", "block", h * block, real),
          keep: true,
        }];
        if (h === hosts - 1 && pad > 0) segments.push(padSegment(pad));
        const tasks = [{
          queries: all.map((host) => ({ host, segment: "block" })),
          heads: [h * perHost, perHost] as [number, number],
          kv: all.map((host) => causal(host, "block")),
        }];
        return { segments, tasks };
      });
    },
  };
}
