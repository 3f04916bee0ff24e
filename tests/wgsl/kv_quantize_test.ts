import { equal, ok, throws } from "node:assert/strict";
import fc from "fast-check";
import { kvQuantize } from "../../wgsl/kv_quantize.ts";
import { KV_TILE, kvTileLengths, kvTiles, segmentKeys } from "../../wgsl/_kv_tiles.ts";
import { QMAX, unpackInt8 } from "../../wgsl/quantize.ts";
import { assertClose, floats, gpuTest, runBoth, RUNS, share, toF16, toF32 } from "./_check.ts";
import { attentionSizes, type Segment } from "./_attention_cases.ts";

const KV_ROWS = 150;

const segment = fc.record({
  src: fc.constantFrom(0 as const, 1 as const),
  kvStart: fc.integer({ min: 0, max: KV_ROWS - 1 }),
  kvShare: share,
  qStart: fc.integer({ min: 0, max: 40 }),
  qShare: share,
  causal: fc.constantFrom(0 as const, 1 as const),
  diag: fc.integer({ min: -6, max: 90 }),
}).map(({ kvShare, qShare, ...s }): Segment => ({
  ...s,
  kvCount: Math.round(kvShare * (KV_ROWS - s.kvStart)),
  qEnd: s.qStart + Math.round(qShare * (40 - s.qStart)),
}));

/** Sizes and K/V buffers (K with a channel bias, as real models have) for a dispatch. */
function problem(d: number, kvHeads: number, segments: Segment[], seed: number, f16: boolean) {
  const sizes = attentionSizes(
    { qRows: 40, heads: 2 * kvHeads, kvHeads, qOffset: 0, outOffset: 0, scale: 1 },
    segments,
  );
  const store = f16 ? toF16 : toF32;
  const bias = floats(d, seed, -4, 4);
  const k = (s: number) => store(floats(KV_ROWS * kvHeads * d, s).map((v, i) => v + bias[i % d]));
  const lengths = kvTileLengths(sizes, d);
  return {
    sizes,
    buffers: {
      k0: k(seed + 1),
      v0: store(floats(KV_ROWS * kvHeads * d, seed + 2, -3, 3)),
      k1: k(seed + 3),
      v1: store(floats(KV_ROWS * kvHeads * d, seed + 4, -3, 3)),
      codes: new Float64Array(lengths.codes),
      scales: new Float64Array(lengths.scales),
    },
  };
}

gpuTest("kv_quantize writes the codes and scales of its reference, any segment table", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(32, 64, 96, 128),
      fc.constantFrom(1, 2),
      fc.array(segment, { minLength: 1, maxLength: 3 }),
      fc.boolean(),
      fc.integer(),
      async (d, kvHeads, segments, f16, seed) => {
        const { sizes, buffers } = problem(d, kvHeads, segments, seed, f16);
        const spec = { headDim: d, kv: f16 ? "f16" as const : "f32" as const };
        const { gpu, ref } = await runBoth(kvQuantize, spec, sizes, buffers);
        assertClose(gpu.scales, ref.scales, { atol: 1e-7, rtol: 1e-6 }, "scales");
        // A code may differ by one where the GPU's division rounds a value across a tie.
        for (let w = 0; w < ref.codes.length; w++) {
          const a = unpackInt8(gpu.codes, 4, w);
          const b = unpackInt8(ref.codes, 4, w);
          for (let e = 0; e < 4; e++) {
            ok(Math.abs(a[e] - b[e]) <= 1, `code ${4 * w + e}: ${a[e]} vs ${b[e]}`);
          }
        }
      },
    ),
    RUNS,
  );
});

Deno.test("kv_quantize's reference: codes and scales rebuild K − μ and V within half a step", () => {
  const d = 32;
  const segments: Segment[] = [
    { src: 0, kvStart: 3, kvCount: 70, qStart: 0, qEnd: 40, causal: 0, diag: 0 },
    { src: 1, kvStart: 0, kvCount: 100, qStart: 5, qEnd: 30, causal: 1, diag: 4 },
  ];
  const { sizes, buffers } = problem(d, 2, segments, 7, false);
  kvQuantize.reference({ headDim: d, kv: "f32" }, sizes, buffers);
  equal(segmentKeys(sizes, 1), 24 + 4 + 1); // up to the diagonal of the last row, 29
  equal(kvTiles(sizes), 2 + 1);
  const { codes, scales } = buffers;
  const mu = (g: number) => scales.subarray(g * d, (g + 1) * d);
  // μ is the mean of the first segment's first tile.
  for (let c = 0; c < d; c++) {
    let sum = 0;
    for (let j = 0; j < KV_TILE; j++) sum += buffers.k0[((3 + j) * 2 + 1) * d + c];
    ok(Math.abs(mu(1)[c] - sum / KV_TILE) < 1e-5);
  }
  // Tile 2 (segment 1, keys 0..28), head 1: every key rebuilt, keys past the end zero.
  const record = 2 * 2 + 1;
  const sBase = 2 * d + record * (d + 4);
  const kScale = scales[sBase + d];
  const kAt = record * 2 * KV_TILE * (d / 4);
  // V is stored transposed, a row of KV_TILE codes per channel.
  const vt = Array.from(
    { length: d },
    (_, c) => unpackInt8(codes, KV_TILE, kAt + (KV_TILE * d) / 4 + (c * KV_TILE) / 4),
  );
  for (let j = 0; j < KV_TILE; j++) {
    const k = unpackInt8(codes, d, kAt + (j * d) / 4);
    const v = vt.map((row) => row[j]);
    for (let c = 0; c < d; c++) {
      if (j >= 29) {
        ok(k[c] === 0 && v[c] === 0);
        continue;
      }
      const key = buffers.k1[(j * 2 + 1) * d + c] - mu(1)[c];
      ok(Math.abs(key - k[c] * kScale) <= kScale / 2 + 1e-6, `k ${j} ${c}`);
      const vs = scales[sBase + c];
      ok(Math.abs(buffers.v1[(j * 2 + 1) * d + c] - v[c] * vs) <= vs / 2 + 1e-6, `v ${j} ${c}`);
      ok(Math.abs(k[c]) <= QMAX && Math.abs(v[c]) <= QMAX);
    }
  }
});

Deno.test("kv_quantize takes the head sizes int8_attention takes", () => {
  throws(() => kvQuantize.generate({ headDim: 48, kv: "f16" }), /headDim 48 must be 32, 64, 96/);
});

gpuTest("kv_quantize with no visible keys dispatches nothing and writes nothing", async () => {
  const segments: Segment[] = [
    { src: 0, kvStart: 0, kvCount: 0, qStart: 0, qEnd: 40, causal: 0, diag: 0 },
    { src: 1, kvStart: 4, kvCount: 30, qStart: 0, qEnd: 40, causal: 1, diag: -50 },
  ];
  const { sizes, buffers } = problem(32, 2, segments, 3, false);
  equal(kvTiles(sizes), 0);
  buffers.scales.fill(0.5);
  const { gpu } = await runBoth(kvQuantize, { headDim: 32, kv: "f32" }, sizes, buffers);
  ok(gpu.scales.every((x) => x === 0.5));
});
