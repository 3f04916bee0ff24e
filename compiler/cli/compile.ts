// `deno task compile <model.ts> [--out DIR]`: lowers a model with a strategy and writes the plan,
// its kernels and a typed binding. It opens no GPU, so --int8 takes --int8-matrix (default
// NVIDIA's 16x16x32 on subgroups of 32); with --backend dawn it opens Dawn and takes the adapter's
// choice instead, as `run` and `bench` do. The choice is recorded in plan.json's "int8".

import { path } from "../_deps.ts";
import { emitPlan } from "../emit.ts";
import { int8Text } from "../int8.ts";
import { lower } from "../lower.ts";
import { loadModelFile, UsageError } from "./model_file.ts";
import { lowerOptionsFrom, type Options, strategyFrom } from "./options.ts";
import { openGpu } from "../../runtime/device.ts";

/** Runs the command; returns the exit code. */
export async function compileCommand(target: string | undefined, values: Options): Promise<number> {
  if (!target) throw new UsageError("usage: deno task compile <model.ts> [--out DIR] [options]");
  const started = performance.now();
  const model = await loadModelFile(target);
  const adapter = values.int8 && values.backend === "dawn"
    ? (await openGpu({ backend: "dawn" })).info
    : undefined;
  const options = lowerOptionsFrom(values, { tokens: 4096 }, adapter);
  const plan = lower(model, await strategyFrom(values), options);
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
  if (plan.int8) {
    const source = adapter
      ? "from the Dawn adapter"
      : values["int8-matrix"]
      ? "from --int8-matrix"
      : "NVIDIA's; --int8-matrix or --backend dawn picks another";
    console.log(`kernels  ${int8Text(plan.int8)} (${source})`);
  }
  console.log(
    `wrote ${files.length} files to ${out}/ (plan.json, kernels/, mod.ts) in ` +
      `${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
  return 0;
}
