// `deno task run <model.ts|DIR>` or `deno task run --weights CKPT [model.ts]`: compiles (or reads) a
// plan, runs prefill and greedy decoding on the default adapter and prints timings and ids. With
// --weights the weights come from a Hugging Face checkpoint (and the model from its config.json when
// no model file is given); with --prompt-file the context is that text through the checkpoint's
// tokenizer, and the generated text is printed. --check compares every logit with the float64 CPU
// executor running the same plan on the same weights. --backend dawn runs on Dawn's WebGPU; --int8
// (which needs it) lowers to the int8 tensor-core kernels the opened adapter offers, and a plan
// directory compiled with --int8 needs --backend dawn too.

import { path } from "../_deps.ts";
import { configFromHuggingFace, type ModelConfig, type RopeConfig } from "../config.ts";
import type { ModelDefinition } from "../dsl.ts";
import { checkInt8, int8Text } from "../int8.ts";
import { lower } from "../lower.ts";
import { llamaFromHuggingFace } from "../models/llama.ts";
import type { Plan } from "../plan.ts";
import {
  type Checkpoint,
  openCheckpoint,
  openRetainingHeads,
  type RetainingHeads,
} from "../../runtime/checkpoint.ts";
import { readPlanDir } from "../../runtime/load.ts";
import { lastToken, Session } from "../../runtime/session.ts";
import { type DeviceInfo, type Gpu, openGpu } from "../../runtime/device.ts";
import type { RunResult, WeightSource } from "../../runtime/executor.ts";
import { criticalPath, hostTotals, NVLINK } from "../../runtime/timing.ts";
import { formatMemory } from "../../runtime/memory.ts";
import { checkpointWeights } from "../../runtime/weights.ts";
import { hash2 } from "../../wgsl/_hash.ts";
import { compareRuns } from "./compare.ts";
import { loadModelFile, UsageError } from "./model_file.ts";
import { gpuBackend, int, lowerOptionsFrom, type Options, strategyFrom } from "./options.ts";
import type { TextTokenizer } from "./tokenizer.ts";

/** Tolerance of --check for f32 storage. */
export const CHECK_TOLERANCE = 1e-4;

/**
 * Tolerance of --check for int8 plans. The float64 executor reproduces every quantisation, but a
 * value on a rounding boundary can take the other int8 code on the GPU (f32 with contracted
 * multiply-adds), which moves a product by a quantum, and later layers carry it on. Measured on
 * the retrieval checkpoint over 300 tokens (H100, Dawn): 7.8e-3 with int8 GEMMs, 1.5e-2 with int8
 * attention too, where the two int8_attention bugs fixed on 2026-11-24 were off by 2.7 and 3e2.
 */
export const INT8_CHECK_TOLERANCE = 5e-2;

/** Deterministic synthetic token ids. */
export function syntheticTokens(count: number, vocab: number, seed: number, offset = 0): number[] {
  return Array.from({ length: count }, (_, i) => hash2(seed >>> 0, 7, offset + i) % vocab);
}

/** What --weights and --retaining-heads opened. */
interface Sources {
  /** The checkpoint directory, as given. */
  dir?: string;
  /** Its tensors and config.json. */
  checkpoint?: Checkpoint;
  /** APB retaining heads, wherever they were. */
  heads?: RetainingHeads;
}

/** A --prompt-file prompt as token ids: the context, then the last --query tokens as the query. */
interface Prompt {
  file: string;
  context: number[];
  query: number[];
  tokenizer: TextTokenizer;
  chat: boolean;
}

/** Runs the command; returns the process exit code. */
export async function runCommand(target: string | undefined, values: Options): Promise<number> {
  if (!target && !values.weights) {
    throw new UsageError(
      "usage: deno task run <model.ts | plan dir> [options], or deno task run --weights DIR " +
        "[model.ts | plan dir] [options]",
    );
  }
  if (values["retaining-heads"] && !values.weights) {
    throw new UsageError("--retaining-heads needs --weights DIR (the model's own checkpoint)");
  }
  const sources: Sources = {};
  try {
    if (values.weights) {
      sources.dir = values.weights;
      sources.checkpoint = await openCheckpoint(values.weights);
    }
    if (values["retaining-heads"]) {
      sources.heads = await openRetainingHeads(values["retaining-heads"]);
    }
    return await run(target, values, sources);
  } finally {
    sources.checkpoint?.close();
    sources.heads?.close();
  }
}

async function run(target: string | undefined, values: Options, sources: Sources): Promise<number> {
  const backend = gpuBackend(values);
  const prompt = await readPrompt(values, sources.dir);
  // --int8 takes its choice from the adapter, so the device opens before lowering.
  let gpu: Gpu | undefined = values.int8 ? await openGpu({ backend }) : undefined;
  const plan = await planFor(target, values, sources, prompt, gpu?.info);
  const int8 = plan.int8 ?? null;
  if (int8 && backend !== "dawn") {
    throw new UsageError(
      `${target} was compiled with --int8 (int8 tensor-core kernels); run it with --backend dawn`,
    );
  }
  const seed = int(values, "seed", 0);
  const generate = int(values, "generate", 8);
  const weights = weightSource(plan, sources, seed);
  gpu ??= await openGpu({ backend });
  if (int8) checkInt8(int8, gpu.info);
  const s = plan.shape;
  console.log(`model    ${plan.model.name} (${fmtParams(plan.model.parameters)} parameters)`);
  console.log(
    `weights  ${sources.dir ? `from ${sources.dir}` : `seeded (seed ${seed})`}` +
      (sources.heads ? `, retaining heads from ${sources.heads.location}` : ""),
  );
  console.log(
    `strategy ${plan.strategy.name} on ${plan.strategy.hosts} host(s)` +
      (values["device-per-host"] ? ", one device per host" : ", virtual hosts on one device"),
  );
  console.log(
    `adapter  ${gpu.info.description} [${gpu.info.features.join(", ") || "no optional features"}]` +
      (backend === "dawn" ? " on Dawn" : ""),
  );
  if (int8) console.log(`kernels  ${int8Text(int8)}`);
  if (prompt) {
    console.log(
      `prompt   ${prompt.file}: ${prompt.context.length + prompt.query.length} tokens` +
        (prompt.chat ? " in the chat template" : ""),
    );
  }
  console.log(
    `tokens   ${s.contextTokens} context + ${s.queryTokens} query, generating ${generate}`,
  );
  console.log(formatMemory(plan, values["device-per-host"]));
  const session = await Session.open(plan, {
    gpu,
    weights,
    devicePerHost: values["device-per-host"],
  });
  const vocab = plan.model.config.vocabSize;
  const context = prompt?.context ?? syntheticTokens(s.contextTokens, vocab, seed);
  const query = prompt?.query ?? syntheticTokens(s.queryTokens, vocab, seed, s.contextTokens);
  const stop = prompt?.tokenizer.eosIds ?? [];
  const read = { readLogits: values.check };
  await session.prefill(context, query); // warm-up: pipelines, first touch of memory
  const prefill = await session.prefill(context, query, read);
  printTiming("prefill", prefill, plan);
  const runs: { tokens: number[]; result: RunResult }[] = [];
  let next: number[] = query.length ? query : [];
  const generated: number[] = [];
  let stopped: number | undefined;
  let last = prefill;
  const decodeStart = performance.now();
  while (generated.length < generate) {
    if (next.length) {
      last = await session.extend(next, read);
      runs.push({ tokens: next, result: last });
    }
    const token = lastToken(last, plan);
    if (stop.includes(token)) {
      stopped = token;
      break;
    }
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
  if (stopped !== undefined) console.log(`stopped at end-of-sequence id ${stopped}`);
  // Decoded once from all ids: a character split over two tokens is only whole in their sum.
  if (prompt) console.log(`text:\n${prompt.tokenizer.decode(generated)}`);
  session.destroy();
  if (!values.check) return 0;
  return await check(plan, weights, context, query, prefill, runs);
}

/** The prompt of --prompt-file through the checkpoint's tokenizer, or undefined without one. */
async function readPrompt(values: Options, dir: string | undefined): Promise<Prompt | undefined> {
  const file = values["prompt-file"];
  if (file === undefined) return undefined;
  if (!dir) {
    throw new UsageError(
      "--prompt-file needs --weights DIR: the tokenizer is read from the checkpoint directory",
    );
  }
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    throw new UsageError(`cannot read --prompt-file ${file}: ${(e as Error).message}`);
  }
  // Loaded on demand: runs without a prompt need no npm package.
  const { loadTokenizer, TokenizerError } = await import("./tokenizer.ts");
  let tokenizer: TextTokenizer;
  let ids: number[];
  try {
    tokenizer = await loadTokenizer(dir);
    ids = tokenizer.encode(text, { chat: tokenizer.hasChatTemplate });
  } catch (e) {
    // A tokenizer problem is a problem with the files the user pointed at.
    if (e instanceof TokenizerError) throw new UsageError(e.message);
    throw e;
  }
  const q = int(values, "query", 0);
  if (ids.length <= q) {
    throw new UsageError(
      `the prompt is ${ids.length} tokens, too few for --query ${q} (the query is the prompt's ` +
        `last ${q} tokens and the context the rest)`,
    );
  }
  const tokens = int(values, "tokens");
  if (tokens !== undefined && tokens !== ids.length - q) {
    throw new UsageError(
      `--tokens ${tokens} disagrees with the prompt's ${ids.length - q} context tokens; ` +
        `leave --tokens out with --prompt-file`,
    );
  }
  return {
    file,
    context: ids.slice(0, ids.length - q),
    query: ids.slice(ids.length - q),
    tokenizer,
    chat: tokenizer.hasChatTemplate,
  };
}

async function planFor(
  target: string | undefined,
  values: Options,
  sources: Sources,
  prompt: Prompt | undefined,
  adapter: DeviceInfo | undefined,
): Promise<Plan> {
  let isDir = false;
  if (target) {
    try {
      isDir = (await Deno.stat(target)).isDirectory;
    } catch {
      throw new UsageError(
        `${target} does not exist (give a model .ts file or a compiled plan directory)`,
      );
    }
  }
  if (target && isDir) {
    const { plan } = await readPlanDir(target);
    if (values.int8 && !plan.int8) {
      throw new UsageError(`${target} was compiled without --int8; recompile it with --int8`);
    }
    if (!prompt && values.tokens && int(values, "tokens") !== plan.shape.contextTokens) {
      throw new UsageError(
        `${target} was compiled for ${plan.shape.contextTokens} tokens; recompile with --tokens`,
      );
    }
    return plan;
  }
  let model: ModelDefinition;
  if (target) {
    model = await loadModelFile(target);
    if (sources.checkpoint) noteConfigDifferences(model.config, sources.checkpoint.config, target);
  } else {
    const name = path.basename(path.resolve(sources.dir!));
    model = llamaFromHuggingFace(sources.checkpoint!.config, name);
  }
  const options = lowerOptionsFrom(values, { tokens: 64 }, adapter);
  if (prompt) options.contextTokens = prompt.context.length;
  if (values.check) options.prefillLogits = "all";
  const retainingHidden = sources.heads?.expectFor(model.config);
  return lower(model, await strategyFrom(values, { retainingHidden }), options);
}

/**
 * The checkpoint's weights for `plan`, checked by name and shape before anything is allocated, or
 * seeded weights without a checkpoint.
 */
function weightSource(plan: Plan, sources: Sources, seed: number): WeightSource {
  if (!sources.checkpoint) return { seed };
  const weights = checkpointWeights(sources.checkpoint, { seed, retainingHeads: sources.heads });
  const { unused } = weights.check(plan.weights);
  if (unused.length) {
    console.error(
      `note: ${unused.length} tensor(s) of ${sources.dir} are not used by the model: ` +
        `${unused.slice(0, 4).join(", ")}${unused.length > 4 ? ", …" : ""}`,
    );
  }
  if (sources.heads && !plan.weights.some((w) => w.source === "retaining")) {
    console.error(
      "note: --retaining-heads is unused: only --strategy apb with the retaining scorer reads them",
    );
  }
  return weights;
}

/**
 * Notes what shapes cannot catch: a model file whose norm epsilon or rotary settings differ from the
 * checkpoint's config.json computes other logits from the same weights.
 */
function noteConfigDifferences(model: ModelConfig, json: Record<string, unknown>, file: string) {
  let theirs: ModelConfig;
  try {
    theirs = configFromHuggingFace(json);
  } catch {
    // A config this code cannot read is no evidence against a model file written by hand.
    return;
  }
  const rope = (r: RopeConfig) => {
    const s = r.scaling;
    return s
      ? `theta ${r.theta}, llama3 ×${s.factor} (${s.lowFreqFactor}, ${s.highFreqFactor}, ` +
        `${s.originalMaxPositions})`
      : `theta ${r.theta}`;
  };
  const differences: string[] = [];
  if (theirs.normEps !== model.normEps) {
    differences.push(`RMSNorm eps ${model.normEps} there, ${theirs.normEps} in config.json`);
  }
  if (rope(theirs.rope) !== rope(model.rope)) {
    differences.push(`RoPE ${rope(model.rope)} there, ${rope(theirs.rope)} in config.json`);
  }
  if (differences.length) {
    console.error(
      `note: ${file} does not match the checkpoint's config: ${differences.join("; ")}`,
    );
  }
}

async function check(
  plan: Plan,
  weights: WeightSource,
  context: number[],
  query: number[],
  prefill: RunResult,
  runs: { tokens: number[]; result: RunResult }[],
): Promise<number> {
  const reference = await Session.open(plan, { backend: "cpu", weights });
  const vocab = plan.model.config.vocabSize;
  const want = await reference.prefill(context, query, { readLogits: true });
  let worst = compareRuns(prefill, want, vocab);
  for (const run of runs) {
    const ref = await reference.extend(run.tokens, { readLogits: true });
    worst = Math.max(worst, compareRuns(run.result, ref, vocab));
  }
  const tolerance = plan.int8 ? INT8_CHECK_TOLERANCE : CHECK_TOLERANCE;
  const ok = worst <= tolerance;
  console.log(`check    float64 CPU executor on the same plan, ${1 + runs.length} runs`);
  console.log(
    `max relative error: ${worst.toExponential(2)} (tolerance ${tolerance}${
      plan.int8 ? ", int8" : ""
    }) ${ok ? "OK" : "FAILED"}`,
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
