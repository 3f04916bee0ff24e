// Tile parameters per adapter and shape. Plans record a kernel's family and base spec; which tile
// (or vector width) runs it is an executor concern decided here: `tunedSpec` is a pure lookup (a
// cached measurement for this adapter, kernel and shape class, else a rule that depends on the
// adapter's limits), and `tuneKernel` measures candidates with timestamp queries and caches the
// winner in a JSON file (`APB_TUNING_FILE`, default ~/.cache/apb-webgpu/tuning.json). Tuning runs
// only when asked (`deno task bench kernels --tune`, or a call), never behind a plan's back.

import { evalExpr, type Expr } from "../compiler/plan.ts";
import { kernelFamily } from "../wgsl/mod.ts";
import { kvTileLengths } from "../wgsl/_kv_tiles.ts";
import type { KernelFamily, Sizes } from "../wgsl/kernel.ts";
import {
  DEFAULT_MATMUL_TILE,
  type MatmulSpec,
  matmulThreads,
  type MatmulTile,
  matmulWorkgroupBytes,
} from "../wgsl/matmul.ts";
import {
  type AttentionSpec,
  type AttentionTile,
  flashLayout,
  subgroupsAllow,
} from "../wgsl/attention.ts";
import type { StorageType } from "../wgsl/kernel.ts";
import { INT8_TILES, type Int8MatmulSpec } from "../wgsl/int8_matmul.ts";
import { compileKernel } from "./pipelines.ts";
import { encodeFill } from "./fill.ts";
import { timePasses } from "./gpu_timing.ts";

export type { Expr } from "../compiler/plan.ts";
export type { KernelFamily, Sizes } from "../wgsl/kernel.ts";

/** Families whose specs the tuner varies. */
export const TUNED_FAMILIES = [
  "matmul",
  "attention",
  "rmsnorm",
  "rope",
  "silu_mul",
  "add",
  "embed",
  "copy2d",
  "int8_matmul",
] as const;

/** One cached decision. */
export interface TuningEntry {
  /** The spec to run (the base spec with tile parameters filled in). */
  spec: unknown;
  /** Median GPU milliseconds of one dispatch of the winner, at the tuned sizes. */
  ms: number;
  /** The sizes it was tuned at. */
  sizes: Sizes;
  /** Candidates measured, fastest first: key and median milliseconds. */
  tried: { key: string; ms: number }[];
  /** When it was measured (ISO date). */
  date: string;
}

/** The tuning cache file: entries by `adapter|family|base key|shape class`. */
export interface TuningCache {
  /** Format version. */
  version: 1;
  /** Decisions by key. */
  entries: Record<string, TuningEntry>;
}

// Whether a permission is already granted: asking would prompt a user mid-run for a cache.
function granted(descriptor: Deno.PermissionDescriptor): boolean {
  try {
    return Deno.permissions.querySync(descriptor).state === "granted";
  } catch {
    return false;
  }
}

/**
 * Where the cache lives: `$APB_TUNING_FILE`, else `$XDG_CACHE_HOME/apb-webgpu/tuning.json`, else
 * `~/.cache/apb-webgpu/tuning.json`; null without permission to read the environment.
 */
export function tuningFile(): string | null {
  if (!granted({ name: "env" })) return null;
  try {
    const explicit = Deno.env.get("APB_TUNING_FILE");
    if (explicit) return explicit;
    const base = Deno.env.get("XDG_CACHE_HOME") ?? `${Deno.env.get("HOME") ?? "."}/.cache`;
    return `${base}/apb-webgpu/tuning.json`;
  } catch {
    return null; // No --allow-env: run without a cache.
  }
}

let loaded: { file: string | null; cache: TuningCache } | null = null;

/** The cache, read once per process (an unreadable or missing file is an empty cache). */
export function tuningCache(): TuningCache {
  const file = tuningFile();
  if (loaded && loaded.file === file) return loaded.cache;
  let cache: TuningCache = { version: 1, entries: {} };
  if (file && granted({ name: "read", path: file })) {
    try {
      const parsed = JSON.parse(Deno.readTextFileSync(file));
      if (parsed?.version === 1 && typeof parsed.entries === "object") cache = parsed;
    } catch {
      // Missing, unreadable or not permitted: tuned specs fall back to the rules.
    }
  }
  loaded = { file, cache };
  return cache;
}

/** Writes the cache to its file (creating the folder). */
export async function saveTuningCache(cache: TuningCache = tuningCache()): Promise<string | null> {
  const file = tuningFile();
  if (!file) return null;
  const dir = file.replace(/\/[^/]*$/, "");
  if (dir !== file) await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(file, JSON.stringify(cache, null, 1) + "\n");
  return file;
}

/** Identifies an adapter in cache keys: its description and PCI ids. */
export function adapterKey(device: GPUDevice): string {
  const info = device.adapterInfo;
  return `${info.description || "unknown"} [${info.vendor}:${info.device}]`;
}

/** Whether the device is a software adapter (llvmpipe, lavapipe). */
function software(device: GPUDevice): boolean {
  return device.adapterInfo.isFallbackAdapter;
}

/** Sizes as the executor holds them: numbers, or expressions of run-time variables. */
export type SizeExprs = Record<string, Expr>;

/**
 * Whether `value(sizes)` is a multiple of `m` for every value of the run-time variables. Size
 * expressions are integer polynomials (integers, names, + − *), so their value mod m depends only
 * on each variable mod m: trying every residue proves it for all values.
 */
export function alwaysMultiple(sizes: SizeExprs, value: (s: Sizes) => number, m: number): boolean {
  const names = new Set<string>();
  for (const v of Object.values(sizes)) {
    if (typeof v === "string") { for (const n of v.match(/[A-Za-z_]\w*/g) ?? []) names.add(n); }
  }
  const vars = [...names];
  if (m ** vars.length > 4096) return false;
  for (let code = 0; code < m ** vars.length; code++) {
    const env: Record<string, number> = {};
    vars.forEach((n, i) => env[n] = Math.floor(code / m ** i) % m);
    const s: Sizes = {};
    for (const [k, v] of Object.entries(sizes)) s[k] = evalExpr(v, env);
    const x = value(s);
    if (!Number.isInteger(x) || ((x % m) + m) % m !== 0) return false;
  }
  return true;
}

// The vec4 variant of a memory-bound family, when these sizes allow it for every variable value.
function vec4Allowed(family: string, spec: Record<string, unknown>, sizes: SizeExprs): boolean {
  const all = (m: number, ...fields: string[]) =>
    fields.every((f) => f in sizes && alwaysMultiple(sizes, (s) => s[f], m));
  switch (family) {
    case "add":
      return all(4, "count");
    case "silu_mul":
      return alwaysMultiple(sizes, (s) => s.rows * s.cols, 4);
    case "rmsnorm":
      return all(4, "cols");
    case "embed":
      return all(4, "hidden");
    case "rope":
      return all(8, "headDim") && all(4, "inStride", "inOffset");
    case "copy2d": {
      const lanes = spec.elem === "f16" ? 8 : 4;
      return all(lanes, "cols", "srcStride", "srcOffset", "dstStride", "dstOffset");
    }
  }
  return false;
}

/**
 * GEMM tiles of the rules, by rows of C: the fastest candidates on the H100 (docs/PERFORMANCE.md,
 * 2026-11-24): k-major 128×128×8 (41.5 TFLOP/s at 4096³ f32) for large M, four-row tiles for
 * decode. Devices with less workgroup memory or fewer invocations fall back to the base spec.
 */
const GEMM_TILES: Record<string, MatmulTile> = {
  large: { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8, group: 8, vec4: true, kMajor: true },
  medium: { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4, group: 8, vec4: true, kMajor: true },
  narrow: { bm: 32, bn: 64, bk: 16, tm: 4, tn: 2, group: 8, vec4: true },
  row: { bm: 4, bn: 64, bk: 32, tm: 1, tn: 1, group: 1, vec4: true },
};

/**
 * Register-tiled attention tiles for a GPU with 48 KiB of workgroup memory, by K/V storage, in
 * order of preference: the first one the device allows is the rule. Tiles with `subgroups` need
 * the feature and subgroups of at least tx invocations; the others are their fallback.
 */
export const GPU_ATTENTION_TILES: Record<StorageType, AttentionTile[]> = {
  f32: [
    { tx: 16, ty: 16, tq: 4, bkv: 64, dk: 16, vk: 8, pipelined: true, subgroups: true },
    { tx: 16, ty: 16, tq: 4, bkv: 64, dk: 16, vk: 8, pipelined: true },
    { tx: 16, ty: 16, tq: 4, bkv: 64, dk: 32, vk: 16, kMajor: true },
  ],
  f16: [
    { tx: 16, ty: 16, tq: 4, bkv: 64, dk: 16, vk: 8, pipelined: true, subgroups: true },
    { tx: 16, ty: 16, tq: 4, bkv: 64, dk: 16, vk: 8, pipelined: true },
    { tx: 16, ty: 32, tq: 4, bkv: 32, dk: 16, vk: 16 },
  ],
};

/** The H100's best tiles before the pipelined path (docs/PERFORMANCE.md, 2026-11-24). */
const LEGACY_ATTENTION_TILES: AttentionTile[] = [
  { tx: 16, ty: 16, tq: 4, bkv: 64, dk: 32, vk: 16, kMajor: true },
  { tx: 16, ty: 32, tq: 4, bkv: 32, dk: 16, vk: 16 },
];

function fits(device: GPUDevice, bytes: number, threads: number): boolean {
  return bytes <= device.limits.maxComputeWorkgroupStorageSize &&
    threads <= device.limits.maxComputeInvocationsPerWorkgroup &&
    threads <= device.limits.maxComputeWorkgroupSizeX;
}

function known(v: Expr | undefined): number | null {
  return typeof v === "number" ? v : null;
}

// The rule for a matmul without a measurement: the large tile for large M, smaller ones for few
// rows (an extend step's M is a variable: decode, one row).
function matmulRule(device: GPUDevice, spec: MatmulSpec, sizes: SizeExprs): MatmulSpec {
  if (software(device)) return spec;
  const M = known(sizes.M);
  const name = M === null || M <= 8 ? "row" : M <= 64 ? "narrow" : M <= 512 ? "medium" : "large";
  const vec4 = alwaysMultiple(sizes, (s) => s.K, 4);
  const tile = { ...GEMM_TILES[name], vec4 };
  if (!fits(device, matmulWorkgroupBytes(tile), matmulThreads(tile))) return spec;
  return { ...spec, tile };
}

/**
 * Int8 GEMM tiles of the rule, from the H100 through Dawn (docs/PERFORMANCE.md): decode rows get
 * the 16-row tile, up to 512 rows the 64×64 tile; beyond, the 128×256 tile (321–361 TOPS on the
 * Llama-3.1-8B layer shapes at 2048 and 8192 rows), except for N ≤ 1024, where it leaves SMs idle
 * (77–203 TOPS) and 128×128 runs 284–293. Tuning replaces the rule per shape class.
 */
function int8MatmulRule(device: GPUDevice, spec: Int8MatmulSpec, sizes: SizeExprs): Int8MatmulSpec {
  const M = known(sizes.M);
  const N = known(sizes.N);
  const name = M === null || M <= 16
    ? "16x128x64/16x32"
    : M <= 512
    ? "64x64x64/32x32"
    : N !== null && N <= 1024
    ? "128x128x64/64x64"
    : "128x256x32/64x64";
  const tuned = { ...spec, tile: INT8_TILES[name] };
  const kernel = kernelFamily("int8_matmul").generate(tuned);
  return fits(device, kernel.workgroupBytes, kernel.workgroupSize[0]) ? tuned : spec;
}

function attentionRule(device: GPUDevice, spec: AttentionSpec): AttentionSpec {
  if (software(device) || spec.headDim % 4 !== 0 || spec.headDim > 128) return spec;
  const other = spec.kv === "f32" ? "f16" : "f32";
  for (const tile of [...GPU_ATTENTION_TILES[spec.kv], ...GPU_ATTENTION_TILES[other]]) {
    if (attentionFits(device, spec, tile)) return { ...spec, tile };
  }
  return spec;
}

function attentionFits(device: GPUDevice, spec: AttentionSpec, tile: AttentionTile): boolean {
  return fits(device, attentionTileBytes(spec, tile), tile.tx * tile.ty) &&
    subgroupsAllow(device, tile);
}

/** Workgroup bytes of an attention tile. */
export function attentionTileBytes(spec: AttentionSpec, t: AttentionTile): number {
  return flashLayout(spec, t).bytes;
}

/** The spec a rule gives when nothing was measured (also the fallback of a cache miss). */
export function ruleSpec(
  device: GPUDevice,
  family: string,
  spec: unknown,
  sizes: SizeExprs,
): unknown {
  switch (family) {
    case "matmul":
      return matmulRule(device, spec as MatmulSpec, sizes);
    case "attention":
      return attentionRule(device, spec as AttentionSpec);
    case "int8_matmul":
      return int8MatmulRule(device, spec as Int8MatmulSpec, sizes);
    case "rmsnorm":
    case "rope":
    case "silu_mul":
    case "add":
    case "embed":
    case "copy2d": {
      // Software adapters keep the scalar kernels (already compiled by every test run).
      if (software(device)) return spec;
      const s = spec as Record<string, unknown>;
      return vec4Allowed(family, s, sizes) ? { ...s, vec4: true } : spec;
    }
  }
  return spec;
}

function bucket(n: number | null): string {
  if (n === null) return "var";
  let b = 1;
  while (b < n && b < 8192) b *= 2;
  return n > 8192 ? ">8192" : `≤${b}`;
}

/**
 * The shape class a decision applies to: GEMMs by N, K and M rounded up to a power of two;
 * attention by GQA group (its tile depends on the head size, already in the spec); memory-bound
 * kernels by whether their vec4 variant is allowed.
 */
export function shapeClass(family: string, spec: unknown, sizes: SizeExprs): string {
  switch (family) {
    case "matmul":
    case "int8_matmul":
      return `N${sizes.N} K${sizes.K} M${bucket(known(sizes.M))}`;
    case "attention": {
      const [h, kv] = [known(sizes.heads), known(sizes.kvHeads)];
      return h && kv ? `group ${h / kv}` : "group var";
    }
  }
  return vec4Allowed(family, spec as Record<string, unknown>, sizes) ? "vec4 allowed" : "scalar";
}

/** Cache key of a decision. */
export function tuningKey(
  device: GPUDevice,
  family: string,
  spec: unknown,
  sizes: SizeExprs,
): string {
  return `${adapterKey(device)}|${family}|${baseKey(family, spec)}|` +
    shapeClass(family, spec, sizes);
}

// What a decision is keyed on besides the shape: the whole base spec, except for int8 GEMMs,
// whose tile is decided by the operand types and the matrix shape alone (the epilogue's bias,
// residual and activation do not move it), so that one tuning serves every linear layer.
function baseKey(family: string, spec: unknown): string {
  if (family !== "int8_matmul") return kernelFamily(family).key(spec);
  const { matrix: m, subgroupSize, output } = spec as Int8MatmulSpec;
  return `int8_matmul_${m.m}x${m.n}x${m.k}_s${subgroupSize}_${output}`;
}

// Whether a cached spec may run these sizes (its vec4 choice must hold for every value).
function applicable(family: string, spec: unknown, sizes: SizeExprs): boolean {
  const s = spec as Record<string, unknown>;
  if (family === "matmul") {
    return !(s.tile as MatmulTile | undefined)?.vec4 || alwaysMultiple(sizes, (x) => x.K, 4);
  }
  if (family === "attention") return true;
  return !s.vec4 || vec4Allowed(family, s, sizes);
}

/**
 * The spec to run for a dispatch of `family` with base `spec` and `sizes` on `device`: the cached
 * measurement for this adapter, kernel and shape class when there is one, else the rule. Pure: it
 * measures nothing (see {@linkcode tuneKernel}). Families the tuner does not know pass through.
 */
export function tunedSpec(
  device: GPUDevice,
  family: string,
  spec: unknown,
  sizes: SizeExprs,
): unknown {
  if (!(TUNED_FAMILIES as readonly string[]).includes(family)) return spec;
  const hit = tuningCache().entries[tuningKey(device, family, spec, sizes)];
  if (hit && family === "int8_matmul") {
    return { ...(spec as Int8MatmulSpec), tile: (hit.spec as Int8MatmulSpec).tile };
  }
  if (hit && applicable(family, hit.spec, sizes)) return hit.spec;
  return ruleSpec(device, family, spec, sizes);
}

/** Candidate specs the tuner measures for `family` (the rule's choice among them). */
export function candidates(
  device: GPUDevice,
  family: string,
  spec: unknown,
  sizes: Sizes,
): unknown[] {
  const out: unknown[] = [];
  const codes = new Set<string>();
  // Specs are compared by their WGSL: a base spec and its default tile written out are one kernel.
  const push = (s: unknown) => {
    const code = kernelFamily(family).generate(s).code;
    if (!codes.has(code)) {
      codes.add(code);
      out.push(s);
    }
  };
  push(ruleSpec(device, family, spec, sizes));
  if (family === "matmul") {
    const base = spec as MatmulSpec;
    const vec4 = sizes.K % 4 === 0;
    const tiles: MatmulTile[] = [
      ...Object.values(GEMM_TILES),
      { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8, group: 8, vec4: true },
      { bm: 128, bn: 64, bk: 16, tm: 8, tn: 4, group: 8, vec4: true },
      { bm: 64, bn: 128, bk: 16, tm: 4, tn: 8, group: 8, vec4: true },
      { bm: 128, bn: 128, bk: 16, tm: 8, tn: 8, group: 16, vec4: true },
      { bm: 64, bn: 64, bk: 32, tm: 4, tn: 4, group: 8, vec4: true },
      { bm: 8, bn: 128, bk: 32, tm: 2, tn: 2, group: 1, vec4: true },
      DEFAULT_MATMUL_TILE,
      // Controls for the record: the large tile without vec4 loads, in plain tile order, and
      // k-inner (dot products along k, more live operand registers).
      { ...GEMM_TILES.large, vec4: false },
      { ...GEMM_TILES.large, group: 1 },
      { ...GEMM_TILES.large, bk: 16, kMajor: false },
      { ...GEMM_TILES.large, bk: 4 },
      { ...GEMM_TILES.large, bk: 16 },
      { bm: 128, bn: 64, bk: 8, tm: 8, tn: 4, group: 8, vec4: true, kMajor: true },
      { bm: 64, bn: 64, bk: 8, tm: 4, tn: 4, group: 8, vec4: true, kMajor: true },
    ];
    // Tiles far from the rows at hand are not worth a measurement: few-row tiles waste the
    // FMAs of large M on shared-memory traffic, large tiles waste most of their rows at small M.
    const M = sizes.M;
    const plausible = (t: MatmulTile) => (M >= 512 ? t.bm >= 32 : M <= 64 ? t.bm <= 32 : true);
    for (const t of tiles) {
      const tile = { ...t, vec4: t.vec4 && vec4 };
      if (M < 512 && t.bm >= 128 && (!t.vec4 || t.group === 1 || t.kMajor)) continue;
      if (plausible(tile) && fits(device, matmulWorkgroupBytes(tile), matmulThreads(tile))) {
        push({ ...base, tile });
      }
    }
  } else if (family === "attention") {
    const base = spec as AttentionSpec;
    if (base.headDim % 4 === 0) {
      const pl = { pipelined: true, subgroups: true };
      const tiles: AttentionTile[] = [
        ...GPU_ATTENTION_TILES.f32,
        ...GPU_ATTENTION_TILES.f16,
        ...LEGACY_ATTENTION_TILES,
        { tx: 16, ty: 16, tq: 4, bkv: 64, dk: 32, vk: 16 },
        { tx: 16, ty: 16, tq: 4, bkv: 64, dk: 16, vk: 32 },
        { tx: 16, ty: 16, tq: 4, bkv: 64, dk: 16, vk: 16 },
        { tx: 8, ty: 32, tq: 4, bkv: 32, dk: 16, vk: 16 },
        { tx: 16, ty: 8, tq: 8, bkv: 64, dk: 16, vk: 16 },
        // Resident Q block, whole K/V tiles through prefetch registers.
        { tx: 16, ty: 8, tq: 4, bkv: 32, dk: 0, vk: 0, resident: true },
        // Scores as k-major outer products.
        { tx: 16, ty: 16, tq: 4, bkv: 64, dk: 16, vk: 32, kMajor: true },
        { tx: 16, ty: 16, tq: 4, bkv: 64, dk: 16, vk: 16, kMajor: true },
        { tx: 8, ty: 32, tq: 4, bkv: 32, dk: 16, vk: 16, kMajor: true },
        { tx: 16, ty: 8, tq: 8, bkv: 64, dk: 32, vk: 16, kMajor: true },
        // Subgroup row reductions alone, on the k-major tile.
        { tx: 16, ty: 16, tq: 4, bkv: 64, dk: 32, vk: 16, kMajor: true, subgroups: true },
        // Pipelined stages: other stage sizes, 8 pairs or 8 keys per invocation, 32- and 128-pair
        // blocks (each fits 48 KiB; bytes from flashLayout).
        { tx: 16, ty: 16, tq: 4, bkv: 64, dk: 16, vk: 16, ...pl },
        { tx: 16, ty: 16, tq: 4, bkv: 64, dk: 16, vk: 4, ...pl },
        { tx: 16, ty: 16, tq: 4, bkv: 64, dk: 8, vk: 8, ...pl },
        { tx: 16, ty: 8, tq: 8, bkv: 64, dk: 16, vk: 16, ...pl },
        { tx: 8, ty: 32, tq: 4, bkv: 32, dk: 8, vk: 16, ...pl },
        { tx: 8, ty: 16, tq: 4, bkv: 64, dk: 16, vk: 16, ...pl },
        { tx: 16, ty: 8, tq: 4, bkv: 64, dk: 16, vk: 16, ...pl },
      ];
      for (const tile of tiles) {
        if (attentionFits(device, base, tile)) push({ ...base, tile });
      }
    }
    push({ ...base, tile: undefined });
  } else if (family === "int8_matmul") {
    for (const tile of Object.values(INT8_TILES)) {
      const candidate = { ...(spec as Int8MatmulSpec), tile };
      const kernel = kernelFamily(family).generate(candidate);
      if (fits(device, kernel.workgroupBytes, kernel.workgroupSize[0])) push(candidate);
    }
  } else {
    const s = spec as Record<string, unknown>;
    push({ ...s, vec4: undefined });
    if (vec4Allowed(family, s, sizes)) push({ ...s, vec4: true });
  }
  return out;
}

/** Element counts of every binding of a dispatch, for benchmarks and tuning. */
export function bindingLengths(
  family: string,
  spec: unknown,
  sizes: Sizes,
): Record<string, number> {
  const s = sizes;
  switch (family) {
    case "matmul":
      return {
        a: (s.aOffset + s.M) * s.K,
        b: s.N * s.K,
        bias: s.N,
        c: s.M * s.cStride + s.cOffset,
      };
    case "int8_matmul":
      return {
        a: (s.aOffset + s.M) * s.kWords,
        sa: s.aOffset + s.M,
        b: s.N * s.kWords,
        sw: s.N,
        bias: s.N,
        c: s.M * s.cStride + s.cOffset,
      };
    case "attention":
    case "int8_attention":
    case "kv_quantize": {
      const d = (spec as AttentionSpec).headDim;
      const rows = [1, 1];
      for (let i = 0; i < s.nseg; i++) {
        rows[s[`src${i}`]] = Math.max(rows[s[`src${i}`]], s[`kvStart${i}`] + s[`kvCount${i}`]);
      }
      const out = (s.outOffset + s.qRows) * s.heads;
      return {
        q: (s.qOffset + s.qRows) * s.heads * d,
        k0: rows[0] * s.kvHeads * d,
        v0: rows[0] * s.kvHeads * d,
        k1: rows[1] * s.kvHeads * d,
        v1: rows[1] * s.kvHeads * d,
        ...kvTileLengths(s, d),
        out: out * d,
        lse: out,
      };
    }
    case "quantize":
      return {
        x: (s.xOffset + s.rows) * s.cols,
        smoothing: s.cols,
        q: s.rows * s.qStride,
        scale: s.rows,
      };
    case "rmsnorm":
      return { x: s.rows * s.cols, weight: s.cols, out: s.rows * s.cols };
    case "rope":
      return {
        x: s.rows * s.inStride,
        positions: (s.posOffset ?? 0) + s.rows,
        table: ((s.posOffset ?? 0) + s.rows) * s.headDim,
        out: (s.outRowOffset + s.rows) * s.heads * s.headDim,
      };
    case "silu_mul":
      return { a: s.rows * s.cols, b: s.rows * s.cols, out: s.rows * s.cols };
    case "add":
      return { x: s.count, y: s.count };
    case "embed":
      return {
        ids: (s.idsOffset ?? 0) + s.rows,
        table: s.vocab * s.hidden,
        out: s.rows * s.hidden,
      };
    case "copy2d":
      return {
        src: s.rows * s.srcStride + s.srcOffset,
        dst: s.rows * s.dstStride + s.dstOffset,
      };
  }
  throw new Error(`bindingLengths: no rule for family ${family}`);
}

/** GPU buffers of one dispatch, filled with seeded random values (ids and positions in range). */
export interface KernelBuffers {
  /** Buffers by binding name. */
  buffers: Record<string, GPUBuffer>;
  /** Frees them. */
  destroy(): void;
}

/**
 * Allocates every binding of `family`/`spec` at `sizes` and fills it on the GPU: floats uniform in
 * [−1, 1] (never zeros, which can run faster than real data), ids below the vocabulary and
 * positions counting up. Attention's second source shares the first's buffers.
 */
export async function kernelBuffers(
  device: GPUDevice,
  family: string,
  spec: unknown,
  sizes: Sizes,
  seed = 1,
): Promise<KernelBuffers> {
  const kernel = kernelFamily(family).generate(spec);
  const lengths = bindingLengths(family, spec, sizes);
  const buffers: Record<string, GPUBuffer> = {};
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  const temporaries: GPUBuffer[] = [];
  for (const [i, b] of kernel.bindings.entries()) {
    // The second K/V source of attention-shaped kernels is the first one again.
    const first = { k1: "k0", v1: "v0" }[b.name];
    if (first && buffers[first]) {
      buffers[b.name] = buffers[first];
      continue;
    }
    const count = lengths[b.name];
    const bytes = Math.max(16, Math.ceil((count * (b.elem === "f16" ? 2 : 4)) / 16) * 16);
    const buffer = device.createBuffer({ size: bytes, usage });
    buffers[b.name] = buffer;
    if (b.elem === "u32") {
      const limit = b.name === "ids" ? sizes.vocab : Number.MAX_SAFE_INTEGER;
      const data = Uint32Array.from({ length: count }, (_, j) => j % Math.max(1, limit));
      device.queue.writeBuffer(buffer, 0, data);
      continue;
    }
    const fill = { elem: b.elem === "f16" ? "f16" : "f32" } as const;
    const fillSizes = { count, seed: seed * 977 + i, scale: 1, bias: 0, offset: 0 };
    temporaries.push(await encodeFill(device, pass, buffer, fill, fillSizes));
  }
  pass.end();
  device.queue.submit([encoder.finish()]);
  await device.queue.onSubmittedWorkDone();
  for (const t of temporaries) t.destroy();
  return {
    buffers,
    destroy: () => new Set(Object.values(buffers)).forEach((b) => b.destroy()),
  };
}

/** Medians of a timed kernel. */
export interface KernelTiming {
  /** Median GPU milliseconds of one dispatch. */
  ms: number;
  /** Per-dispatch milliseconds of every timed pass (warm-up excluded). */
  samples: number[];
  /** Dispatches per timed pass. */
  reps: number;
}

/**
 * Times one dispatch of `family`/`spec` at `sizes` with timestamp queries: one dispatch to
 * estimate; batches of about 100 ms of passes until two in a row agree within 3%; then, in one
 * submit, one more such batch and `rounds` timed passes (default 10) of `reps` back-to-back
 * dispatches each, reps chosen so that a pass holds at least `passMs` (default 5) of work and pass
 * overhead is negligible. Returns the median per-dispatch time of the timed passes. Throws when
 * the device has no timestamp queries.
 */
export async function timeKernel(
  device: GPUDevice,
  family: KernelFamily<unknown>,
  spec: unknown,
  sizes: Sizes,
  buffers: Record<string, GPUBuffer>,
  options: { rounds?: number; passMs?: number } = {},
): Promise<KernelTiming> {
  if (!device.features.has("timestamp-query")) {
    throw new Error("timeKernel: the device has no timestamp queries");
  }
  const kernel = family.generate(spec);
  const compiled = await compileKernel(device, kernel, family.key(spec));
  const uniform = device.createBuffer({
    size: 256,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
  device.queue.writeBuffer(uniform, 0, family.params(spec, sizes));
  device.pushErrorScope("validation");
  const group = device.createBindGroup({
    layout: compiled.layout,
    entries: [
      { binding: 0, resource: { buffer: uniform } },
      ...kernel.bindings.map((b, i) => ({ binding: i + 1, resource: { buffer: buffers[b.name] } })),
    ],
  });
  const bindError = await device.popErrorScope();
  if (bindError) {
    uniform.destroy();
    throw new Error(`timeKernel ${family.key(spec)}: ${bindError.message}`);
  }
  const grid = family.dispatch(spec, sizes);
  const run = async (passes: number, reps: number) =>
    await timePasses(device, passes, (pass) => {
      pass.setPipeline(compiled.pipeline);
      pass.setBindGroup(0, group);
      for (let r = 0; r < reps; r++) pass.dispatchWorkgroups(...grid);
    });
  device.pushErrorScope("validation");
  const [estimate] = await run(1, 1);
  const passMs = options.passMs ?? 5;
  const reps = Math.max(1, Math.min(1000, Math.ceil(passMs / Math.max(estimate, 1e-3))));
  const rounds = options.rounds ?? 10;
  // About 100 ms of passes per batch.
  const batch = Math.max(2, Math.min(50, Math.ceil(100 / Math.max(estimate * reps, 1e-3))));
  // Stabilise first: batches until two in a row agree within 3% (at most 8). On the H100 a
  // kernel has run 4× slower for a few hundred milliseconds after the buffers of the one
  // before it were freed, and once after an idle gap let the clocks drop.
  let previous = Infinity;
  for (let b = 0; b < 8; b++) {
    const times = (await run(batch, reps)).sort((x, y) => x - y);
    const median = times[Math.floor(times.length / 2)];
    if (Math.abs(median - previous) <= 0.03 * median) break;
    previous = median;
  }
  // Then warm-up passes in the same submit as the timed ones, so the GPU never idles before them.
  const times = (await run(batch + rounds, reps)).slice(batch);
  const error = await device.popErrorScope();
  uniform.destroy();
  if (error) throw new Error(`timeKernel ${family.key(spec)}: ${error.message}`);
  const samples = times.map((t) => t / reps);
  const sorted = [...samples].sort((a, b) => a - b);
  return { ms: sorted[Math.floor(sorted.length / 2)], samples, reps };
}

/** What {@linkcode tuneKernel} measured. */
export interface TuneResult {
  /** The winner (now in the cache). */
  best: TuningEntry;
  /** Every candidate, fastest first (failed ones with ms = Infinity and the reason). */
  timings: { key: string; spec: unknown; ms: number; error?: string }[];
}

/**
 * Measures every candidate of `family`/`spec` at `sizes` and records the fastest in the cache
 * (in memory; {@linkcode saveTuningCache} writes it). Candidates that fail to compile or run on
 * this device, or fail `options.check`, are skipped with their reason.
 */
export async function tuneKernel(
  device: GPUDevice,
  familyName: string,
  spec: unknown,
  sizes: Sizes,
  options: {
    rounds?: number;
    passMs?: number;
    candidates?: unknown[];
    /** Correctness check of a candidate: null when it passes, else why not (it is skipped). */
    check?: (spec: unknown) => Promise<string | null>;
  } = {},
): Promise<TuneResult> {
  const family = kernelFamily(familyName);
  const list = options.candidates ?? candidates(device, familyName, spec, sizes);
  const data = await kernelBuffers(device, familyName, list[0], sizes);
  const timings: TuneResult["timings"] = [];
  try {
    for (const candidate of list) {
      const key = family.key(candidate);
      try {
        const wrong = options.check ? await options.check(candidate) : null;
        if (wrong) throw new Error(wrong);
        const t = await timeKernel(device, family, candidate, sizes, data.buffers, options);
        timings.push({ key, spec: candidate, ms: t.ms });
      } catch (e) {
        timings.push({ key, spec: candidate, ms: Infinity, error: String(e).split("\n")[0] });
      }
    }
  } finally {
    data.destroy();
  }
  timings.sort((a, b) => a.ms - b.ms);
  if (!Number.isFinite(timings[0]?.ms)) {
    throw new Error(`tuneKernel ${family.key(spec)}: no candidate ran (${timings[0]?.error})`);
  }
  const best: TuningEntry = {
    spec: timings[0].spec,
    ms: timings[0].ms,
    sizes,
    tried: timings.filter((t) => Number.isFinite(t.ms)).map(({ key, ms }) => ({ key, ms })),
    date: new Date().toISOString(),
  };
  tuningCache().entries[tuningKey(device, familyName, spec, sizes)] = best;
  return { best, timings };
}
