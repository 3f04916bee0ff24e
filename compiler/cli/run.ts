// `deno task run <model.ts|DIR>`: compiles (or reads) a plan, runs prefill and greedy decoding on
// the default adapter, prints timings and ids, and with --check compares every logit with the
// float64 CPU executor running the same plan.

import { lower } from "../lower.ts";
import type { Plan } from "../plan.ts";
import { readPlanDir } from "../../runtime/load.ts";
import { lastToken, Session } from "../../runtime/session.ts";
import { openGpu } from "../../runtime/device.ts";
import type { RunResult } from "../../runtime/executor.ts";
import { criticalPath, hostTotals, NVLINK } from "../../runtime/timing.ts";
import { formatMemory } from "../../runtime/memory.ts";
import { hash2 } from "../../wgsl/_hash.ts";
import { compareRuns } from "./compare.ts";
import { loadModelFile, UsageError } from "./model_file.ts";
import { int, lowerOptionsFrom, type Options, strategyFrom } from "./options.ts";

/** Tolerance of --check for f32 storage. */
export const CHECK_TOLERANCE = 1e-4;

/** Deterministic synthetic token ids. */
export function syntheticTokens(count: number, vocab: number, seed: number, offset = 0): number[] {
  return Array.from({ length: count }, (_, i) => hash2(seed >>> 0, 7, offset + i) % vocab);
}

/** Runs the command; returns the process exit code. */
export async function runCommand(target: string | undefined, values: Options): Promise<number> {
  if (!target) throw new UsageError("usage: deno task run <model.ts | plan dir> [options]");
  const plan = await planFor(target, values);
  const seed = int(values, "seed", 0);
  const generate = int(values, "generate", 8);
  const gpu = await openGpu();
  const s = plan.shape;
  console.log(`model    ${plan.model.name} (${fmtParams(plan.model.parameters)} parameters)`);
  console.log(
    `strategy ${plan.strategy.name} on ${plan.strategy.hosts} host(s)` +
      (values["device-per-host"] ? ", one device per host" : ", virtual hosts on one device"),
  );
  console.log(
    `adapter  ${gpu.info.description} [${gpu.info.features.join(", ") || "no optional features"}]`,
  );
  console.log(
    `tokens   ${s.contextTokens} context + ${s.queryTokens} query, generating ${generate}`,
  );
  console.log(formatMemory(plan, values["device-per-host"]));
  const session = await Session.open(plan, {
    gpu,
    weights: { seed },
    devicePerHost: values["device-per-host"],
  });
  const vocab = plan.model.config.vocabSize;
  const context = syntheticTokens(s.contextTokens, vocab, seed);
  const query = syntheticTokens(s.queryTokens, vocab, seed, s.contextTokens);
  const read = { readLogits: values.check };
  await session.prefill(context, query); // warm-up: pipelines, first touch of memory
  const prefill = await session.prefill(context, query, read);
  printTiming("prefill", prefill, plan);
  const runs: { tokens: number[]; result: RunResult }[] = [];
  let next: number[] = query.length ? query : [];
  const generated: number[] = [];
  let last = prefill;
  const decodeStart = performance.now();
  while (generated.length < generate) {
    if (next.length) {
      last = await session.extend(next, read);
      runs.push({ tokens: next, result: last });
    }
    const token = lastToken(last, plan);
    generated.push(token);
    next = [token];
  }
  const decodeMs = performance.now() - decodeStart;
  if (runs.length) {
    console.log(
      `decode   ${runs.length} extend calls, ${(decodeMs / runs.length).toFixed(1)} ms each (wall)`,
    );
  }
  console.log(`generated ids: ${generated.join(" ")}`);
  session.destroy();
  if (!values.check) return 0;
  return await check(plan, seed, context, query, prefill, runs);
}

async function planFor(target: string, values: Options): Promise<Plan> {
  let isDir = false;
  try {
    isDir = (await Deno.stat(target)).isDirectory;
  } catch {
    throw new UsageError(
      `${target} does not exist (give a model .ts file or a compiled plan directory)`,
    );
  }
  if (isDir) {
    const { plan } = await readPlanDir(target);
    if (values.tokens && int(values, "tokens") !== plan.shape.contextTokens) {
      throw new UsageError(
        `${target} was compiled for ${plan.shape.contextTokens} tokens; recompile with --tokens`,
      );
    }
    return plan;
  }
  const model = await loadModelFile(target);
  const options = lowerOptionsFrom(values, { tokens: 64 });
  if (values.check) options.prefillLogits = "all";
  return lower(model, await strategyFrom(values), options);
}

async function check(
  plan: Plan,
  seed: number,
  context: number[],
  query: number[],
  prefill: RunResult,
  runs: { tokens: number[]; result: RunResult }[],
): Promise<number> {
  const reference = await Session.open(plan, { backend: "cpu", weights: { seed } });
  const vocab = plan.model.config.vocabSize;
  const want = await reference.prefill(context, query, { readLogits: true });
  let worst = compareRuns(prefill, want, vocab);
  for (const run of runs) {
    const ref = await reference.extend(run.tokens, { readLogits: true });
    worst = Math.max(worst, compareRuns(run.result, ref, vocab));
  }
  const ok = worst <= CHECK_TOLERANCE;
  console.log(`check    float64 CPU executor on the same plan, ${1 + runs.length} runs`);
  console.log(
    `max relative error: ${worst.toExponential(2)} (tolerance ${CHECK_TOLERANCE}) ${
      ok ? "OK" : "FAILED"
    }`,
  );
  return ok ? 0 : 1;
}

/** Prints a run's wall time, per-host GPU time and modelled critical path. */
export function printTiming(what: string, run: RunResult, plan: Plan): void {
  const t = run.timing;
  let line = `${what.padEnd(8)} ${t.wallMs.toFixed(1)} ms wall`;
  if (t.phases) {
    const hosts = hostTotals(t.phases, plan.hosts.length);
    const cp = criticalPath(t.phases, NVLINK);
    line += `, GPU per host ${hosts.map((x) => x.toFixed(2)).join(" / ")} ms` +
      `, critical path ${cp.totalMs.toFixed(2)} ms (${NVLINK.name})`;
  }
  console.log(line);
}

function fmtParams(n: number): string {
  return n >= 1e9
    ? `${(n / 1e9).toFixed(2)}B`
    : n >= 1e6
    ? `${(n / 1e6).toFixed(2)}M`
    : `${(n / 1e3).toFixed(1)}K`;
}
