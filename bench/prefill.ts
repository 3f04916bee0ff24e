// `deno task bench prefill`: every strategy's prefill on a real model shape (seeded weights, f16
// storage) on the GPU, across context lengths and host counts. Virtual hosts share one GPU, so the
// measured wall time is all hosts' work in sequence; each host's GPU time comes from timestamp
// queries, and the parallel critical path adds each phase's transfers at a modelled link speed.
// --backend dawn runs on Dawn's WebGPU; --int8 (which needs it) lowers every strategy to the int8
// tensor-core kernels the adapter offers (--int8-attention f32 keeps attention in f32), and each
// int8 run is compared with the same strategy's f32 plan (same seeded weights and tokens, same
// device; one extra, untimed prefill per job, left out with --no-int8-reference).

import { path } from "../compiler/_deps.ts";
import { maxRelativeError } from "../compiler/cli/compare.ts";
import { loadModelFile, UsageError } from "../compiler/cli/model_file.ts";
import {
  gpuBackend,
  int,
  int8From,
  intList,
  type Options,
  storage,
} from "../compiler/cli/options.ts";
import { syntheticTokens } from "../compiler/cli/run.ts";
import type { ModelDefinition } from "../compiler/dsl.ts";
import { planFlops } from "../compiler/flops.ts";
import { int8Text } from "../compiler/int8.ts";
import { lower, type LowerOptions } from "../compiler/lower.ts";
import { llama } from "../compiler/models/llama.ts";
import type { Plan, PlanInt8 } from "../compiler/plan.ts";
import { strategyByName } from "../compiler/strategies/mod.ts";
import type { Strategy } from "../compiler/strategies/strategy.ts";
import { type Gpu, openGpu } from "../runtime/device.ts";
import { Session } from "../runtime/session.ts";
import { criticalPath, hostTotals, type Link, NVLINK, PCIE } from "../runtime/timing.ts";
import { lineChart } from "./chart.ts";

/** One measured prefill. */
export interface PrefillRecord {
  /** Strategy name. */
  strategy: string;
  /** Hosts. */
  hosts: number;
  /** Context tokens. */
  tokens: number;
  /** Layers run. */
  layers: number;
  /** WebGPU implementation: Deno's own or Dawn's. */
  backend: "deno" | "dawn";
  /** The int8 kernels' choice, or null for f32 kernels. */
  int8: PlanInt8 | null;
  /** Strategy parameters. */
  params: Record<string, unknown>;
  /** Wall milliseconds of the whole prefill (all virtual hosts on one GPU). */
  wallMs: number;
  /** GPU milliseconds per host. */
  hostMs: number[];
  /** Critical path in ms over NVLink and PCIe, with its compute and transfer shares. */
  critical: Record<string, { totalMs: number; computeMs: number; transferMs: number }>;
  /** FLOPs per host by the spec's convention (counted from the plan). */
  flops: number[];
  /** Max relative error of the last context token's logits against dense (same kernels). */
  errorVsDense: number | null;
  /**
   * Int8 runs: max relative error of the last context token's logits against the same strategy's
   * f32 plan (same weights, tokens and device); null for f32 runs or without the reference.
   */
  errorVsF32: number | null;
}

const LINKS: Link[] = [NVLINK, PCIE];

/** Runs the suite; returns the exit code. */
export async function prefillSuite(values: Options): Promise<number> {
  const model = await benchModel(values);
  const lengths = intList(values.lengths ?? "8k,32k,128k", "lengths");
  const hostCounts = intList(values.hosts ?? "2,4,8", "hosts");
  const weights = storage(values, "storage") ?? "f16";
  const kv = storage(values, "kv") ?? "f16";
  const backend = gpuBackend(values);
  const gpu = await openGpu({ backend });
  const int8 = int8From(values, gpu.info);
  const f32Reference = int8 !== null && !values["no-int8-reference"];
  console.log(
    `adapter: ${gpu.info.description} (${backend}); model ${model.config.name}, ` +
      `${model.config.layers} layer(s), weights ${weights}, KV ${kv}, kernels ${
        int8 ? int8Text(int8) : "f32"
      }${f32Reference ? " (each run also against its f32 plan)" : ""}`,
  );
  // --anchor and --passing set APB's lengths (the defaults scale the paper's table to the block).
  const apbOptions = Object.fromEntries(
    [["anchor", int(values, "anchor")], ["passing", int(values, "passing")]].filter(([, v]) =>
      v !== undefined
    ),
  );
  const wanted = (values.strategies ?? "dense,ring,zigzag,ulysses,star,apb").split(",");
  const jobs: { tokens: number; hosts: number; strategy: Strategy }[] = [];
  for (const tokens of lengths) {
    if (wanted.includes("dense")) {
      jobs.push({ tokens, hosts: 1, strategy: strategyByName("dense") });
    }
    for (const hosts of hostCounts) {
      for (const name of ["ring", "zigzag", "ulysses", "star", "apb"]) {
        if (!wanted.includes(name)) continue;
        const c = model.config;
        if (name === "ulysses" && (c.heads % hosts || c.kvHeads % hosts)) continue;
        jobs.push({
          tokens,
          hosts,
          strategy: strategyByName(name, name === "apb" ? apbOptions : {}),
        });
      }
    }
  }
  const records: PrefillRecord[] = [];
  const denseLogits = new Map<number, Float32Array | Float64Array>();
  for (const [i, job] of jobs.entries()) {
    progress(i, jobs.length, `${fmtTokens(job.tokens)} ${job.strategy.name} on ${job.hosts}`);
    const options: LowerOptions = {
      hosts: job.hosts,
      contextTokens: job.tokens,
      maxNewTokens: 1,
      weights,
      kv,
    };
    const plan = lower(model, job.strategy, { ...options, int8 });
    const { record, logits } = await onOwnDevice(gpu, backend, (g) => measure(plan, g, backend));
    if (job.strategy.name === "dense") denseLogits.set(job.tokens, logits);
    const reference = denseLogits.get(job.tokens);
    record.errorVsDense = reference ? maxRelativeError(logits, reference) : null;
    if (f32Reference) {
      const reference = lower(model, job.strategy, options);
      const f32 = await onOwnDevice(gpu, backend, (g) => prefillLogits(reference, g));
      record.errorVsF32 = maxRelativeError(logits, f32);
    }
    records.push(record);
    // Written after every run, so a run cut short by a time limit keeps what it measured.
    if (values.json) await writeJson(values.json, gpu, records);
  }
  progress(jobs.length, jobs.length, "done");
  console.error("");
  const table = markdownTable(records);

  if (values.svg) await Deno.writeTextFile(values.svg, chart(records, model));
  console.log(table);
  return 0;
}

/**
 * Runs `fn` on a device of its own under Dawn, destroyed afterwards; under Deno's WebGPU on `gpu`.
 * Under Dawn, an APB 128K int8 plan (52 GiB) followed by its f32 reference (45 GiB) on one device
 * ran out of the H100's 80 GB even with the first session destroyed and the queue drained (its
 * buffers' memory was not back yet); with a device per session, destroyed, both run.
 */
async function onOwnDevice<T>(
  gpu: Gpu,
  backend: "deno" | "dawn",
  fn: (gpu: Gpu) => Promise<T>,
): Promise<T> {
  if (backend !== "dawn") return await fn(gpu);
  const own = await openGpu({ backend });
  try {
    return await fn(own);
  } finally {
    own.device.destroy();
  }
}

/** The last context token's logits of one untimed prefill (the f32 reference of an int8 run). */
async function prefillLogits(plan: Plan, gpu: Gpu): Promise<Float32Array | Float64Array> {
  const session = await Session.open(plan, { gpu, weights: { seed: 1 } });
  try {
    const context = syntheticTokens(plan.shape.contextTokens, plan.model.config.vocabSize, 1);
    return (await session.prefill(context, [], { readLogits: true })).logits[0].logits!;
  } finally {
    session.destroy();
  }
}

async function benchModel(values: Options): Promise<ModelDefinition> {
  const name = values.model ?? "llama3_8b";
  const file = name.endsWith(".ts")
    ? name
    : path.join(import.meta.dirname!, "..", "examples", `${name}.ts`);
  const base = await loadModelFile(file);
  const layers = int(values, "layers", base.config.layers);
  if (layers < 1 || layers > base.config.layers) {
    throw new UsageError(`--layers must be between 1 and ${base.config.layers}`);
  }
  return layers === base.config.layers ? base : llama({ ...base.config, layers });
}

async function measure(
  plan: Plan,
  gpu: Gpu,
  backend: "deno" | "dawn",
): Promise<{ record: PrefillRecord; logits: Float32Array | Float64Array }> {
  const session = await Session.open(plan, { gpu, weights: { seed: 1 } });
  const context = syntheticTokens(plan.shape.contextTokens, plan.model.config.vocabSize, 1);
  // Warm up (first touch of memory, clocks) unless the run is long enough for that to be noise:
  // above ~5e14 FLOPs a run takes tens of seconds.
  const long = planFlops(plan).reduce((a, b) => a + b, 0) > 5e14;
  const warm = long ? null : await session.prefill(context);
  let best = await session.prefill(context, [], { readLogits: true });
  // Short runs vary more: take the better of two; long ones (seconds of GPU work) are steady.
  if (warm && warm.timing.wallMs < 3000) {
    const again = await session.prefill(context, [], { readLogits: true });
    const gpuOf = (r: typeof best) =>
      Math.max(...hostTotals(r.timing.phases ?? [], plan.hosts.length));
    if (gpuOf(again) < gpuOf(best)) best = again;
  }
  session.destroy();
  const phases = best.timing.phases;
  if (!phases) {
    throw new UsageError("this adapter has no timestamp queries; prefill timing needs them");
  }
  const critical = Object.fromEntries(LINKS.map((l) => [l.name, criticalPath(phases, l)]));
  const record: PrefillRecord = {
    strategy: plan.strategy.name,
    hosts: plan.strategy.hosts,
    tokens: plan.shape.contextTokens,
    layers: plan.model.config.layers,
    backend,
    int8: plan.int8 ?? null,
    params: plan.strategy.params,
    wallMs: best.timing.wallMs,
    hostMs: hostTotals(phases, plan.hosts.length),
    critical,
    flops: planFlops(plan),
    errorVsDense: null,
    errorVsF32: null,
  };
  return { record, logits: best.logits[0].logits! };
}

/**
 * The records as a markdown table. Runs on Dawn or with int8 kernels add two columns: the backend
 * and kernels, and the int8 logits' error against the same strategy's f32 plan.
 */
export function markdownTable(records: PrefillRecord[]): string {
  const cp = (r: PrefillRecord) => r.critical[NVLINK.name].totalMs;
  const find = (r: PrefillRecord, strategy: string, hosts: number) =>
    records.find((x) => x.tokens === r.tokens && x.strategy === strategy && x.hosts === hosts);
  const ratio = (r: PrefillRecord, other: PrefillRecord | undefined) =>
    other ? (cp(other) / cp(r)).toFixed(2) : "–";
  const extra = records.some((r) => r.int8 || r.backend === "dawn");
  const lines = [
    `| tokens | hosts | strategy | layers | wall ms | GPU ms/host (max, min) | critical path NVLink ms | PCIe ms | TFLOP | TFLOP/s (busiest host) | × dense | × ring | × star | logits err vs dense |` +
    (extra ? ` backend, kernels | int8 logits err vs f32 |` : ""),
    `|---|---|---|---|---|---|---|---|---|---|---|---|---|---|` + (extra ? `---|---|` : ""),
  ];
  for (const r of records) {
    const flops = r.flops.reduce((a, b) => a + b, 0);
    const busiest = r.hostMs.indexOf(Math.max(...r.hostMs));
    const rate = r.flops[busiest] / (r.hostMs[busiest] * 1e-3) / 1e12;
    const kernels = r.int8
      ? `int8 ${r.int8.matrix.m}x${r.int8.matrix.n}x${r.int8.matrix.k}, attention ${
        r.int8.attention ?? "f32"
      }`
      : "f32";
    lines.push(
      `| ${fmtTokens(r.tokens)} | ${r.hosts} | ${r.strategy} | ${r.layers} | ${
        r.wallMs.toFixed(0)
      } | ` +
        `${Math.max(...r.hostMs).toFixed(1)}, ${Math.min(...r.hostMs).toFixed(1)} | ${
          cp(r).toFixed(1)
        } | ` +
        `${r.critical[PCIE.name].totalMs.toFixed(1)} | ${(flops / 1e12).toFixed(2)} | ${
          rate.toFixed(1)
        } | ` +
        `${ratio(r, find(r, "dense", 1))} | ${ratio(r, find(r, "ring", r.hosts))} | ` +
        `${ratio(r, find(r, "star", r.hosts))} | ` +
        `${r.errorVsDense === null ? "–" : r.errorVsDense.toExponential(1)} |` +
        (extra
          ? ` ${r.backend}, ${kernels} | ${
            r.errorVsF32 === null ? "–" : r.errorVsF32.toExponential(1)
          } |`
          : ""),
    );
  }
  return lines.join("\n");
}

function chart(records: PrefillRecord[], model: ModelDefinition): string {
  const hosts = Math.max(...records.map((r) => r.hosts));
  const strategies = [...new Set(records.filter((r) => r.hosts === hosts).map((r) => r.strategy))];
  const dense = (tokens: number) =>
    records.find((r) => r.strategy === "dense" && r.tokens === tokens);
  const series = strategies.map((name) => ({
    name: `${name} (H=${hosts})`,
    points: records.filter((r) => r.strategy === name && r.hosts === hosts).map((r) => ({
      x: r.tokens,
      y: dense(r.tokens)!.critical[NVLINK.name].totalMs / r.critical[NVLINK.name].totalMs,
    })),
  }));
  return lineChart(
    `Prefill speedup over dense (critical path, ${NVLINK.name}), ${model.config.name}, ${
      records[0].layers
    } layer(s)`,
    "speedup over dense",
    series,
    fmtTokens,
  );
}

async function writeJson(file: string, gpu: Gpu, records: PrefillRecord[]): Promise<void> {
  const date = new Date().toISOString();
  await Deno.writeTextFile(file, JSON.stringify({ date, device: gpu.info, records }, null, 1));
}

function fmtTokens(n: number): string {
  return n % 1024 === 0 ? `${n / 1024}K` : String(n);
}

function progress(done: number, total: number, what: string): void {
  const width = 30;
  const filled = Math.round((done / total) * width);
  const bar = "#".repeat(filled) + ".".repeat(width - filled);
  Deno.stderr.writeSync(new TextEncoder().encode(`\r[${bar}] ${done}/${total} ${what.padEnd(40)}`));
}
