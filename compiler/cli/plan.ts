// `deno task plan <model.ts> [--strategy S --hosts H --tokens N] [--svg FILE]`: lowers and prints
// the plan (every step with --verbose-like detail when few hosts), optionally drawing it.

import { lower } from "../lower.ts";
import { formatPlan } from "../plan_text.ts";
import { loadModelFile, UsageError } from "./model_file.ts";
import { lowerOptionsFrom, type Options, strategyFrom } from "./options.ts";

/** Runs the command; returns the exit code. */
export async function planCommand(target: string | undefined, values: Options): Promise<number> {
  if (!target) throw new UsageError("usage: deno task plan <model.ts> [--strategy S] [--svg FILE]");
  const model = await loadModelFile(target);
  const plan = lower(model, await strategyFrom(values), lowerOptionsFrom(values, { tokens: 4096 }));
  console.log(formatPlan(plan));
  if (values.svg) {
    const { planSvg } = await import("../plan_svg.ts");
    await Deno.writeTextFile(values.svg, planSvg(plan));
    console.log(`drew ${values.svg}`);
  }
  return 0;
}
