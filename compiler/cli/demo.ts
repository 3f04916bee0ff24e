// `deno task demo`: compiles examples/tiny.ts, runs it densely with a float64 check, then runs the
// same context and query with every strategy on virtual hosts and prints how far each one's query
// logits are from dense, whether greedy decoding agrees, and how long prefill took.

import { path } from "../_deps.ts";
import { emitPlan } from "../emit.ts";
import { lower, type LowerOptions } from "../lower.ts";
import type { Plan } from "../plan.ts";
import { strategyByName } from "../strategies/mod.ts";
import type { Strategy } from "../strategies/strategy.ts";
import { openGpu } from "../../runtime/device.ts";
import { Session } from "../../runtime/session.ts";
import { criticalPath, NVLINK } from "../../runtime/timing.ts";
import { compareRuns, maxRelativeError } from "./compare.ts";
import { loadModelFile } from "./model_file.ts";
import type { Options } from "./options.ts";
import { CHECK_TOLERANCE, syntheticTokens } from "./run.ts";

const MODEL = path.join(import.meta.dirname!, "..", "..", "examples", "tiny.ts");

/** Runs the demo; returns the exit code (non-zero when the dense check fails). */
export async function demoCommand(_values: Options): Promise<number> {
  const model = await loadModelFile(MODEL);
  const gpu = await openGpu();
  console.log(`adapter: ${gpu.info.description} [${gpu.info.features.join(", ")}]`);
  const context = 96;
  const query = 8;
  const generate = 8;
  const base: LowerOptions = {
    contextTokens: context,
    queryTokens: query,
    extendRows: query,
    maxNewTokens: query + generate,
    extendLogits: "all",
  };
  const out = path.join("dist", "tiny");
  await emitPlan(lower(model, strategyByName("dense"), base), out, "examples/tiny.ts");
  console.log(`compiled examples/tiny.ts → ${out}/ (plan.json, kernels/, mod.ts)\n`);

  const vocab = model.config.vocabSize;
  const ids = syntheticTokens(context + query, vocab, 1);
  const [ctx, q] = [ids.slice(0, context), ids.slice(context)];
  const runs: Row[] = [];
  const choices: [string, Strategy, number][] = [
    ["dense", strategyByName("dense"), 1],
    ["ring", strategyByName("ring"), 4],
    ["zigzag", strategyByName("zigzag"), 4],
    ["ulysses", strategyByName("ulysses"), 2],
    ["star", strategyByName("star"), 4],
    ["apb", strategyByName("apb", { anchor: 8, passing: 4 }), 4],
  ];
  let exit = 0;
  for (const [name, strategy, hosts] of choices) {
    const plan = lower(model, strategy, { ...base, hosts });
    const row = await runOne(name, plan, gpu, ctx, q, generate);
    if (name === "dense") {
      const reference = await Session.open(plan, { backend: "cpu", weights: { seed: 1 } });
      await reference.prefill(ctx, q);
      const want = await reference.extend(q, { readLogits: true });
      const err = compareRuns(row.queryRun, want, vocab);
      console.log(`dense on the GPU against the float64 CPU executor (same plan):`);
      console.log(`max relative error: ${err.toExponential(2)} (tolerance ${CHECK_TOLERANCE})\n`);
      if (!(err <= CHECK_TOLERANCE)) exit = 1;
    }
    runs.push(row);
  }
  printTable(runs);
  console.log(
    "\nThe tiny model has random weights: ring, zigzag and ulysses must match dense to rounding;\n" +
      "star's and APB's errors here say nothing about task accuracy (see docs/QUALITY.md), and on\n" +
      "a model this small APB's retaining heads cost more than the attention they save.",
  );
  return exit;
}

interface Row {
  name: string;
  hosts: number;
  queryRun: import("../../runtime/executor.ts").RunResult;
  tokens: number[];
  wallMs: number;
  criticalMs: number;
}

async function runOne(
  name: string,
  plan: Plan,
  gpu: Awaited<ReturnType<typeof openGpu>>,
  ctx: number[],
  q: number[],
  generate: number,
): Promise<Row> {
  const session = await Session.open(plan, { gpu, weights: { seed: 1 } });
  await session.prefill(ctx, q);
  const prefill = await session.prefill(ctx, q);
  const queryRun = await session.extend(q, { readLogits: true });
  const tokens: number[] = [];
  let last = queryRun.logits[0];
  while (tokens.length < generate) {
    tokens.push(last.argmax[last.rows - 1]);
    if (tokens.length === generate) break;
    last = (await session.extend([tokens[tokens.length - 1]])).logits[0];
  }
  session.destroy();
  const phases = prefill.timing.phases;
  return {
    name,
    hosts: plan.strategy.hosts,
    queryRun,
    tokens,
    wallMs: prefill.timing.wallMs,
    criticalMs: phases ? criticalPath(phases, NVLINK).totalMs : NaN,
  };
}

function printTable(rows: Row[]): void {
  const dense = rows[0];
  const want = dense.queryRun.logits[0].logits!;
  console.log(
    "| strategy | hosts | max rel. error vs dense | greedy tokens agree | prefill wall ms | critical path ms |",
  );
  console.log("|---|---|---|---|---|---|");
  for (const r of rows) {
    const err = maxRelativeError(r.queryRun.logits[0].logits!, want);
    const agree = r.tokens.filter((t, i) => t === dense.tokens[i]).length;
    console.log(
      `| ${r.name} | ${r.hosts} | ${err.toExponential(2)} | ${agree}/${r.tokens.length} | ` +
        `${r.wallMs.toFixed(1)} | ${
          Number.isFinite(r.criticalMs) ? r.criticalMs.toFixed(2) : "n/a"
        } |`,
    );
  }
}
