// `deno task bench quality --weights DIR --eval FILE`: task accuracy of every strategy on a checkpoint
// that really retrieves. Each sample's context is prefilled with the strategy, then its question part
// (all questions, answers teacher forced) runs over the distributed KV cache in extend calls (Star
// phase 2, APB's query and decode path). Reported per strategy: token accuracy on the answers, and
// the largest relative error of the question part's logits against dense. APB runs in the variants
// of the paper's ablation (Table 3; spec §6.3) with a training-free scorer in place of the trained
// retaining heads the fixture lacks.
//
// --backend dawn runs on Dawn's WebGPU; --int8 (on Dawn, or emulated exactly on --backend cpu)
// lowers every row to the int8 kernels, so its accuracy column compares with an f32 run's. Errors
// are then against int8 dense, and exactness is not checked (int8 rounds differently per layout).

import type { ModelDefinition } from "../compiler/dsl.ts";
import { type Int8Choice, lower, type LowerOptions } from "../compiler/lower.ts";
import { int8Text } from "../compiler/int8.ts";
import { llamaFromHuggingFace } from "../compiler/models/llama.ts";
import type { Plan, PlanInt8 } from "../compiler/plan.ts";
import { apb } from "../compiler/strategies/apb.ts";
import { strategyByName } from "../compiler/strategies/mod.ts";
import { blocks, type Strategy } from "../compiler/strategies/strategy.ts";
import { maxRelativeError } from "../compiler/cli/compare.ts";
import { UsageError } from "../compiler/cli/model_file.ts";
import { int, INT8_NEEDS_DAWN, int8From, type Options, storage } from "../compiler/cli/options.ts";
import { openCheckpoint, openRetainingHeads } from "../runtime/checkpoint.ts";
import { type Gpu, openGpu } from "../runtime/device.ts";
import type { WeightSource } from "../runtime/executor.ts";
import { Session } from "../runtime/session.ts";
import { checkpointWeights } from "../runtime/weights.ts";
import type { StorageType } from "../wgsl/kernel.ts";
import {
  cutSample,
  type EvalSample,
  type QueryForm,
  readEval,
  scoreAnswers,
  type Task,
  taskOf,
} from "./quality_data.ts";

/** Exact strategies must match dense within this relative error (f32 storage). */
export const EXACT_TOLERANCE = 1e-4;

/** The compressor of an APB variant: retaining heads, the query-aware score, or random. */
export type ScorerName = "retaining" | "query" | "random";

/** APB settings of a variant; anchor and passing lengths follow the block unless switched off. */
export interface ApbVariant {
  /** Whether hosts ≥ 1 prepend an anchor (length from the options or the block). */
  anchor: boolean;
  /** Whether earlier hosts pass their top rows (count from the options or the block). */
  passing: boolean;
  /** Compressor; irrelevant without passing. */
  scorer: ScorerName;
  /** Whether the query is embedded in the anchor. */
  queryInAnchor: boolean;
  /** The matching row of the paper's ablation (Table 3), when there is one. */
  table3?: number;
}

/** One row of the table: a strategy on a number of hosts. */
export interface Variant {
  /** Built-in strategy name. */
  strategy: "dense" | "ring" | "zigzag" | "ulysses" | "star" | "apb";
  /** Hosts. */
  hosts: number;
  /** APB settings (apb only). */
  apb?: ApbVariant;
  /** Whether the strategy is exact, so its logits must match dense. */
  exact: boolean;
  /** Why the row differs from what was asked (Ulysses on fewer hosts). */
  note?: string;
}

/** Largest h ≤ `hosts` that divides both head counts (Ulysses splits heads), or 0. */
export function ulyssesHosts(hosts: number, heads: number, kvHeads: number): number {
  for (let h = hosts; h > 1; h--) if (heads % h === 0 && kvHeads % h === 0) return h;
  return 0;
}

/**
 * The variants for `hostCounts`: dense once; per host count ring, zigzag, Ulysses (on the most hosts
 * that divide the heads, if not these), Star, and APB in the configurations of Table 3 (rows 0–8,
 * R replaced by the query-aware scorer), plus rows 0, 1 and 6 with retaining heads when
 * `retaining` is set.
 */
export function variantsFor(
  hostCounts: number[],
  model: { heads: number; kvHeads: number },
  retaining = false,
): Variant[] {
  const out: Variant[] = [{ strategy: "dense", hosts: 1, exact: true }];
  const ulysses = new Set<number>();
  for (const H of hostCounts) {
    out.push({ strategy: "ring", hosts: H, exact: true });
    out.push({ strategy: "zigzag", hosts: H, exact: true });
    const u = ulyssesHosts(H, model.heads, model.kvHeads);
    if (u && !ulysses.has(u)) {
      ulysses.add(u);
      const note = u === H ? undefined : `${H} hosts do not divide ${model.kvHeads} KV heads`;
      out.push({ strategy: "ulysses", hosts: u, exact: true, ...(note ? { note } : {}) });
    }
    out.push({ strategy: "star", hosts: H, exact: false });
    const apbRow = (table3: number, a: boolean, p: boolean, scorer: ScorerName, q: boolean) =>
      out.push({
        strategy: "apb",
        hosts: H,
        exact: false,
        apb: { anchor: a, passing: p, scorer, queryInAnchor: q, table3 },
      });
    if (retaining) {
      apbRow(0, true, true, "retaining", true);
      apbRow(1, true, true, "retaining", false);
    }
    apbRow(0, true, true, "query", true);
    apbRow(1, true, true, "query", false);
    apbRow(2, true, true, "random", true);
    apbRow(3, true, true, "random", false);
    apbRow(4, true, false, "random", true);
    apbRow(5, true, false, "random", false);
    if (retaining) apbRow(6, false, true, "retaining", false);
    apbRow(6, false, true, "query", false);
    apbRow(7, false, true, "random", false);
    apbRow(8, false, false, "random", false);
  }
  return out;
}

/**
 * Default anchor and passing lengths for a block of `block` tokens: l_a = b/4 rounded to a power of
 * two, l_p = l_a/2 (the paper's ratios; on the 4096-token eval file H = 4 gives 256/128 and H = 8
 * gives 128/64).
 */
export function defaultLengths(block: number): { anchor: number; passing: number } {
  const anchor = 2 ** Math.round(Math.log2(Math.max(1, block / 4)));
  return { anchor, passing: anchor / 2 };
}

/** Settings shared by every APB variant. */
export interface ApbSettings {
  /** Anchor length (default {@linkcode defaultLengths}). */
  anchor?: number;
  /** Passing length per host (default {@linkcode defaultLengths}). */
  passing?: number;
  /** Where the query goes in the anchor (default 1: after BOS). */
  queryOffset?: number;
  /** Seed of the random scorer (default 0). */
  seed?: number;
  /** Hidden width of the retaining heads, when loaded. */
  retainingHidden?: number;
}

/** The strategy of `v` for a context of `contextTokens`, and the lengths it resolved. */
export function strategyOf(
  v: Variant,
  contextTokens: number,
  settings: ApbSettings = {},
): { strategy: Strategy; anchor: number | null; passing: number | null } {
  const { block } = blocks(contextTokens, v.hosts);
  if (v.strategy === "star") return { strategy: strategyByName("star"), anchor: block, passing: 0 };
  if (v.strategy !== "apb") {
    return { strategy: strategyByName(v.strategy), anchor: null, passing: null };
  }
  const a = v.apb!;
  const lengths = defaultLengths(block);
  const anchor = a.anchor ? settings.anchor ?? lengths.anchor : 0;
  const passing = a.passing ? settings.passing ?? lengths.passing : 0;
  const strategy = apb({
    anchor,
    passing,
    scorer: a.scorer,
    queryInAnchor: a.queryInAnchor && anchor > 0,
    queryOffset: settings.queryOffset ?? 1,
    seed: settings.seed ?? 0,
    ...(settings.retainingHidden ? { retainingHidden: settings.retainingHidden } : {}),
  });
  return { strategy, anchor, passing };
}

/** What {@linkcode runQuality} needs. */
export interface QualityOptions {
  /** The model. */
  model: ModelDefinition;
  /** Its weights (and retaining heads, if any). */
  weights: WeightSource;
  /** Eval samples (already cut, if cutting). */
  samples: EvalSample[];
  /** Rows to run; dense first (it is the reference of every error). */
  variants: Variant[];
  /** WebGPU (default; Deno's), Dawn's WebGPU, or the float64 CPU executor. */
  backend?: "gpu" | "dawn" | "cpu";
  /** The device to reuse (GPU backends); opened once when absent. */
  gpu?: Gpu;
  /** Int8 tensor-core kernels for every row (null or absent: f32 kernels). */
  int8?: Int8Choice | null;
  /** What APB is told the question is (default "questions"). */
  queryForm?: QueryForm;
  /** Settings of every APB row. */
  apb?: ApbSettings;
  /** Storage of weights and KV cache (default f32). */
  storage?: { weights?: StorageType; kv?: StorageType };
  /** Progress lines (default: none). */
  log?: (line: string) => void;
  /** Called after each row with the rows so far (to save partial results of a long run). */
  onRow?: (rows: QualityRow[]) => Promise<void>;
}

/** A measured row. */
export interface QualityRow extends Variant {
  /** Anchor length used (on the first sample's shape), null where there is none. */
  anchor: number | null;
  /** Passing length per host used, null where there is none. */
  passingLength: number | null;
  /** Correct answer tokens. */
  correct: number;
  /** Answer tokens. */
  total: number;
  /** correct / total. */
  accuracy: number;
  /** Largest relative error of the question logits against dense, over samples. */
  maxError: number;
  /** Mean over samples of that error. */
  meanError: number;
  /** Median wall milliseconds of one sample (prefill + question part). */
  msPerSample: number;
  /** Correct answers per sample. */
  perSample: number[];
}

/** The benchmark's result. */
export interface QualityReport {
  /** What ran it. */
  device: string;
  /** Which executor: Deno's WebGPU ("gpu"), Dawn's, or the float64 CPU one. */
  backend: "gpu" | "dawn" | "cpu";
  /** The int8 kernels' choice, or null for f32 kernels. */
  int8: PlanInt8 | null;
  /** Samples run. */
  samples: number;
  /** Context tokens of the first sample. */
  contextTokens: number;
  /** Question-part tokens of the first sample. */
  questionTokens: number;
  /** APB's query length on the first sample. */
  queryTokens: number;
  /** What APB was told the question is. */
  queryForm: QueryForm;
  /** The rows. */
  rows: QualityRow[];
  /** Wall seconds of the whole run. */
  seconds: number;
}

/** Runs every variant on every sample; see the file comment. */
export async function runQuality(o: QualityOptions): Promise<QualityReport> {
  const started = performance.now();
  const backend = o.backend ?? "gpu";
  const gpu = backend === "cpu"
    ? undefined
    : o.gpu ?? await openGpu({ backend: webgpuOf(backend) });
  const vocab = o.model.config.vocabSize;
  const form = o.queryForm ?? "questions";
  const tasks = o.samples.map((s) => taskOf(s, form));
  if (!tasks.length) throw new UsageError("no samples to run");
  const variants = o.variants[0]?.strategy === "dense"
    ? o.variants
    : [{ strategy: "dense", hosts: 1, exact: true } as Variant, ...o.variants];
  const reference: Float32Array[] = [];
  const rows: QualityRow[] = [];
  for (const v of variants) {
    const row = await runVariant(o, v, tasks, vocab, gpu, reference);
    rows.push(row);
    o.log?.(formatProgress(row));
    await o.onRow?.(rows);
  }
  return {
    device: gpu ? gpu.info.description : "float64 CPU reference executor",
    backend,
    int8: o.int8 ?? null,
    samples: tasks.length,
    contextTokens: tasks[0].context.length,
    questionTokens: tasks[0].questions.length,
    queryTokens: tasks[0].query.length,
    queryForm: form,
    rows,
    seconds: (performance.now() - started) / 1000,
  };
}

/** Runs one variant over every task, one plan and session per task shape. */
async function runVariant(
  o: QualityOptions,
  v: Variant,
  tasks: Task[],
  vocab: number,
  gpu: Gpu | undefined,
  reference: Float32Array[],
): Promise<QualityRow> {
  const byShape = new Map<string, number[]>();
  tasks.forEach((t, i) => {
    const key = `${t.context.length}/${t.questions.length}/${t.query.length}`;
    byShape.set(key, [...byShape.get(key) ?? [], i]);
  });
  const perSample = new Array<number>(tasks.length).fill(0);
  const errors = new Array<number>(tasks.length).fill(0);
  const ms: number[] = [];
  let lengths: { anchor: number | null; passing: number | null } | undefined;
  for (const indices of byShape.values()) {
    const first = tasks[indices[0]];
    const { strategy, anchor, passing } = strategyOf(v, first.context.length, o.apb);
    lengths ??= { anchor, passing };
    const plan = planFor(o, v, strategy, first);
    const session = await Session.open(
      plan,
      o.backend === "cpu" ? { backend: "cpu", weights: o.weights } : { gpu, weights: o.weights },
    );
    try {
      for (const i of indices) {
        const t = tasks[i];
        const start = performance.now();
        await session.prefill(t.context, t.query);
        const run = await session.extend(t.questions, { readLogits: true });
        ms.push(performance.now() - start);
        const logits = questionLogits(run.logits, plan);
        if (v.strategy === "dense") reference[i] = logits;
        perSample[i] = scoreAnswers(t, logits, vocab);
        errors[i] = maxRelativeError(logits, reference[i]);
      }
    } finally {
      session.destroy();
    }
  }
  const total = tasks.reduce((a, t) => a + t.answerRows.length, 0);
  const correct = perSample.reduce((a, b) => a + b, 0);
  return {
    ...v,
    anchor: lengths!.anchor,
    passingLength: lengths!.passing,
    correct,
    total,
    accuracy: correct / total,
    maxError: Math.max(...errors),
    meanError: errors.reduce((a, b) => a + b, 0) / errors.length,
    msPerSample: median(ms),
    perSample,
  };
}

/** The plan of `v` for a task's shape: no prefill logits, every question row's logits. */
function planFor(o: QualityOptions, v: Variant, strategy: Strategy, t: Task): Plan {
  const options: LowerOptions = {
    hosts: v.hosts,
    contextTokens: t.context.length,
    queryTokens: t.query.length,
    extendRows: t.questions.length,
    maxNewTokens: t.questions.length,
    prefillLogits: "none",
    extendLogits: "all",
  };
  if (o.storage?.weights) options.weights = o.storage.weights;
  if (o.storage?.kv) options.kv = o.storage.kv;
  if (o.int8) options.int8 = o.int8;
  return lower(o.model, strategy, options);
}

/** The question rows' logits of an extend run (only the appending host produces them). */
function questionLogits(outputs: { logits: Float32Array | Float64Array | null }[], plan: Plan) {
  const out = outputs.find((l) => l.logits);
  if (!out) throw new Error(`${plan.strategy.name}: the question part produced no logits`);
  return Float32Array.from(out.logits!);
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The rows of `report` whose exact strategy misses dense by more than `tolerance`. */
export function exactFailures(report: QualityReport, tolerance = EXACT_TOLERANCE): QualityRow[] {
  return report.rows.filter((r) => r.exact && r.strategy !== "dense" && !(r.maxError <= tolerance));
}

/** A row's name, such as `apb A+P(query)+Q` or `ring`. */
export function rowName(r: Variant): string {
  if (!r.apb) return r.strategy;
  const a = r.apb;
  const parts = [a.anchor ? "A" : "", a.passing ? `P(${a.scorer})` : "", a.queryInAnchor ? "Q" : ""]
    .filter(Boolean);
  return `apb ${parts.length ? parts.join("+") : "blockwise"}`;
}

function percent(r: QualityRow): string {
  return `${(100 * r.accuracy).toFixed(1)}%`;
}

function formatProgress(r: QualityRow): string {
  return `${rowName(r).padEnd(24)} H=${r.hosts}  ${percent(r).padStart(6)} ` +
    `(${r.correct}/${r.total})  max rel. error ${r.maxError.toExponential(2)}  ` +
    `${r.msPerSample.toFixed(1)} ms/sample`;
}

/** The report as a markdown table, one row per variant. */
export function formatTable(report: QualityReport): string {
  const head = [
    "| strategy | H | l_a | l_p | scorer | query in anchor | Table 3 row | accuracy | correct | " +
    "max rel. error vs dense | mean rel. error | ms/sample |",
    "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
  ];
  const body = report.rows.map((r) => {
    const a = r.apb;
    const cells = [
      rowName(r) + (r.note ? ` (${r.note})` : ""),
      String(r.hosts),
      r.anchor === null ? "–" : String(r.anchor),
      r.passingLength === null ? "–" : String(r.passingLength),
      a?.passing ? a.scorer : "–",
      a ? (a.queryInAnchor ? "yes" : "no") : "–",
      a?.table3 === undefined ? "–" : String(a.table3),
      percent(r),
      `${r.correct}/${r.total}`,
      r.strategy === "dense"
        ? "(reference)"
        : r.maxError.toExponential(2) + (r.exact ? " (exact)" : ""),
      r.strategy === "dense" ? "–" : r.meanError.toExponential(2),
      r.msPerSample.toFixed(1),
    ];
    return `| ${cells.join(" | ")} |`;
  });
  return [...head, ...body].join("\n");
}

/** `deno task bench quality`: see the file comment; exit 1 when an exact strategy misses dense. */
export const qualitySuite = async (values: Options): Promise<number> => {
  if (!values.weights) {
    throw new UsageError(
      "usage: deno task bench quality --weights DIR --eval FILE [--hosts 4,8] [--samples N] " +
        "[--tokens N] [--anchor N] [--passing N] [--query-form questions|first|all] " +
        "[--query-offset N] [--seed S] [--retaining-heads PATH] [--backend gpu|dawn|cpu] " +
        "[--int8 [--int8-attention int8|f32]] [--strategies dense,apb,...] [--json FILE]",
    );
  }
  const evalFile = values.eval ?? `${values.weights}/eval_retrieval_4k.jsonl`;
  const hostCounts = (values.hosts ?? "4,8").split(",").map((h) =>
    int({ hosts: h } as Options, "hosts")!
  );
  const backend = values.backend === "deno" ? "gpu" : values.backend ?? "gpu";
  if (backend !== "gpu" && backend !== "dawn" && backend !== "cpu") {
    throw new UsageError(`--backend must be gpu (or deno), dawn or cpu, got "${backend}"`);
  }
  // The CPU executor runs the int8 kernels' float64 references, so --int8 works there too.
  if (values.int8 && backend === "gpu") throw new UsageError(INT8_NEEDS_DAWN);
  const wanted = values.strategies?.split(",").map((s) => s.trim());
  const checkpoint = await openCheckpoint(values.weights);
  const heads = values["retaining-heads"]
    ? await openRetainingHeads(values["retaining-heads"])
    : undefined;
  try {
    const model = llamaFromHuggingFace(checkpoint.config);
    const seed = int(values, "seed", 0);
    const weights = checkpointWeights(checkpoint, { seed, retainingHeads: heads });
    let samples = readEval(await Deno.readTextFile(evalFile), evalFile);
    const cut = int(values, "tokens");
    if (cut !== undefined) {
      samples = samples.map((s) => cutSample(s, cut)).filter((s): s is EvalSample => s !== null);
    }
    samples = samples.slice(0, int(values, "samples", samples.length));
    const variants = variantsFor(hostCounts, model.config, heads !== undefined)
      .filter((v) => v.strategy === "dense" || !wanted || wanted.includes(v.strategy));
    const gpu = backend === "cpu" ? undefined : await openGpu({ backend: webgpuOf(backend) });
    const int8 = int8From(values, gpu?.info);
    console.log(
      `quality: ${samples.length} samples of ${evalFile}, ${variants.length} rows, on ` +
        (gpu ? `${gpu.info.description} (${backend})` : "the float64 CPU executor") +
        `, kernels ${int8 ? int8Text(int8) : "f32"}`,
    );
    const weightStorage = storage(values, "storage");
    const kvStorage = storage(values, "kv");
    const started = new Date().toISOString();
    // The JSON is rewritten after every row, so a run cut short still leaves its rows.
    const save = async (report: Partial<QualityReport>) => {
      if (!values.json) return;
      const record = {
        date: started,
        command: `deno task bench ${Deno.args.slice(1).join(" ")}`,
        eval: evalFile,
        weights: values.weights,
        exactTolerance: EXACT_TOLERANCE,
        ...report,
      };
      await Deno.writeTextFile(values.json, JSON.stringify(record, null, 1) + "\n");
    };
    const queryForm = values["query-form"] ?? "questions";
    if (!["questions", "first", "all"].includes(queryForm)) {
      throw new UsageError(`--query-form must be questions, first or all, got "${queryForm}"`);
    }
    const report = await runQuality({
      model,
      weights,
      samples,
      variants,
      backend,
      gpu,
      int8,
      queryForm: queryForm as QueryForm,
      apb: {
        anchor: int(values, "anchor"),
        passing: int(values, "passing"),
        queryOffset: int(values, "query-offset", 1),
        seed,
        retainingHidden: heads?.expectFor(model.config),
      },
      storage: { weights: weightStorage, kv: kvStorage },
      log: (line) => console.log(line),
      onRow: (rows) =>
        save({ device: gpu?.info.description ?? "float64 CPU", backend, int8, rows }),
    });
    // Exactness is promised in f32; f16 storage and int8 kernels round differently per layout.
    const f32 = [weightStorage, kvStorage].every((s) => (s ?? "f32") === "f32") && !int8;
    const failures = f32 ? exactFailures(report) : [];
    await save(report);
    console.log(
      `\n${report.samples} samples, ${report.contextTokens} context + ${report.questionTokens} ` +
        `question tokens (APB query: ${report.queryTokens} tokens, "${report.queryForm}"), ` +
        `${report.seconds.toFixed(1)} s on ${report.device}, kernels ${
          report.int8 ? int8Text(report.int8) : "f32"
        }\n`,
    );
    console.log(formatTable(report));
    for (const f of failures) {
      console.error(
        `FAILED: ${rowName(f)} on ${f.hosts} hosts differs from dense by ` +
          `${f.maxError.toExponential(2)} (> ${EXACT_TOLERANCE})`,
      );
    }
    return failures.length ? 1 : 0;
  } finally {
    checkpoint.close();
    heads?.close();
  }
};

/** The WebGPU implementation behind a GPU backend of this suite ("gpu" is Deno's own). */
function webgpuOf(backend: "gpu" | "dawn"): "deno" | "dawn" {
  return backend === "dawn" ? "dawn" : "deno";
}
