// `deno task compile <model.ts> [--out DIR]`: lowers a model with a strategy and writes the plan,
// its kernels and a typed binding.

import { path } from "../_deps.ts";
import { emitPlan } from "../emit.ts";
import { lower } from "../lower.ts";
import { loadModelFile, UsageError } from "./model_file.ts";
import { lowerOptionsFrom, type Options, strategyFrom } from "./options.ts";

/** Runs the command; returns the exit code. */
export async function compileCommand(target: string | undefined, values: Options): Promise<number> {
  if (!target) throw new UsageError("usage: deno task compile <model.ts> [--out DIR] [options]");
  const started = performance.now();
  const model = await loadModelFile(target);
  const plan = lower(model, await strategyFrom(values), lowerOptionsFrom(values, { tokens: 4096 }));
  const out = values.out ?? path.join("dist", plan.model.name);
  const files = await emitPlan(plan, out, target);
  const steps = Object.values(plan.programs).reduce(
    (a, p) => a + p.phases.reduce((b, ph) => b + ph.steps.flat().length, 0),
    0,
  );
  console.log(
    `compiled ${plan.model.name} (${plan.strategy.name}, ${plan.strategy.hosts} host(s), ` +
      `${plan.shape.contextTokens} tokens): ${Object.keys(plan.kernels).length} kernels, ` +
      `${plan.buffers.length} buffers, ${steps} dispatches`,
  );
  console.log(
    `wrote ${files.length} files to ${out}/ (plan.json, kernels/, mod.ts) in ` +
      `${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
  return 0;
}
