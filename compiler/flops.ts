// FLOP counting. The spec's convention (apb-spec.md §2.6), which reproduces the paper's numbers:
// linear layers cost 2·params·tokens (q, k, v, o, gate, up, down; no LM head), attention costs
// 4·d_model per (query, key) pair. Counted from a plan, so what is counted is what runs.

import type { ModelConfig } from "./config.ts";
import { evalExpr, type Plan, type Program } from "./plan.ts";
import { ATTENTION_FAMILIES, GEMM_FAMILIES } from "../wgsl/mod.ts";

/** Parameters of the per-layer linear layers the convention counts. */
export function layerLinearParams(c: ModelConfig): number {
  const d = c.hiddenSize;
  const q = c.heads * c.headDim;
  const kv = c.kvHeads * c.headDim;
  return d * q + 2 * d * kv + q * d + 3 * d * c.intermediateSize;
}

/** FLOPs of dense causal prefill of `n` tokens under the convention. */
export function denseFlops(c: ModelConfig, n: number): number {
  const pairs = (n * n) / 2;
  return c.layers * (2 * layerLinearParams(c) * n + 4 * c.heads * c.headDim * pairs);
}

/** FLOPs of APB (Star when passing is 0 and anchor the block) under the convention. */
export function apbFlops(
  c: ModelConfig,
  n: number,
  hosts: number,
  anchor: number,
  passing: number,
): number {
  const b = n / hosts;
  let tokens = 0;
  let pairs = 0;
  for (let h = 0; h < hosts; h++) {
    const la = h === 0 ? 0 : anchor;
    tokens += b + la;
    pairs += (la * la) / 2 + b * (la + h * passing) + (b * b) / 2;
  }
  return c.layers * (2 * layerLinearParams(c) * tokens + 4 * c.heads * c.headDim * pairs);
}

/** FLOPs a plan's program performs on each host under the convention (counted from its steps). */
export function planFlops(
  plan: Plan,
  program: "prefill" | "extend" = "prefill",
  vars = {},
): number[] {
  const c = plan.model.config;
  const perHost = plan.hosts.map(() => 0);
  const p: Program = plan.programs[program];
  const weightOf = new Map(plan.weights.map((w) => [w.buffer, w]));
  for (const phase of p.phases) {
    phase.steps.forEach((steps, host) => {
      for (const step of steps) {
        const sizes = Object.fromEntries(
          Object.entries(step.sizes).map(([k, v]) => [k, evalExpr(v, { t: 1, past: 0, ...vars })]),
        );
        const family = plan.kernels[step.kernel].family;
        if (GEMM_FAMILIES.has(family)) {
          // An int8 GEMM binds the quantised copy (`<weight buffer>.q`).
          const w = weightOf.get(step.bind.b) ?? weightOf.get(step.bind.b.replace(/\.q$/, ""));
          // The LM head and the retaining heads are outside the convention.
          if (!w || w.source !== "model" || w.shape[0] === c.vocabSize) continue;
          perHost[host] += 2 * sizes.M * sizes.N * sizes.K;
        } else if (ATTENTION_FAMILIES.has(family)) {
          perHost[host] += 4 * sizes.heads * c.headDim * attentionPairs(sizes);
        }
      }
    });
  }
  return perHost;
}

/** (query, key) pairs an attention dispatch's segment table allows. */
export function attentionPairs(sizes: Record<string, number>): number {
  let pairs = 0;
  for (let s = 0; s < sizes.nseg; s++) {
    const rows = Math.min(sizes[`qEnd${s}`], sizes.qRows) - sizes[`qStart${s}`];
    const keys = sizes[`kvCount${s}`];
    if (rows <= 0 || keys <= 0) continue;
    if (!sizes[`causal${s}`]) {
      pairs += rows * keys;
      continue;
    }
    const diag = sizes[`diag${s}`];
    for (let i = 0; i < rows; i++) pairs += Math.max(0, Math.min(keys, i + diag + 1));
  }
  return pairs;
}
