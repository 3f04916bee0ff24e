// `deno task bench kernels [--json FILE] [--tune] [--eval gemm,attention,memory]`: GPU time of
// every kernel family the prefill runs, at Llama-3.1-8B shapes, from timestamp queries (warm-up
// pass, then ≥ 10 passes of enough back-to-back dispatches to dwarf pass overhead; the median per
// dispatch), as TFLOP/s or GB/s and as a fraction of the H100 ceiling measured natively (cuBLAS
// FP32 51.5 and FP16 tensor-core 749 TFLOP/s, PyTorch SDPA bf16 ≈ 590 TFLOP/s, D2D copy ≈ 3.0
// TB/s counting bytes read and written). Before timing, each benchmarked spec (the tile the
// executor would run, or with --tune the measured winner, then cached) is checked on the GPU
// against its float64 reference on a small slice. Prints a markdown table last.

import type { Options } from "../compiler/cli/options.ts";
import { openGpu } from "../runtime/device.ts";
import { runKernel } from "../runtime/run_kernel.ts";
import { compileKernel } from "../runtime/pipelines.ts";
import {
  adapterKey,
  bindingLengths,
  kernelBuffers,
  saveTuningCache,
  timeKernel,
  tunedSpec,
  tuneKernel,
  tuningFile,
  tuningKey,
} from "../runtime/autotune.ts";
import { kernelFamily } from "../wgsl/mod.ts";
import type { HostBuffers, Sizes } from "../wgsl/kernel.ts";

/** Ceilings measured natively on the H100 (docs/webgpu-notes.md, KINDS.md). */
const CEILING = {
  fp32: 51.5, // cuBLAS SGEMM, TFLOP/s
  fp16: 749, // cuBLAS FP16 tensor cores, TFLOP/s
  sdpa: 590, // PyTorch SDPA bf16 causal, Hq 32 Hkv 8 d 128, TFLOP/s
  copy: 3000, // device-to-device copy, GB/s counting read + write
};

/** One benchmark: a family, its base spec (as a plan records it), sizes and the work done. */
interface Case {
  group: "gemm" | "attention" | "memory";
  name: string;
  family: string;
  spec: Record<string, unknown>;
  sizes: Sizes;
  /** Floating-point operations of one dispatch (compute-bound kernels). */
  flops?: number;
  /** Fewest bytes one dispatch must move (memory-bound kernels). */
  bytes?: number;
  /** Sizes of the correctness slice (same spec). */
  slice: Sizes;
}

/** A measured row of the report. */
interface Row {
  group: string;
  name: string;
  kernel: string;
  ms: number;
  rate: number;
  unit: string;
  ceiling: string;
  fraction: number;
  fp16Fraction?: number;
  check: string;
  reps: number;
  samples: number[];
}

const GEMM_BASE = { bias: false, accumulate: false, activation: "none" };

function gemm(name: string, M: number, N: number, K: number, weight: "f32" | "f16"): Case {
  return {
    group: "gemm",
    name: `${name} ${M}×${N}×${K} ${weight}`,
    family: "matmul",
    spec: { weight, ...GEMM_BASE },
    sizes: { M, N, K, aOffset: 0, cStride: N, cOffset: 0 },
    flops: 2 * M * N * K,
    bytes: 4 * M * K + (weight === "f16" ? 2 : 4) * N * K + 4 * M * N,
    slice: {
      M: Math.min(M, 133),
      N: Math.min(N, 70),
      K: Math.min(K, 68),
      aOffset: 1,
      cStride: 73,
      cOffset: 2,
    },
  };
}

function causal(tokens: number, kv: "f32" | "f16"): Case {
  const [heads, kvHeads, d] = [32, 8, 128];
  const segment = (rows: number) => ({
    nseg: 1,
    src0: 0,
    kvStart0: 0,
    kvCount0: rows,
    qStart0: 0,
    qEnd0: rows,
    causal0: 1,
    diag0: 0,
  });
  const shape = (rows: number) => ({
    qRows: rows,
    heads,
    kvHeads,
    qOffset: 0,
    outOffset: 0,
    scale: 1 / Math.sqrt(d),
    ...segment(rows),
  });
  const pairs = (tokens * (tokens + 1)) / 2;
  return {
    group: "attention",
    name: `causal GQA 32/8 d128 ${tokens >= 1024 ? `${tokens / 1024}K` : tokens} ${kv}`,
    family: "attention",
    spec: { headDim: d, kv, accumulate: false },
    sizes: shape(tokens),
    flops: 4 * d * pairs * heads,
    slice: shape(150),
  };
}

function memory(
  name: string,
  family: string,
  spec: Record<string, unknown>,
  sizes: Sizes,
  bytes: number,
  slice: Sizes,
): Case {
  return { group: "memory", name, family, spec, sizes, bytes, slice };
}

/**
 * The benchmark cases. `scale` divides every model dimension except the head size (for smoke
 * runs on software adapters: APB_BENCH_SCALE=64 keeps the suite to seconds there).
 */
function cases(scale = 1): Case[] {
  const s = (n: number) => Math.max(4, Math.round(n / scale / 4) * 4);
  const T = s(16384);
  const list: Case[] = [];
  for (const w of ["f32", "f16"] as const) {
    list.push(
      gemm("square", s(4096), s(4096), s(4096), w),
      gemm("square", s(8192), s(8192), s(8192), w),
    );
    for (const t of [s(4096), T]) {
      list.push(
        gemm("qkv", t, s(6144), s(4096), w),
        gemm("o", t, s(4096), s(4096), w),
        gemm("gate/up", t, s(14336), s(4096), w),
        gemm("down", t, s(4096), s(14336), w),
      );
    }
    list.push(gemm("decode", 1, s(4096), s(4096), w));
  }
  for (const tokens of [s(4096), s(16384), s(32768)]) {
    list.push(causal(tokens, "f32"), causal(tokens, "f16"));
  }
  for (const cols of [s(4096), s(14336)]) {
    const n = T * cols;
    list.push(
      memory(
        `rmsnorm ${T}×${cols}`,
        "rmsnorm",
        { weight: "f32" },
        {
          rows: T,
          cols,
          eps: 1e-5,
        },
        8 * n + 4 * cols,
        { rows: 5, cols: 4 * 37, eps: 1e-5 },
      ),
      memory(`silu_mul ${T}×${cols}`, "silu_mul", {}, { rows: T, cols }, 12 * n, {
        rows: 5,
        cols: 4 * 37,
      }),
      memory(`add ${T}×${cols}`, "add", {}, { count: n }, 12 * n, { count: 4 * 301 }),
      memory(
        `copy2d f32 ${T}×${cols}`,
        "copy2d",
        { elem: "f32" },
        {
          rows: T,
          cols,
          srcStride: cols,
          srcOffset: 0,
          dstStride: cols,
          dstOffset: 0,
        },
        8 * n,
        {
          rows: 5,
          cols: 4 * 9,
          srcStride: 4 * 11,
          srcOffset: 4,
          dstStride: 4 * 10,
          dstOffset: 8,
        },
      ),
    );
  }
  // RoPE of the Q part of a fused QKV row (32 heads of 128 in a 6144-wide row), and of K.
  for (const [part, heads, inOffset] of [["q", 32, 0], ["k", 8, 32 * 128]] as const) {
    const x = T * heads * 128;
    list.push(
      memory(
        `rope ${part} ${T}×${heads}×128`,
        "rope",
        { rotate: true, out: "f32" },
        {
          rows: T,
          heads,
          headDim: 128,
          inStride: 48 * 128,
          inOffset,
          outRowOffset: 0,
          posOffset: 0,
        },
        8 * x + 4 * T * 128 + 4 * T,
        {
          rows: 7,
          heads: 3,
          headDim: 16,
          inStride: 60,
          inOffset: 4,
          outRowOffset: 1,
          posOffset: 2,
        },
      ),
    );
  }
  list.push(
    memory(
      `embed f16 ${T}×${s(4096)} (vocab ${s(128256)})`,
      "embed",
      { table: "f16" },
      {
        rows: T,
        hidden: s(4096),
        vocab: s(128256),
        idsOffset: 0,
      },
      T * s(4096) * (2 + 4) + 4 * T,
      { rows: 9, hidden: 4 * 13, vocab: 20, idsOffset: 1 },
    ),
  );
  return list;
}

// Float64 inputs for the correctness slice: values in [−1, 1]; ids and positions in range.
function sliceBuffers(c: Case, spec: unknown): HostBuffers {
  const lengths = bindingLengths(c.family, spec, c.slice);
  const kernel = kernelFamily(c.family).generate(spec);
  let seed = 12345;
  const next = () => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed / 2 ** 32;
  };
  const out: HostBuffers = {};
  for (const b of kernel.bindings) {
    const n = lengths[b.name];
    out[b.name] = b.elem === "u32"
      ? Float64Array.from({ length: n }, (_, i) => b.name === "ids" ? i % c.slice.vocab : i)
      : Float64Array.from({ length: n }, () => {
        const v = 2 * next() - 1;
        return b.elem === "f16" ? Math.f16round(v) : Math.fround(v);
      });
  }
  if (c.family === "rope") {
    // The table holds (cos, sin) pairs of angles, as ropeTable makes them.
    const t = out.table;
    for (let i = 0; i < t.length; i += 2) {
      const angle = 3 * next();
      [t[i], t[i + 1]] = [Math.fround(Math.cos(angle)), Math.fround(Math.sin(angle))];
    }
  }
  return out;
}

// Largest |gpu − ref| relative to the tolerance of the family (≤ 1 passes).
async function check(device: GPUDevice, c: Case, spec: unknown): Promise<number> {
  const family = kernelFamily(c.family);
  const input = sliceBuffers(c, spec);
  const ref: HostBuffers = {};
  for (const [k, v] of Object.entries(input)) ref[k] = v.slice();
  family.reference(spec, c.slice, ref);
  const got = await runKernel(device, family, spec, c.slice, input);
  let worst = 0;
  for (const [name, values] of Object.entries(got)) {
    for (let i = 0; i < values.length; i++) {
      const [a, e] = [values[i], ref[name][i]];
      if (Object.is(a, e) || (Number.isNaN(a) && Number.isNaN(e))) continue;
      // f32 dot products: K·2⁻²³ relative to the sum of |terms| (≤ K for entries in [−1, 1]);
      // elsewhere the f32 tolerance of the kernel tests.
      const K = c.family === "matmul" ? c.slice.K : 0;
      const tol = 1e-4 + 1e-4 * Math.abs(e) + K * K * 2 ** -23;
      worst = Math.max(worst, Number.isFinite(e) ? Math.abs(a - e) / tol : Infinity);
    }
  }
  return worst;
}

function fmt(x: number, digits = 1): string {
  return Number.isFinite(x) ? x.toFixed(digits) : String(x);
}

/** Runs the suite; returns 1 when a correctness check failed. */
export async function kernelsSuite(values: Options): Promise<number> {
  const gpu = await openGpu();
  const device = gpu.device;
  const started = new Date();
  const only = values.eval?.split(",");
  const scale = Number(Deno.env.get("APB_BENCH_SCALE") ?? 1);
  // APB_BENCH_CASES: a regular expression on case names (e.g. "32K") to run only those.
  const pick = new RegExp(Deno.env.get("APB_BENCH_CASES") ?? "");
  const tileList = JSON.parse(Deno.env.get("APB_BENCH_TILES") ?? "null") as unknown[] | null;
  const all = cases(scale).filter((c) => (!only || only.includes(c.group)) && pick.test(c.name));
  const tune = Boolean(values.tune);
  console.log(`device: ${gpu.info.description} (${adapterKey(device)})`);
  console.log(`tuning cache: ${tuningFile() ?? "none"}${tune ? " (tuning now)" : ""}`);
  const rows: Row[] = [];
  const tuning: unknown[] = [];
  const failures: string[] = [];
  const copy = await copyCeiling(device);
  console.log(`copyBufferToBuffer, 1 GiB: ${fmt(copy)} GB/s (read + write)`);
  const tuned = new Set<string>();
  const report = () => ({
    device: gpu.info.description,
    adapter: adapterKey(device),
    date: started.toISOString(),
    command: ["APB_BENCH_CASES", "APB_BENCH_TILES", "APB_BENCH_SCALE"]
      .filter((v) => Deno.env.get(v)).map((v) => `${v}='${Deno.env.get(v)}' `).join("") +
      `deno task bench kernels${tune ? " --tune" : ""}${only ? ` --eval ${values.eval}` : ""}`,
    copyGBs: copy,
    ceilings: CEILING,
    rows,
    tuning,
  });
  // Written after every case, so that a run cut short still leaves what it measured.
  const save = async () => {
    if (values.json) {
      await Deno.writeTextFile(values.json, JSON.stringify(report(), null, 1) + "\n");
    }
    if (tune) await saveTuningCache();
  };
  for (const c of all) {
    const family = kernelFamily(c.family);
    let spec = tunedSpec(device, c.family, c.spec, c.sizes);
    // A shape class is tuned once per run (attention's tile is shared by all lengths: tuned at
    // the shortest, used for the longer ones).
    const key = tuningKey(device, c.family, c.spec, c.sizes);
    if (tune && !tuned.has(key)) {
      tuned.add(key);
      try {
        // Every candidate is checked against the reference first: a fast wrong kernel never wins.
        const t = await tuneKernel(device, c.family, c.spec, c.sizes, {
          rounds: 4,
          passMs: 3,
          check: async (s) => {
            const worst = await check(device, c, s);
            return worst <= 1 ? null : `correctness check failed (${fmt(worst, 2)})`;
          },
        });
        spec = t.best.spec;
        tuning.push({
          name: c.name,
          timings: t.timings.map(({ key, ms, error }) => ({ key, ms, error })),
        });
        console.log(
          `tuned ${c.name}: ` +
            t.timings.slice(0, 4).map((x) => `${x.key} ${fmt(x.ms, 3)} ms`).join(", "),
        );
      } catch (e) {
        console.warn(`tuning ${c.name} failed: ${String(e).split("\n")[0]}`);
      }
    }
    // APB_BENCH_TILES: a JSON list of attention tiles to time instead of the tuned one.
    const specs = c.group === "attention" && tileList
      ? tileList.map((tile) => ({ ...c.spec, tile }))
      : [spec];
    for (const spec of specs) {
      let worst = NaN;
      try {
        worst = await check(device, c, spec);
      } catch (e) {
        console.warn(`check ${c.name}: ${String(e).split("\n")[0]}`);
      }
      const ok = worst <= 1;
      if (!ok) failures.push(c.name);
      let timing;
      const data = await kernelBuffers(device, c.family, spec, c.sizes);
      try {
        timing = await timeKernel(device, family, spec, c.sizes, data.buffers);
      } catch (e) {
        console.warn(`timing ${c.name}: ${String(e).split("\n")[0]}`);
        continue;
      } finally {
        data.destroy();
      }
      const seconds = timing.ms / 1e3;
      const compute = c.flops !== undefined && c.group !== "memory" && c.name.indexOf("decode") < 0;
      const rate = compute ? c.flops! / seconds / 1e12 : c.bytes! / seconds / 1e9;
      const ceiling = compute
        ? (c.group === "attention" ? CEILING.sdpa : CEILING.fp32)
        : CEILING.copy;
      const row: Row = {
        group: c.group,
        name: c.name,
        kernel: family.key(spec),
        ms: timing.ms,
        rate,
        unit: compute ? "TFLOP/s" : "GB/s",
        ceiling: compute
          ? (c.group === "attention" ? "SDPA bf16 590" : "cuBLAS FP32 51.5")
          : "D2D copy 3000",
        fraction: rate / ceiling,
        check: ok ? `ok (${fmt(worst, 2)})` : `FAILED (${fmt(worst, 2)})`,
        reps: timing.reps,
        samples: timing.samples,
      };
      if (c.group === "gemm" && compute) row.fp16Fraction = rate / CEILING.fp16;
      rows.push(row);
      await save();
      console.log(
        `[${fmt((Date.now() - started.getTime()) / 1e3, 0)} s] ${c.name}: ${
          fmt(timing.ms, 3)
        } ms, ${fmt(rate)} ${row.unit} ` +
          `(${fmt(100 * row.fraction)}% of ${row.ceiling}), ${row.kernel}, check ${row.check}`,
      );
    }
  }
  await save();
  if (tune) console.log(`tuning cache written: ${tuningFile()}`);
  if (values.json) console.log(`wrote ${values.json}`);
  console.log(table(rows));
  if (failures.length) console.error(`correctness check failed: ${failures.join(", ")}`);
  return failures.length ? 1 : 0;
}

function table(rows: Row[]): string {
  const lines = [
    "| kernel | shape | spec | median ms | rate | % of ceiling | check |",
    "| --- | --- | --- | ---: | ---: | ---: | --- |",
  ];
  for (const r of rows) {
    const extra = r.fp16Fraction !== undefined ? ` (${fmt(100 * r.fp16Fraction, 2)}% of FP16)` : "";
    lines.push(
      `| ${r.group} | ${r.name} | ${r.kernel} | ${fmt(r.ms, 3)} | ${fmt(r.rate)} ${r.unit} | ` +
        `${fmt(100 * r.fraction)}% of ${r.ceiling}${extra} | ${r.check} |`,
    );
  }
  return lines.join("\n");
}

// GB/s of a device-to-device copyBufferToBuffer of up to 1 GiB: from the end of an empty timed
// pass to the end of a pass whose one tiny dispatch reads the destination (so it waits for the
// copy). The same ceiling the kernels are held to, as WebGPU in Deno reaches it.
async function copyCeiling(device: GPUDevice): Promise<number> {
  if (!device.features.has("timestamp-query")) return NaN;
  const size = Math.min(1 << 30, device.limits.maxBufferSize / 4);
  const usage = GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST | GPUBufferUsage.STORAGE;
  const [src, dst] = [device.createBuffer({ size, usage }), device.createBuffer({ size, usage })];
  const small = device.createBuffer({ size: 256, usage });
  const family = kernelFamily("copy2d");
  const spec = { elem: "f32" };
  const sizes = { rows: 1, cols: 4, srcStride: 4, srcOffset: 0, dstStride: 4, dstOffset: 0 };
  const compiled = await compileKernel(device, family.generate(spec), "copy2d_f32");
  const uniform = device.createBuffer({
    size: 256,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
  device.queue.writeBuffer(uniform, 0, family.params(spec, sizes));
  const group = device.createBindGroup({
    layout: compiled.layout,
    entries: [
      { binding: 0, resource: { buffer: uniform } },
      { binding: 1, resource: { buffer: dst, offset: 0, size: 256 } },
      { binding: 2, resource: { buffer: small } },
    ],
  });
  const rounds = 6;
  const set = device.createQuerySet({ type: "timestamp", count: 4 * rounds });
  const resolve = device.createBuffer({
    size: 32 * rounds,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  });
  const read = device.createBuffer({
    size: 32 * rounds,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const encoder = device.createCommandEncoder();
  const writes = (i: number) => ({
    querySet: set,
    beginningOfPassWriteIndex: i,
    endOfPassWriteIndex: i + 1,
  });
  for (let r = 0; r < rounds; r++) {
    encoder.beginComputePass({ timestampWrites: writes(4 * r) }).end();
    encoder.copyBufferToBuffer(src, 0, dst, 0, size);
    const pass = encoder.beginComputePass({ timestampWrites: writes(4 * r + 2) });
    pass.setPipeline(compiled.pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(1);
    pass.end();
  }
  encoder.resolveQuerySet(set, 0, 4 * rounds, resolve, 0);
  encoder.copyBufferToBuffer(resolve, 0, read, 0, 32 * rounds);
  device.queue.submit([encoder.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const t = new BigUint64Array(read.getMappedRange().slice(0));
  read.unmap();
  for (const b of [src, dst, small, uniform, resolve, read]) b.destroy();
  set.destroy();
  // Round 0 is a warm-up; each later round runs from pass A's end to pass B's end.
  const ms = Array.from({ length: rounds - 1 }, (_, r) => Number(t[4 * r + 7] - t[4 * r + 5]) / 1e6)
    .sort((a, b) => a - b);
  const median = ms[Math.floor(ms.length / 2)];
  // Software adapters may not order timestamps around copies: no figure rather than a wrong one.
  return median > 0 ? (2 * size) / (median / 1e3) / 1e9 : NaN;
}

if (import.meta.main) {
  // A small entry for GPU machines: the same suite without the CLI's module graph.
  const { parse } = await import("../compiler/cli/options.ts");
  Deno.exit(await kernelsSuite(parse(Deno.args).values));
}
