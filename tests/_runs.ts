// Helpers that lower the tiny model with a strategy and run it, for strategy and runtime tests.

import { lower, type LowerOptions } from "../compiler/lower.ts";
import type { Plan } from "../compiler/plan.ts";
import type { Strategy } from "../compiler/strategies/strategy.ts";
import type { ModelDefinition } from "../compiler/dsl.ts";
import { Session } from "../runtime/session.ts";
import type { Gpu } from "../runtime/device.ts";
import { logitsByToken } from "../compiler/cli/compare.ts";
import { hash2 } from "../wgsl/_hash.ts";

/** Deterministic token ids. */
export function ids(count: number, vocab: number, seed = 0, offset = 0): number[] {
  return Array.from({ length: count }, (_, i) => hash2(seed, 3, offset + i) % vocab);
}

/** A plan of `model` under `strategy` with prefill logits for every kept row. */
export function planFor(
  model: ModelDefinition,
  strategy: Strategy,
  options: Partial<LowerOptions> & { contextTokens: number },
): Plan {
  return lower(model, strategy, {
    prefillLogits: "all",
    extendLogits: "all",
    queryTokens: 0,
    ...options,
  });
}

/** What one strategy run produced: prefill logits by token, and query-pass logits. */
export interface StrategyRun {
  prefill: Map<number, Float64Array>;
  query: Float64Array | null;
  session: Session;
}

/** Runs prefill (and the query pass when `query` is non-empty) on the CPU or a GPU. */
export async function runPlan(
  plan: Plan,
  context: number[],
  query: number[],
  gpu: Gpu | null,
  seed = 0,
): Promise<StrategyRun> {
  const session = await Session.open(
    plan,
    gpu ? { gpu, weights: { seed } } : { backend: "cpu", weights: { seed } },
  );
  const vocab = plan.model.config.vocabSize;
  const pre = await session.prefill(context, plan.shape.queryTokens ? query : [], {
    readLogits: true,
  });
  let q: Float64Array | null = null;
  if (query.length) {
    const run = await session.extend(query, { readLogits: true });
    q = Float64Array.from(run.logits[0].logits!);
  }
  return { prefill: logitsByToken(pre, vocab), query: q, session };
}

/** Max relative error between two logits maps over the tokens of `want`. */
export function mapError(got: Map<number, Float64Array>, want: Map<number, Float64Array>): number {
  let err = 0;
  let scale = 0;
  for (const [token, row] of want) {
    const other = got.get(token);
    if (!other) throw new Error(`no logits for token ${token}`);
    for (let i = 0; i < row.length; i++) {
      err = Math.max(err, Math.abs(other[i] - row[i]));
      scale = Math.max(scale, Math.abs(row[i]));
    }
  }
  return err / scale;
}
