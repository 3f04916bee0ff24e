// Shared pieces of the kernel tests: the GPU (or a visible skip), running a kernel beside its
// reference, tolerant and exact comparisons, and seeded data so that fast-check only has to
// generate (and shrink) shapes and a seed, never whole arrays.

import fc from "fast-check";
import { testGpu } from "../_gpu.ts";
import { runKernel } from "../../runtime/run_kernel.ts";
import type { HostBuffers, KernelFamily, Sizes } from "../../wgsl/kernel.ts";

/** The test device, or null when there is none (tests are then ignored, with a warning). */
export const gpu = await testGpu();

/** Options for fast-check properties: few runs, because software adapters are slow. */
export const RUNS = { numRuns: 20 };

/** A fraction in [0, 1] spread over the range (`fc.double` clusters at 0, 1 and tiny values). */
export const share: fc.Arbitrary<number> = fc.integer({ min: 0, max: 1000 }).map((n) => n / 1000);

/** Registers a test that needs the GPU; ignored (so reported as such) when there is none. */
export function gpuTest(name: string, fn: (device: GPUDevice) => Promise<void>): void {
  Deno.test({ name, ignore: gpu === null, fn: () => fn(gpu!.device) });
}

/** Runs `family` on the GPU and its reference on copies of the same buffers. */
export async function runBoth<S>(
  family: KernelFamily<S>,
  spec: S,
  sizes: Sizes,
  buffers: HostBuffers,
): Promise<{ gpu: HostBuffers; ref: HostBuffers }> {
  const ref: HostBuffers = {};
  for (const [name, data] of Object.entries(buffers)) ref[name] = data.slice();
  family.reference(spec, sizes, ref);
  const out = await runKernel(gpu!.device, family, spec, sizes, buffers);
  return { gpu: out, ref };
}

/** Tolerance of a comparison: `|gpu − ref| ≤ atol + rtol·|ref|`; "exact" compares bits of f64. */
export type Tolerance = { atol: number; rtol: number } | "exact";

/** The default f32 tolerance. */
export const F32: Tolerance = { atol: 1e-4, rtol: 1e-4 };

/** Asserts `actual ≈ expected` element by element (NaN matches NaN; infinities must be equal). */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: Tolerance,
  label: string,
): void {
  if (actual.length !== expected.length) {
    throw new Error(`${label}: length ${actual.length}, expected ${expected.length}`);
  }
  for (let i = 0; i < expected.length; i++) {
    const [a, e] = [actual[i], expected[i]];
    if (Number.isNaN(a) && Number.isNaN(e)) continue;
    const ok = tol === "exact" || !Number.isFinite(e)
      ? a === e
      : Math.abs(a - e) <= tol.atol + tol.rtol * Math.abs(e);
    if (!ok) {
      throw new Error(`${label}[${i}]: got ${a}, expected ${e} (${JSON.stringify(tol)})`);
    }
  }
}

/** Runs both sides and compares every output binding of the kernel. */
export async function expectMatch<S>(
  family: KernelFamily<S>,
  spec: S,
  sizes: Sizes,
  buffers: HostBuffers,
  tol: Tolerance | Record<string, Tolerance>,
): Promise<HostBuffers> {
  const { gpu: out, ref } = await runBoth(family, spec, sizes, buffers);
  for (const name of Object.keys(out)) {
    const t = tol === "exact" || "atol" in tol ? tol : tol[name];
    assertClose(out[name], ref[name], t as Tolerance, `${family.key(spec)} ${name}`);
  }
  return out;
}

/** A seeded generator of floats in [0, 1) (mulberry32). */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** `n` seeded floats in [lo, hi). */
export function floats(n: number, seed: number, lo = -1, hi = 1): Float64Array {
  const next = rng(seed);
  return Float64Array.from({ length: n }, () => lo + (hi - lo) * next());
}

/** `n` seeded integers in [lo, hi], as floats. */
export function ints(n: number, seed: number, lo: number, hi: number): Float64Array {
  const next = rng(seed);
  return Float64Array.from({ length: n }, () => lo + Math.floor((hi - lo + 1) * next()));
}

/** The values rounded as an f16 buffer stores them. */
export function toF16(values: Float64Array): Float64Array {
  return values.map(Math.f16round);
}

/** The values rounded as an f32 buffer stores them. */
export function toF32(values: Float64Array): Float64Array {
  return values.map(Math.fround);
}
