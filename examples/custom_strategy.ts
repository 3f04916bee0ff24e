// A strategy that is not built in, in one short file: "sink + window". Every host but the first
// holds the document's first `sink` tokens (attention sinks, like Star's anchor but short) in front
// of its block, and also attends to the last `window` tokens of the previous host's block, which
// that host sends over (one neighbour transfer a layer). Nothing else crosses hosts.
//
//   deno task run examples/tiny.ts --strategy examples/custom_strategy.ts --hosts 4 --tokens 256
//   deno task plan examples/tiny.ts --strategy examples/custom_strategy.ts --hosts 4 --svg sw.svg

import {
  type AttentionTask,
  blocks,
  causal,
  contextSegment,
  type HostPlan,
  type KvEntry,
  padSegment,
  PlanError,
  type Segment,
  type Strategy,
} from "../mod.ts";

/** Options of {@linkcode sinkWindow}. */
export interface SinkWindowOptions {
  /** Leading tokens every host keeps in front (default 4). */
  sink?: number;
  /** Trailing tokens of the previous host's block each host sees (default a quarter block). */
  window?: number;
}

/** The sink + window strategy. */
export function sinkWindow(options: SinkWindowOptions = {}): Strategy {
  return {
    name: "sink-window",
    params: { ...options },
    communication: { pattern: "neighbour", overlapSteps: false },
    plan({ hosts, contextTokens }) {
      const { block, pad } = blocks(contextTokens, hosts);
      const sink = Math.min(options.sink ?? 4, block);
      const window = Math.min(options.window ?? Math.floor(block / 4), block);
      if (sink < 0 || window < 0) throw new PlanError("sink-window: sizes must be ≥ 0");
      return Array.from({ length: hosts }, (_, h): HostPlan => {
        const real = h === hosts - 1 ? block - pad : block;
        const segments: Segment[] = [];
        const kv: KvEntry[] = [];
        if (h > 0 && sink > 0) {
          segments.push(contextSegment("sink", "anchor", 0, sink));
          kv.push(causal(h, "sink"));
        }
        segments.push({ ...contextSegment("block", "block", h * block, real), keep: true });
        if (h === hosts - 1 && pad > 0) segments.push(padSegment(pad));
        if (h > 0 && window > 0) {
          // The previous host's last `window` rows, skipping any the sink already covers.
          const from = Math.max(block - window, h === 1 ? sink : 0);
          const rows: [number, number] = [from, block - from];
          kv.push({ kv: { kind: "segment", host: h - 1, segment: "block", rows }, mask: "causal" });
        }
        kv.push(causal(h, "block"));
        const own = segments.filter((s) => s.role !== "pad").map((s) => ({
          host: h,
          segment: s.name,
        }));
        const tasks: AttentionTask[] = [{ queries: own, kv }];
        return { segments, tasks };
      });
    },
  };
}

/** `--strategy examples/custom_strategy.ts` loads this. */
export default sinkWindow;
