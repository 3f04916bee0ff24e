// `deno task bench kernels --backend dawn` (or `deno run -A bench/kernels_dawn.ts`): the int8
// tensor-core kernels on Dawn. First correctness, each kernel against its reference on ragged
// shapes (exact for integer GEMM results), then GPU time by timestamp queries: int8 GEMM 8192³
// per tile, the Llama-3.1-8B layer shapes, quantisation, and int8 attention beside f32 attention.
// Writes everything to --json FILE (default bench/results/kernels_dawn.json) and prints a table.

import { openGpu } from "../runtime/device.ts";
import { intList } from "../compiler/cli/options.ts";
/** The options this suite reads (a subset of the CLI's). */
export type DawnBenchOptions = { json?: string; eval?: string; tune?: boolean; rows?: string };
import { runKernel } from "../runtime/run_kernel.ts";
import { compileKernel } from "../runtime/pipelines.ts";
import { timePasses } from "../runtime/gpu_timing.ts";
import {
  kernelBuffers,
  ruleSpec,
  saveTuningCache,
  timeKernel,
  tuneKernel,
} from "../runtime/autotune.ts";
import { kernelFamily } from "../wgsl/mod.ts";
import { INT8_TILES, int8Matmul, type Int8MatmulSpec, type Int8Tile } from "../wgsl/int8_matmul.ts";
import { int8Attention, type Int8AttentionSpec } from "../wgsl/int8_attention.ts";
import { kvQuantize } from "../wgsl/kv_quantize.ts";
import { kvTileLengths } from "../wgsl/_kv_tiles.ts";
import { packedStride, quantize, unpackInt8 } from "../wgsl/quantize.ts";
import { attention } from "../wgsl/attention.ts";
import type { HostBuffers, KernelFamily, Sizes, StorageType } from "../wgsl/kernel.ts";

type Row = Record<string, string | number | boolean>;

/** Runs the suite; returns the exit code (1 when a correctness check failed). */
export async function kernelsDawnSuite(values: DawnBenchOptions = {}): Promise<number> {
  const started = Date.now();
  const gpu = await openGpu({ backend: "dawn" });
  const device = gpu.device;
  const configs = gpu.info.subgroupMatrixConfigs ?? [];
  console.log(
    `adapter: ${gpu.info.description} (${gpu.info.backend}); subgroup ${gpu.info.subgroupMaxSize}`,
  );
  console.log(
    `subgroup-matrix configs: ${
      configs.map((c) => `${c.componentType}→${c.resultComponentType} ${c.M}x${c.N}x${c.K}`).join(
        ", ",
      )
    }`,
  );
  const i8 = configs.filter((c) => c.componentType === "i8" && c.resultComponentType === "i32");
  const shapes = i8.map((c) => ({ m: c.M, n: c.N, k: c.K }));
  const matrix = shapes.find((s) => s.n === 16) ?? shapes[0];
  if (!matrix) throw new Error("no i8→i32 subgroup-matrix configuration");
  const subgroupSize = gpu.info.subgroupMaxSize || 32;
  const checks: Row[] = [];
  const timings: Row[] = [];
  // Printed as they come, so that a run cut short still reports what it measured.
  const timed = (row: Row) => {
    timings.push(row);
    console.log(`timing ${JSON.stringify(row)}`);
  };
  const only = values.eval; // e.g. "gemm,attention" to run a subset
  const want = (what: string) => !only || only.split(",").includes(what);

  const record = (row: Row) => {
    checks.push(row);
    console.log(`check ${JSON.stringify(row)}`);
  };

  // --- correctness: GEMM, raw i32 (exact) for every tile and both load forms ---
  if (want("gemm")) {
    for (const [name, tile] of Object.entries(INT8_TILES)) {
      for (const legacyLoads of [false, true]) {
        if (legacyLoads && name !== "128x128x64/64x64") continue;
        for (const m of shapes) {
          if (m !== matrix && name !== "128x128x64/64x64") continue;
          const spec = { ...plainGemm(m, subgroupSize, tile, "i32"), legacyLoads };
          for (const [M, N, K] of [[200, 136, 200], [129, 257, 512], [16, 64, 64]]) {
            record({
              kernel: "int8_matmul i32",
              tile: name,
              matrix: `${m.m}x${m.n}x${m.k}`,
              legacyLoads,
              M,
              N,
              K,
              ...await gemmCheck(device, spec, M, N, K),
            });
          }
        }
      }
    }
    // Fused epilogues against the reference.
    for (
      const epi of [
        { bias: false, accumulate: false, activation: "none" },
        { bias: true, accumulate: true, activation: "silu" },
        { bias: true, accumulate: false, activation: "none" },
      ] as const
    ) {
      const spec: Int8MatmulSpec = {
        matrix,
        tile: INT8_TILES["64x128x64/32x64"],
        subgroupSize,
        output: "f32",
        biasType: "f16",
        ...epi,
      };
      record({
        kernel: "int8_matmul f32",
        ...epi,
        ...await gemmCheck(device, spec, 150, 200, 300),
      });
    }
  }
  if (want("quantize")) {
    for (const smooth of ["none", "divide"] as const) {
      const spec = { input: "f32" as const, smooth };
      const rows = 37;
      const cols = 333;
      const qStride = packedStride(cols);
      const buffers: HostBuffers = {
        x: seeded((rows + 2) * cols, 5, -3, 3),
        q: new Float64Array(rows * qStride),
        scale: new Float64Array(rows),
      };
      if (smooth !== "none") buffers.smoothing = seeded(cols, 6, 0.5, 2);
      const sizes = { rows, cols, xOffset: 2, qStride };
      const { gpu: out, ref } = await both(device, quantize, spec, sizes, buffers);
      let codeOff = 0;
      let codeBig = 0;
      for (let r = 0; r < rows; r++) {
        const a = unpackInt8(out.q, cols, r * qStride);
        const b = unpackInt8(ref.q, cols, r * qStride);
        for (let c = 0; c < cols; c++) {
          const diff = Math.abs(a[c] - b[c]);
          if (diff === 1) codeOff++;
          if (diff > 1) codeBig++;
        }
      }
      const scaleErr = maxRel(out.scale, ref.scale);
      record({
        kernel: "quantize",
        smooth,
        codesOffByOne: codeOff,
        codesWrong: codeBig,
        scaleRelErr: scaleErr,
        ok: codeBig === 0 && scaleErr < 1e-6,
      });
    }
  }
  if (want("attention")) {
    const cases = [
      [128, "f16", false, matrix.n],
      [32, "f32", false, matrix.n],
      [128, "f32", true, matrix.n],
      [64, "f16", false, matrix.n],
      [96, "f16", true, matrix.n],
      [128, "f16", false, 8],
    ] as const;
    for (const [d, kv, accumulate, matrixN] of cases) {
      if (!shapes.some((s) => s.n === matrixN)) continue;
      const spec: Int8AttentionSpec = { headDim: d, accumulate, matrixN, subgroupSize };
      record({
        kernel: "int8_attention",
        d,
        kv,
        accumulate,
        matrixN,
        ...await attentionCheck(device, spec, kv),
      });
    }
  }

  // --- timings ---
  if (want("gemm")) {
    const base = plainGemm(matrix, subgroupSize, INT8_TILES["64x64x64/32x32"], "f32");
    // Every tile through the autotuner (its winners go to the tuning cache with --tune); the
    // prefill's GEMMs run 2048-row chunks of the Llama-3.1-8B layer, q|k|v and gate|up as parts.
    // --rows 2048,512: only the Llama shapes at these rows (a shorter run, e.g. to tune).
    const rows = values.rows ? intList(values.rows, "rows") : [2048, 8192, 512];
    const shapes: [string, number, number, number, Int8MatmulSpec["output"]][] = values.rows
      ? []
      : [["GEMM 8192³", 8192, 8192, 8192, "i32"], ["GEMM 8192³", 8192, 8192, 8192, "f32"]];
    const llama: [string, number, number][] = [
      ["q|o 4096→4096", 4096, 4096],
      ["k|v 4096→1024", 1024, 4096],
      ["gate|up 4096→14336", 14336, 4096],
      ["down 14336→4096", 4096, 14336],
    ];
    for (const M of rows) {
      for (const [label, N, K] of llama) shapes.push([`Llama ${label} M=${M}`, M, N, K, "f32"]);
    }
    for (const [what, M, N, K, output] of shapes) {
      const sizes = { M, N, K, kWords: packedStride(K), aOffset: 0, cStride: N, cOffset: 0 };
      const spec = { ...base, output };
      const rule = ruleSpec(device, "int8_matmul", spec, sizes) as Int8MatmulSpec;
      const { timings: all } = await tuneKernel(device, "int8_matmul", spec, sizes);
      const ran = all.filter((t) => Number.isFinite(t.ms));
      const name = (t: { spec: unknown }) => tileName((t.spec as Int8MatmulSpec).tile);
      const tops = (ms: number) => (2 * M * N * K) / ms / 1e9;
      const ruleMs = ran.find((t) => name(t) === tileName(rule.tile))?.ms ?? Infinity;
      timed({
        what: `${what} ${output}`,
        tile: name(ran[0]),
        ms: ran[0].ms,
        tops: tops(ran[0].ms),
        rule: `${tileName(rule.tile)} ${tops(ruleMs).toFixed(0)}`,
        others: ran.slice(1).map((t) => `${name(t)} ${tops(t.ms).toFixed(0)}`).join("; "),
      });
    }
    if (values.tune) await saveTuningCache();
  }
  if (want("quantize")) {
    const rows = 8192;
    for (const cols of [4096, 14336]) {
      const spec = { input: "f32" as const, smooth: "none" as const };
      const ms = await timeDispatch(device, "quantize", spec, {
        rows,
        cols,
        xOffset: 0,
        qStride: packedStride(cols),
      });
      timed({
        what: `quantize ${rows}x${cols}`,
        ms,
        gbps: ((rows * cols * 5) / ms / 1e6).toFixed(0),
      });
    }
  }
  if (want("attention")) {
    for (const tokens of [4096, 16384, 32768]) {
      const heads = 32;
      const kvHeads = 8;
      const d = 128;
      const sizes: Sizes = {
        qRows: tokens,
        heads,
        kvHeads,
        qOffset: 0,
        outOffset: 0,
        scale: 1 / Math.sqrt(d),
        nseg: 1,
        src0: 1,
        kvStart0: 0,
        kvCount0: tokens,
        qStart0: 0,
        qEnd0: tokens,
        causal0: 1,
        diag0: 0,
      };
      const flops = 4 * heads * d * (tokens * (tokens + 1)) / 2;
      const i8spec = { headDim: d, matrixN: matrix.n, subgroupSize };
      const { quantizeMs, attentionMs } = await timeInt8Attention(device, i8spec, "f16", sizes);
      timed({
        what: `kv_quantize + int8_attention causal ${tokens} (32/8 heads, d128, f16 KV)`,
        ms: quantizeMs + attentionMs,
        quantizeMs,
        tflops: (flops / (quantizeMs + attentionMs) / 1e9).toFixed(1),
      });
      // The f32 kernel with the tile the executor would run (the rule for this adapter).
      const f32spec = ruleSpec(device, "attention", { headDim: d, kv: "f16" }, sizes);
      const f32ms = await timeDispatch(device, "attention", f32spec, sizes);
      timed({
        what: `f32 attention causal ${tokens} (same, rule tile)`,
        ms: f32ms,
        tflops: (flops / f32ms / 1e9).toFixed(1),
      });
    }
  }
  if (want("events")) {
    for (const row of await eventLatency(device, matrix, subgroupSize)) timed(row);
  }

  const file = values.json ?? "bench/results/kernels_dawn.json";
  const result = {
    date: new Date().toISOString(),
    adapter: gpu.info.description,
    configs,
    seconds: (Date.now() - started) / 1e3,
    checks,
    timings,
  };
  try {
    await Deno.mkdir(file.split("/").slice(0, -1).join("/") || ".", { recursive: true });
    await Deno.writeTextFile(file, JSON.stringify(result, null, 1));
  } catch (e) {
    console.warn(`could not write ${file}: ${e}`);
  }
  const failed = checks.filter((c) => c.ok === false);
  console.log("\n== checks ==");
  console.log(`${checks.length - failed.length}/${checks.length} passed`);
  for (const f of failed) console.log(`FAILED ${JSON.stringify(f)}`);
  console.log("== timings (GPU time, timestamp queries) ==");
  for (const t of timings) {
    console.log(
      Object.entries(t).map(([k, v]) => `${k}=${typeof v === "number" ? +v.toFixed(3) : v}`).join(
        " ",
      ),
    );
  }
  return failed.length ? 1 : 0;
}

function seeded(n: number, seed: number, lo: number, hi: number): Float64Array {
  let s = seed >>> 0;
  return Float64Array.from({ length: n }, () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return lo + (hi - lo) * (((t ^ (t >>> 14)) >>> 0) / 2 ** 32);
  });
}

function randomWords(n: number, seed: number): Float64Array {
  const bytes = seeded(n * 4, seed, -127, 128).map(Math.floor);
  return Float64Array.from(
    { length: n },
    (_, w) =>
      (bytes[4 * w] & 0xff) | (bytes[4 * w + 1] & 0xff) << 8 | (bytes[4 * w + 2] & 0xff) << 16 |
      bytes[4 * w + 3] << 24,
  );
}

async function both<S>(
  device: GPUDevice,
  family: KernelFamily<S>,
  spec: S,
  sizes: Sizes,
  buffers: HostBuffers,
) {
  const ref: HostBuffers = {};
  for (const [k, v] of Object.entries(buffers)) ref[k] = v.slice();
  family.reference(spec, sizes, ref);
  const gpu = await runKernel(device, family, spec, sizes, buffers);
  return { gpu, ref };
}

function maxRel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return den === 0 ? num : num / den;
}

async function gemmCheck(
  device: GPUDevice,
  spec: Int8MatmulSpec,
  M: number,
  N: number,
  K: number,
): Promise<Row> {
  const kWords = packedStride(K);
  // Words past K must be zero (the quantiser pads rows with zeros).
  const words = (rows: number, seed: number) => {
    const w = randomWords(rows * kWords, seed);
    for (let r = 0; r < rows; r++) {
      for (let k = K; k < kWords * 4; k++) {
        w[r * kWords + (k >> 2)] = Number(
          BigInt.asIntN(32, BigInt(w[r * kWords + (k >> 2)]) & ~(0xffn << BigInt(8 * (k & 3)))),
        );
      }
    }
    return w;
  };
  const aOffset = spec.output === "f32" ? 3 : 0;
  const cOffset = spec.output === "f32" ? 2 : 0;
  const cStride = N + cOffset + 1;
  const buffers: HostBuffers = {
    a: words(M + aOffset, 11),
    b: words(N, 12),
    c: seeded(M * cStride + 1, 13, -1, 1).map((v) => spec.output === "i32" ? -7 : v),
  };
  if (spec.output === "f32") {
    buffers.sa = seeded(M + aOffset, 14, 1e-3, 2e-3);
    buffers.sw = seeded(N, 15, 1e-3, 2e-3);
    if (spec.bias) buffers.bias = seeded(N, 16, -1, 1).map(Math.f16round);
  }
  const sizes = { M, N, K, kWords, aOffset, cStride, cOffset };
  try {
    const { gpu, ref } = await both(device, int8Matmul, spec, sizes, buffers);
    if (spec.output === "i32") {
      let wrong = 0;
      for (let i = 0; i < ref.c.length; i++) if (gpu.c[i] !== ref.c[i]) wrong++;
      return { wrong, ok: wrong === 0 };
    }
    const err = maxRel(gpu.c, ref.c);
    return { maxRelErr: err, ok: err < 1e-5 };
  } catch (e) {
    return { error: String(e).split("\n").slice(0, 3).join(" "), ok: false };
  }
}

/** int8 attention on K/V of storage type `kv`, through kv_quantize, against its references. */
async function attentionCheck(
  device: GPUDevice,
  spec: Int8AttentionSpec,
  kv: StorageType,
): Promise<Row> {
  const d = spec.headDim;
  const heads = 8;
  const kvHeads = 2;
  const qRows = 150;
  const cache = 230;
  // Two segments: received keys (full) and a causal local block, as APB's block rows see.
  const sizes: Sizes = {
    qRows,
    heads,
    kvHeads,
    qOffset: 1,
    outOffset: 2,
    scale: 1 / Math.sqrt(d),
    nseg: 2,
    src0: 0,
    kvStart0: 5,
    kvCount0: 70,
    qStart0: 10,
    qEnd0: qRows,
    causal0: 0,
    diag0: 0,
    src1: 1,
    kvStart1: 20,
    kvCount1: qRows + 30,
    qStart1: 0,
    qEnd1: qRows,
    causal1: 1,
    diag1: 30,
  };
  const kvBias = seeded(d, 21, -4, 4); // a channel-wise bias in K, as real models have
  const k = (seed: number) => {
    const x = seeded(cache * kvHeads * d, seed, -1, 1);
    return x.map((v, i) => v + kvBias[i % d]).map(kv === "f16" ? Math.f16round : Math.fround);
  };
  const buffers: HostBuffers = {
    q: seeded((qRows + 1) * heads * d, 22, -2, 2).map(Math.fround),
    k0: k(23),
    v0: seeded(cache * kvHeads * d, 24, -1, 1).map(kv === "f16" ? Math.f16round : Math.fround),
    k1: k(25),
    v1: seeded(cache * kvHeads * d, 26, -1, 1).map(kv === "f16" ? Math.f16round : Math.fround),
    out: seeded((qRows + 2) * heads * d, 27, -1, 1),
    lse: seeded((qRows + 2) * heads, 28, -1, 1),
  };
  try {
    // K/V codes on the GPU against the reference (a code may differ by one at a rounding tie),
    // then the attention on the GPU's codes against its reference on the same codes.
    const qspec = { headDim: d, kv };
    const lengths = kvTileLengths(sizes, d);
    const quantised = await both(device, kvQuantize, qspec, sizes, {
      ...buffers,
      codes: new Float64Array(lengths.codes),
      scales: new Float64Array(lengths.scales),
    });
    let codesOffByOne = 0;
    let codesWrong = 0;
    for (let w = 0; w < lengths.codes; w++) {
      const a = unpackInt8(quantised.gpu.codes, 4, w);
      const b = unpackInt8(quantised.ref.codes, 4, w);
      for (let e = 0; e < 4; e++) {
        const diff = Math.abs(a[e] - b[e]);
        if (diff === 1) codesOffByOne++;
        if (diff > 1) codesWrong++;
      }
    }
    const scalesRelErr = maxRel(quantised.gpu.scales, quantised.ref.scales);
    const inputs = {
      q: buffers.q,
      codes: quantised.gpu.codes,
      scales: quantised.gpu.scales,
      out: buffers.out,
      lse: buffers.lse,
    };
    const { gpu, ref } = await both(device, int8Attention, spec, sizes, inputs);
    const exact: HostBuffers = {};
    for (const [kk, v] of Object.entries(buffers)) exact[kk] = v.slice();
    attention.reference({ headDim: d, kv, accumulate: spec.accumulate }, sizes, exact);
    const vsRef = maxRel(gpu.out, ref.out);
    const lseVsRef = maxRel(gpu.lse, ref.lse);
    return {
      codesOffByOne,
      codesWrong,
      scalesRelErr,
      outVsRef: vsRef,
      lseVsRef,
      outVsExact: maxRel(gpu.out, exact.out),
      refVsExact: maxRel(ref.out, exact.out),
      lseVsExact: maxRel(gpu.lse, exact.lse),
      ok: codesWrong === 0 && scalesRelErr < 1e-5 && vsRef < 2e-2 && lseVsRef < 1e-3,
    };
  } catch (e) {
    return { error: String(e).split("\n").slice(0, 3).join(" "), ok: false };
  }
}

/** An int8 GEMM without bias, residual or activation. */
function plainGemm(
  matrix: Int8MatmulSpec["matrix"],
  subgroupSize: number,
  tile: Int8Tile,
  output: Int8MatmulSpec["output"],
): Int8MatmulSpec {
  const epilogue = { biasType: "f32", bias: false, accumulate: false, activation: "none" } as const;
  return { matrix, tile, subgroupSize, output, ...epilogue };
}

/** A tile's name in INT8_TILES. */
function tileName(tile: Int8Tile): string {
  return Object.entries(INT8_TILES).find(([, t]) => JSON.stringify(t) === JSON.stringify(tile))
    ?.[0] ?? JSON.stringify(tile);
}

/** Median GPU ms of one dispatch of `family` on seeded buffers, timed as the autotuner times. */
async function timeDispatch(
  device: GPUDevice,
  family: string,
  spec: unknown,
  sizes: Sizes,
): Promise<number> {
  const data = await kernelBuffers(device, family, spec, sizes);
  try {
    return (await timeKernel(device, kernelFamily(family), spec, sizes, data.buffers)).ms;
  } finally {
    data.destroy();
  }
}

/**
 * GPU times of kv_quantize and of int8_attention on the codes it wrote (timing the attention on
 * random codes and scales would run its softmax on meaningless, even negative, scales).
 */
async function timeInt8Attention(
  device: GPUDevice,
  spec: Int8AttentionSpec,
  kv: StorageType,
  sizes: Sizes,
): Promise<{ quantizeMs: number; attentionMs: number }> {
  const qspec = { headDim: spec.headDim, kv };
  const quantised = await kernelBuffers(device, "kv_quantize", qspec, sizes);
  const att = await kernelBuffers(device, "int8_attention", spec, sizes);
  try {
    const quantizeMs = (await timeKernel(device, kvQuantize, qspec, sizes, quantised.buffers)).ms;
    const buffers = {
      ...att.buffers,
      codes: quantised.buffers.codes,
      scales: quantised.buffers.scales,
    };
    const attentionMs = (await timeKernel(device, int8Attention, spec, sizes, buffers)).ms;
    return { quantizeMs, attentionMs };
  } finally {
    quantised.destroy();
    att.destroy();
  }
}

/** Wall time of awaiting dawn.node completion against the GPU time of the same work. */
async function eventLatency(
  device: GPUDevice,
  matrix: { m: number; n: number; k: number },
  subgroupSize: number,
): Promise<Row[]> {
  const spec = plainGemm(matrix, subgroupSize, INT8_TILES["128x128x64/64x64"], "i32");
  const compiled = await compileKernel(device, int8Matmul.generate(spec), "latency");
  const M = 4096;
  const kWords = packedStride(M);
  const usage = GPUBufferUsage.STORAGE;
  const a = device.createBuffer({ size: M * kWords * 4, usage });
  const c = device.createBuffer({ size: M * M * 4, usage });
  const uniform = device.createBuffer({
    size: 256,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
  const sizes = { M, N: M, K: M, kWords, aOffset: 0, cStride: M, cOffset: 0 };
  device.queue.writeBuffer(uniform, 0, int8Matmul.params(spec, sizes));
  const group = device.createBindGroup({
    layout: compiled.layout,
    entries: [
      { binding: 0, resource: { buffer: uniform } },
      ...[a, a, c].map((buffer, i) => ({ binding: i + 1, resource: { buffer } })),
    ],
  });
  const rows: Row[] = [];
  for (const mode of ["onSubmittedWorkDone", "mapAsync", "onSubmittedWorkDone+interval"]) {
    const walls: number[] = [];
    const gpus: number[] = [];
    for (let round = 0; round < 5; round++) {
      const interval = mode.endsWith("interval") ? setInterval(() => {}, 1) : undefined;
      const t0 = performance.now();
      const ms = mode === "mapAsync"
        ? await timePasses(device, 1, (pass) => {
          pass.setPipeline(compiled.pipeline);
          pass.setBindGroup(0, group);
          for (let r = 0; r < 20; r++) pass.dispatchWorkgroups(...int8Matmul.dispatch(spec, sizes));
        })
        : await (async () => {
          const encoder = device.createCommandEncoder();
          const pass = encoder.beginComputePass();
          pass.setPipeline(compiled.pipeline);
          pass.setBindGroup(0, group);
          for (let r = 0; r < 20; r++) pass.dispatchWorkgroups(...int8Matmul.dispatch(spec, sizes));
          pass.end();
          device.queue.submit([encoder.finish()]);
          await device.queue.onSubmittedWorkDone();
          return [NaN];
        })();
      walls.push(performance.now() - t0);
      gpus.push(ms[0]);
      if (interval !== undefined) clearInterval(interval);
    }
    rows.push({
      what: `event latency ${mode}`,
      wallMs: walls.map((x) => x.toFixed(1)).join(" "),
      gpuMs: gpus.map((x) => x.toFixed(1)).join(" "),
    });
  }
  for (const b of [a, c, uniform]) b.destroy();
  return rows;
}

if (import.meta.main) {
  const { parseArgs } = await import("node:util");
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      json: { type: "string" },
      eval: { type: "string" },
      tune: { type: "boolean" },
      rows: { type: "string" },
    },
  });
  const code = await kernelsDawnSuite(values);
  // dawn.node keeps the process alive while its GPU object exists.
  Deno.exit(code);
}
