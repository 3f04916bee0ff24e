// APB (arXiv 2502.12085): host h prefills its block behind an anchor (the document's start with the
// query embedded) and attends to the top-l_p rows of every earlier host's block, picked per KV head
// by a compressor and exchanged with one AllGather a layer. Passing rows live for one layer only.

import { PlanError } from "../errors.ts";
import {
  type AttentionTask,
  blocks,
  causal,
  contextSegment,
  type HostPlan,
  type KvEntry,
  padSegment,
  type Scorer,
  type Segment,
  type Strategy,
} from "./strategy.ts";

/** Options of {@linkcode apb}; defaults follow the paper's table scaled to the block length. */
export interface ApbOptions {
  /** Anchor length l_a (default b/4, b/8 beyond 256K tokens). */
  anchor?: number;
  /** Rows each host passes, l_p (default l_a/2, l_a beyond 256K); or one count per source host. */
  passing?: number | number[];
  /** Compressor (default: retaining heads, seeded random weights unless loaded). */
  scorer?: "retaining" | "query" | "random";
  /** Embed the query in the anchor (default true when a query is given). */
  queryInAnchor?: boolean;
  /** Token offset of the query inside the anchor (16 for Llama-3 chat, 24 Qwen, 0 Yi). */
  queryOffset?: number;
  /** Max-pool width over scores (default 5). */
  pool?: number;
  /** Hidden width of the retaining heads (default 1024). */
  retainingHidden?: number;
  /** Seed of the random scorer. */
  seed?: number;
  /** Reproduce the reference's bottom-right mask in the query pass and decoding. */
  parity?: boolean;
}

/** Default anchor and passing lengths for a block of `block` tokens out of `tokens`. */
export function apbDefaults(tokens: number, block: number): { anchor: number; passing: number } {
  const long = tokens > 256 * 1024;
  const anchor = Math.max(0, Math.floor(block / (long ? 8 : 4)));
  return { anchor, passing: long ? anchor : Math.floor(anchor / 2) };
}

/** The APB strategy. */
export function apb(options: ApbOptions = {}): Strategy {
  return {
    name: "apb",
    params: { ...options },
    communication: { pattern: "allgather", overlapSteps: false },
    parity: options.parity ?? false,
    plan({ hosts, contextTokens, queryTokens }) {
      if (contextTokens < hosts) {
        throw new PlanError(
          `apb: ${hosts} hosts need at least as many tokens, got ${contextTokens}`,
        );
      }
      const { block, pad } = blocks(contextTokens, hosts);
      const defaults = apbDefaults(contextTokens, block);
      const anchor = hosts === 1 ? 0 : options.anchor ?? defaults.anchor;
      const passing = (h: number) =>
        Array.isArray(options.passing)
          ? options.passing[h] ?? 0
          : options.passing ?? defaults.passing;
      const scorerName = options.scorer ?? "retaining";
      const scorer: Scorer = scorerName === "retaining"
        ? { kind: "retaining", hidden: options.retainingHidden ?? 1024 }
        : scorerName === "query"
        ? { kind: "query" }
        : { kind: "random", seed: options.seed ?? 0 };
      const embed = (options.queryInAnchor ?? true) && queryTokens > 0;
      const offset = options.queryOffset ?? 0;
      check(
        hosts,
        block,
        anchor,
        passing,
        embed ? queryTokens : 0,
        offset,
        scorerName,
        queryTokens,
      );

      return Array.from({ length: hosts }, (_, h): HostPlan => {
        const real = h === hosts - 1 ? block - pad : block;
        const segments: Segment[] = [];
        if (h > 0 && anchor > 0) {
          segments.push({
            name: "anchor",
            role: "anchor",
            count: anchor,
            source: embed ? { kind: "anchor", queryOffset: offset } : { kind: "context", start: 0 },
            position: 0,
          });
        }
        segments.push({ ...contextSegment("block", "block", h * block, real), keep: true });
        if (h === hosts - 1 && pad > 0) segments.push(padSegment(pad));
        // The query-aware scorer needs the query's own rows (and their q) on every host.
        if (scorer.kind === "query") {
          segments.push({
            name: "query",
            role: "query",
            count: queryTokens,
            source: { kind: "query" },
            position: contextTokens,
          });
        }
        const passed: KvEntry[] = [];
        for (let r = 0; r < h; r++) {
          if (passing(r) === 0) continue;
          passed.push({
            kv: {
              kind: "selected",
              host: r,
              segment: "block",
              count: passing(r),
              exclude: r === 0 ? anchor : 0,
              scorer,
              pool: options.pool ?? 5,
            },
            mask: "full",
          });
        }
        const own = (name: string) => ({ host: h, segment: name });
        const hasAnchor = h > 0 && anchor > 0;
        const tasks: AttentionTask[] = [];
        // Anchor rows see only the anchor (causally): they must not depend on passing rows.
        if (hasAnchor) tasks.push({ queries: [own("anchor")], kv: [causal(h, "anchor")] });
        const local = hasAnchor ? [causal(h, "anchor"), causal(h, "block")] : [causal(h, "block")];
        tasks.push({ queries: [own("block")], kv: [...passed, ...local] });
        if (scorer.kind === "query") {
          tasks.push({ queries: [own("query")], kv: [...local, causal(h, "query")] });
        }
        return { segments, tasks };
      });
    },
  };
}

function check(
  hosts: number,
  block: number,
  anchor: number,
  passing: (h: number) => number,
  embedded: number,
  offset: number,
  scorer: string,
  queryTokens: number,
): void {
  if (!["retaining", "query", "random"].includes(scorer)) {
    throw new PlanError(`apb: scorer "${scorer}" is unknown; use retaining, query or random`);
  }
  // l_a = b is allowed only with nothing passed from host 0 (Star Attention as a special case);
  // the passing check below refuses it otherwise.
  if (anchor < 0 || (hosts > 1 && anchor > block)) {
    throw new PlanError(
      `apb: anchor length ${anchor} must not exceed the block (${block} tokens per host)`,
    );
  }
  for (let h = 0; h < hosts - 1; h++) {
    const candidates = h === 0 ? block - anchor : block;
    const lp = passing(h);
    if (!Number.isInteger(lp) || lp < 0 || lp > candidates) {
      throw new PlanError(
        `apb: host ${h} passes ${lp} rows but has ${candidates} candidates ` +
          `(block ${block} − anchor ${h === 0 ? anchor : 0}); need 0 ≤ passing ≤ block − anchor`,
      );
    }
  }
  if (embedded > 0 && offset + embedded > anchor) {
    throw new PlanError(
      `apb: a query of ${embedded} tokens at offset ${offset} does not fit an anchor of ${anchor}; ` +
        `raise --anchor or lower the query offset`,
    );
  }
  if (scorer === "query" && queryTokens === 0) {
    throw new PlanError("apb: the query-aware scorer needs a query (--query N)");
  }
}
