// The strategy API. A strategy answers two questions for each host: which tokens does it hold
// (segments with roles and global positions) and which keys and values does each attention read
// (local segments, other hosts' segments, or top-k rows picked by a compressor). The lowering turns
// the answers into kernels and collectives; a new strategy never needs a new kernel.

import type { ModelConfig } from "../config.ts";

/** Where a segment's token ids come from at run time. */
export type TokenSource =
  /** Context tokens [start, start + count). */
  | { kind: "context"; start: number }
  /**
   * The first `count` context tokens with the query (when given) inserted at `queryOffset`; the
   * prefix after it shifts right and its last |query| tokens drop out (APB's anchor).
   */
  | { kind: "anchor"; queryOffset: number }
  /** The query tokens. */
  | { kind: "query" }
  /** Padding: token id 0. */
  | { kind: "pad" };

/** Role of a segment; strategies may use their own names too. */
export type Role = "anchor" | "block" | "query" | "pad" | (string & Record<never, never>);

/** A run of consecutive local rows of one host. */
export interface Segment {
  /** Name, unique on its host; tasks refer to segments by it. */
  name: string;
  /** What the rows are for. */
  role: Role;
  /** Number of rows. */
  count: number;
  /** Token ids. */
  source: TokenSource;
  /** Position of the first row (rows are consecutive), or "zero" for padding. */
  position: number | "zero";
  /** Whether this host keeps the segment's KV after prefill (its share of the cache). */
  keep?: boolean;
}

/** How a compressor scores a host's rows before its top-k rows are passed on. */
export type Scorer =
  /** Locret retaining heads: W2·SiLU(W1·[q,k,v]) on pre-RoPE projections, per KV head. */
  | { kind: "retaining"; hidden: number }
  /** Training-free: mean over the query rows of k·q̄ (q̄: the query heads of a group averaged). */
  | { kind: "query" }
  /** Uniform random scores (the paper's "Rd." ablation). */
  | { kind: "random"; seed: number };

/** Keys and values an attention task reads. */
export type KvRef =
  /** Rows of a segment of `host` (this host or another); `rows` picks a sub-range. */
  | { kind: "segment"; host: number; segment: string; rows?: [start: number, count: number] }
  /**
   * The `count` rows of `host`'s segment `segment` (skipping its first `exclude` rows) that the
   * scorer ranks highest, per KV head, after a max-pool of width `pool` over the scores.
   */
  | {
    kind: "selected";
    host: number;
    segment: string;
    count: number;
    exclude: number;
    scorer: Scorer;
    pool: number;
  };

/**
 * One source of keys for a task and its mask. "causal" means a key is visible when its position is
 * at most the query's; the lowering resolves it from positions (whole blocks become full or vanish).
 * Selected rows have scattered positions and must be "full".
 */
export interface KvEntry {
  /** The keys and values. */
  kv: KvRef;
  /** Mask kind. */
  mask: "causal" | "full";
}

/** One attention computation run on a host: some queries against some keys. */
export interface AttentionTask {
  /** Query rows: segments (of any hosts) in order; results go back to their hosts. */
  queries: { host: number; segment: string }[];
  /** Query heads [start, count] (Ulysses splits heads); all heads when absent. */
  heads?: [start: number, count: number];
  /** Key sources. */
  kv: KvEntry[];
  /** Ring-style step: tasks of step s run after those of step s − 1; default 0. */
  step?: number;
}

/** A host's share of the work. */
export interface HostPlan {
  /** Its local rows, in order. */
  segments: Segment[];
  /** Attention tasks it runs (the same in every layer). */
  tasks: AttentionTask[];
}

/** What a strategy plans for. */
export interface StrategyContext {
  /** Number of hosts. */
  hosts: number;
  /** Context tokens (before the query). */
  contextTokens: number;
  /** Query tokens (the question), 0 when none is given. */
  queryTokens: number;
  /** The model. */
  model: ModelConfig;
}

/** How a strategy's communication behaves, for the modelled critical path. */
export interface Communication {
  /** Pattern, for display. */
  pattern: "none" | "ring" | "allgather" | "alltoall" | (string & Record<never, never>);
  /** Whether step s + 1's transfers overlap step s's compute (ring attention). */
  overlapSteps: boolean;
}

/** A parallel strategy: a name, parameters, and a planner. */
export interface Strategy {
  /** Name, e.g. "apb". */
  name: string;
  /** Parameters as plain data (recorded in the plan). */
  params: Record<string, unknown>;
  /** Communication pattern. */
  communication: Communication;
  /**
   * Decode and query passes after prefill are Star-Attention phase 2 for every strategy: each host
   * attends to its cache, partial results merge by log-sum-exp. With `parity`, non-last hosts use
   * the reference implementation's bottom-right causal mask instead of none.
   */
  parity?: boolean;
  /** Plans every host. */
  plan(ctx: StrategyContext): HostPlan[];
}

/** Rows of a context of n tokens split over H hosts: block b = ceil(n / H), the last padded. */
export function blocks(n: number, hosts: number): { block: number; pad: number } {
  const block = Math.ceil(n / hosts);
  return { block, pad: block * hosts - n };
}

/** A segment of context tokens [start, start + count) at their own positions. */
export function contextSegment(name: string, role: Role, start: number, count: number): Segment {
  return { name, role, count, source: { kind: "context", start }, position: start };
}

/** The padding segment of `count` rows (id 0, position 0). */
export function padSegment(count: number): Segment {
  return { name: "pad", role: "pad", count, source: { kind: "pad" }, position: "zero" };
}

/** Shorthand for a causal entry over a segment. */
export function causal(host: number, segment: string): KvEntry {
  return { kv: { kind: "segment", host, segment }, mask: "causal" };
}

/** Shorthand for a full (unmasked) entry over a segment. */
export function full(host: number, segment: string): KvEntry {
  return { kv: { kind: "segment", host, segment }, mask: "full" };
}
