// The math around the int8 kernels, on the CPU against float64: quantisation, packing, scales,
// SmoothQuant, the GEMM and attention references. The kernels themselves need Dawn's subgroup
// matrices (tests/runtime/dawn_backend_test.ts and bench/kernels_dawn.ts run them on a GPU).

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import {
  packedStride,
  packInt8,
  QMAX,
  quantize,
  quantizeRow,
  quantizeRows,
  roundHalfEven,
  smoothQuantFactors,
  unpackInt8,
} from "../../wgsl/quantize.ts";
import { INT8_TILES, int8Matmul, type Int8MatmulSpec } from "../../wgsl/int8_matmul.ts";
import { int8Attention } from "../../wgsl/int8_attention.ts";
import { kvQuantize } from "../../wgsl/kv_quantize.ts";
import { kvTileLengths } from "../../wgsl/_kv_tiles.ts";
import { attention } from "../../wgsl/attention.ts";
import { floats } from "./_check.ts";

Deno.test("packInt8 and unpackInt8 round-trip every code, little-endian, zero-padded", () => {
  const codes = Int8Array.from({ length: 255 }, (_, i) => i - 127);
  const words = packInt8(codes, packedStride(codes.length));
  assertEquals(words.length, 64);
  assertEquals(Array.from(unpackInt8(words, codes.length)), Array.from(codes));
  assertEquals(words[0] & 0xff, (-127) & 0xff);
  assertEquals(words[63] >>> 24, 0); // padding past the last code
});

Deno.test("roundHalfEven is WGSL's round", () => {
  assertEquals([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, 2.5001].map((v) => roundHalfEven(v) + 0), [
    0,
    2,
    2,
    0,
    -2,
    2,
    3,
  ]);
});

Deno.test("quantizeRow: |x − q·scale| ≤ scale/2, codes within ±127, absmax maps to ±127", () => {
  for (let seed = 0; seed < 20; seed++) {
    const row = floats(97, seed, -5, 5);
    const { q, scale } = quantizeRow(row);
    let top = 0;
    for (const v of row) top = Math.max(top, Math.abs(v));
    assert(Math.abs(scale - top / QMAX) <= 1e-7 * top);
    for (let i = 0; i < row.length; i++) {
      assert(Math.abs(q[i]) <= QMAX);
      assert(Math.abs(row[i] - q[i] * scale) <= scale / 2 + 1e-6 * top, `seed ${seed} i ${i}`);
    }
    assertEquals(Math.max(...Array.from(q, Math.abs)), QMAX);
  }
  assertEquals(quantizeRow([0, 0, 0]).scale, 0);
});

Deno.test("the quantize kernel's reference equals the host quantiser, with and without smoothing", () => {
  const rows = 5;
  const cols = 37;
  const qStride = packedStride(cols);
  const x = floats((rows + 1) * cols, 3, -2, 2);
  const out = { x, q: new Float64Array(rows * qStride), scale: new Float64Array(rows) };
  quantize.reference({ input: "f32", smooth: "none" }, { rows, cols, xOffset: 1, qStride }, out);
  const host = quantizeRows(x.subarray(cols), rows, cols);
  assertEquals(Array.from(out.q), Array.from(host.q));
  assertEquals(Array.from(out.scale), Array.from(host.scale));
  // Dividing activations by s and multiplying weights by s leaves X·Wᵀ unchanged.
  const s = smoothQuantFactors(floats(cols, 4, 0.1, 10), floats(cols, 5, 0.1, 1));
  const w = floats(cols, 6, -1, 1);
  let plain = 0;
  let smoothed = 0;
  for (let c = 0; c < cols; c++) {
    plain += x[c] * w[c];
    smoothed += (x[c] / s[c]) * (w[c] * s[c]);
  }
  assert(Math.abs(plain - smoothed) < 1e-9);
});

Deno.test("int8_matmul reference: exact i32 dot products; W8A8 within the quantisation bound", () => {
  const [M, N, K] = [9, 7, 70];
  const a = floats(M * K, 7, -1, 1);
  const b = floats(N * K, 8, -1, 1);
  const qa = quantizeRows(a, M, K);
  const qb = quantizeRows(b, N, K);
  const base: Int8MatmulSpec = {
    matrix: { m: 16, n: 16, k: 32 },
    tile: INT8_TILES["128x128x64/64x64"],
    subgroupSize: 32,
    output: "i32",
    biasType: "f32",
    bias: false,
    accumulate: false,
    activation: "none",
  };
  const sizes = { M, N, K, kWords: qa.stride, aOffset: 0, cStride: N, cOffset: 0 };
  const c = new Float64Array(M * N);
  int8Matmul.reference(base, sizes, { a: Float64Array.from(qa.q), b: Float64Array.from(qb.q), c });
  for (let m = 0; m < M; m++) {
    const x = unpackInt8(qa.q, K, m * qa.stride);
    for (let n = 0; n < N; n++) {
      const y = unpackInt8(qb.q, K, n * qb.stride);
      assertEquals(c[m * N + n], x.reduce((s, v, k) => s + v * y[k], 0));
    }
  }
  const f = new Float64Array(M * N);
  int8Matmul.reference({ ...base, output: "f32" }, sizes, {
    a: Float64Array.from(qa.q),
    sa: Float64Array.from(qa.scale),
    b: Float64Array.from(qb.q),
    sw: Float64Array.from(qb.scale),
    c: f,
  });
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let exact = 0;
      let bound = 0;
      for (let k = 0; k < K; k++) {
        exact += a[m * K + k] * b[n * K + k];
        // |Δ(xy)| ≤ |x|·Δy + |y|·Δx + ΔxΔy with Δ ≤ scale/2.
        bound += Math.abs(a[m * K + k]) * qb.scale[n] / 2 +
          Math.abs(b[n * K + k]) * qa.scale[m] / 2 +
          qa.scale[m] * qb.scale[n] / 4;
      }
      assert(Math.abs(f[m * N + n] - exact) <= bound + 1e-6, `(${m}, ${n})`);
    }
  }
});

Deno.test("int8_attention reference stays within 3% of exact attention, K with a channel bias", () => {
  const d = 32;
  const [heads, kvHeads, qRows, cache] = [4, 2, 40, 90];
  const sizes: Record<string, number> = {
    qRows,
    heads,
    kvHeads,
    qOffset: 0,
    outOffset: 0,
    scale: 1 / Math.sqrt(d),
    nseg: 2,
    src0: 0,
    kvStart0: 0,
    kvCount0: 20,
    qStart0: 5,
    qEnd0: qRows,
    causal0: 0,
    diag0: 0,
    src1: 1,
    kvStart1: 10,
    kvCount1: qRows + 10,
    qStart1: 0,
    qEnd1: qRows,
    causal1: 1,
    diag1: 10,
  };
  const bias = floats(d, 9, -3, 3);
  const k = (seed: number) =>
    floats(cache * kvHeads * d, seed, -1, 1).map((v, i) => v + bias[i % d]);
  const buffers = {
    q: floats(qRows * heads * d, 10, -2, 2),
    k0: k(11),
    v0: floats(cache * kvHeads * d, 12, -1, 1),
    k1: k(13),
    v1: floats(cache * kvHeads * d, 14, -1, 1),
    out: new Float64Array(qRows * heads * d),
    lse: new Float64Array(qRows * heads),
  };
  const exact = Object.fromEntries(Object.entries(buffers).map(([n, v]) => [n, v.slice()]));
  const lengths = kvTileLengths(sizes, d);
  const quantised = {
    ...buffers,
    codes: new Float64Array(lengths.codes),
    scales: new Float64Array(lengths.scales),
  };
  kvQuantize.reference({ headDim: d, kv: "f32" }, sizes, quantised);
  const spec = { headDim: d, matrixN: 16, subgroupSize: 32 };
  int8Attention.reference(spec, sizes, quantised);
  attention.reference({ headDim: d, kv: "f32" }, sizes, exact);
  let num = 0;
  let den = 0;
  for (let i = 0; i < exact.out.length; i++) {
    num = Math.max(num, Math.abs(quantised.out[i] - exact.out[i]));
    den = Math.max(den, Math.abs(exact.out[i]));
  }
  assert(num / den < 0.03, `max relative error ${num / den}`);
  for (let i = 0; i < exact.lse.length; i++) {
    assert(Math.abs(quantised.lse[i] - exact.lse[i]) < 0.02);
  }
});
