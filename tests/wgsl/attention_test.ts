import { equal, ok, throws } from "node:assert/strict";
import fc from "fast-check";
import {
  attention,
  type AttentionSpec,
  type AttentionTile,
  subgroupsAllow,
} from "../../wgsl/attention.ts";
import { runKernel } from "../../runtime/run_kernel.ts";
import {
  assertClose,
  expectMatch,
  F32,
  floats,
  gpu,
  gpuTest,
  rng,
  runBoth,
  RUNS,
  share,
  toF16,
  toF32,
} from "./_check.ts";
import {
  type AttentionShape,
  attentionSizes,
  maskedSoftmax,
  type Segment,
} from "./_attention_cases.ts";

const segment = (kvRows: number, qRows: number) =>
  fc.record({
    src: fc.constantFrom(0 as const, 1 as const),
    kvStart: fc.integer({ min: 0, max: kvRows - 1 }),
    kvShare: share,
    qStart: fc.integer({ min: 0, max: qRows }),
    qShare: share,
    causal: fc.constantFrom(0 as const, 1 as const),
    diag: fc.integer({ min: -6, max: 12 }),
  }).map(({ kvShare, qShare, ...s }): Segment => ({
    ...s,
    kvCount: Math.round(kvShare * (kvRows - s.kvStart)),
    qEnd: s.qStart + Math.round(qShare * (qRows - s.qStart)),
  }));

// Tiles of the register-tiled path (head sizes that are multiples of 4), small enough to compile
// quickly on GL llvmpipe and to give several key tiles per segment even at these sizes; between
// them: one and several invocations per row, fewer and more invocations than staged elements,
// head columns padded (d 8, 16, 48 are not multiples of 4·tx), a resident Q block with K/V
// tiles through prefetch registers, k-major scores, and pipelined stages (head columns padded,
// several stages per tile, odd Q/K chunks, 12 invocations: a partial subgroup on lavapipe) with
// subgroup row reductions where the device has them. Each head size takes one tile, because
// GL compile time grows steeply with unrolled code (a resident tile at d 64 takes 9 s there).
const TILES: AttentionTile[] = [
  { tx: 4, ty: 2, tq: 4, bkv: 4, dk: 4, vk: 4 },
  { tx: 4, ty: 1, tq: 4, bkv: 8, dk: 8, vk: 4 },
  { tx: 8, ty: 2, tq: 4, bkv: 8, dk: 4, vk: 8 },
  { tx: 4, ty: 2, tq: 4, bkv: 8, dk: 4, vk: 4, resident: true },
  { tx: 4, ty: 2, tq: 4, bkv: 16, dk: 4, vk: 8, kMajor: true },
  { tx: 4, ty: 2, tq: 4, bkv: 16, dk: 8, vk: 8, pipelined: true },
  withSubgroups({ tx: 4, ty: 3, tq: 4, bkv: 16, dk: 4, vk: 4, pipelined: true }),
];
const TILE_BY_HEAD: Record<number, AttentionTile> = {
  8: TILES[3],
  16: TILES[4],
  24: TILES[6],
  32: TILES[2],
  40: TILES[5],
  48: TILES[1],
  64: TILES[0],
};

/** `tile` with subgroup row reductions where the test device runs them, else without. */
function withSubgroups(tile: AttentionTile): AttentionTile {
  const sg = { ...tile, subgroups: true };
  return gpu && subgroupsAllow(gpu.device, sg) ? sg : tile;
}

const problem = fc.record({
  headDim: fc.constantFrom(5, 6, 8, 16, 24, 32, 40, 48, 64),
  kv: fc.constantFrom("f32" as const, "f16" as const),
  // Small tiles give several key tiles per segment even at these small sizes: keysPerTile for the
  // generic path (head sizes 5 and 6), a tile for the register-tiled one.
  keysPerTile: fc.constantFrom(4, 8),
  accumulate: fc.boolean(),
  group: fc.constantFrom(1, 2, 4),
  kvHeads: fc.integer({ min: 1, max: 2 }),
  qRows: fc.integer({ min: 1, max: 40 }),
  qOffset: fc.integer({ min: 0, max: 3 }),
  outOffset: fc.integer({ min: 0, max: 3 }),
  kvRows: fc.integer({ min: 1, max: 60 }),
  scaleFactor: fc.constantFrom(1, 4),
  seed: fc.integer(),
}).chain((p) =>
  fc.record({
    p: fc.constant(p),
    segments: fc.array(segment(p.kvRows, p.qRows), { minLength: 0, maxLength: 4 }),
  })
);

interface Case {
  spec: AttentionSpec;
  shape: AttentionShape;
  segments: Segment[];
  buffers: Record<string, Float64Array>;
}

/**
 * Buffers for a problem; KV rows that no segment reads hold NaN, so reading one would show. With
 * `spec.accumulate`, out/lse hold earlier partial results, a quarter of them empty (lse −∞, out NaN).
 */
function buffersFor(
  spec: AttentionSpec,
  shape: AttentionShape,
  segments: Segment[],
  kvRows: number,
  seed: number,
): Record<string, Float64Array> {
  const { qRows, heads, kvHeads, qOffset, outOffset } = shape;
  const d = spec.headDim;
  const kvData = (source: number, salt: number) => {
    const data = floats(kvRows * kvHeads * d, seed + salt);
    const used = new Uint8Array(kvRows);
    for (const s of segments) if (s.src === source) used.fill(1, s.kvStart, s.kvStart + s.kvCount);
    used.forEach((u, row) => u || data.fill(NaN, row * kvHeads * d, (row + 1) * kvHeads * d));
    return spec.kv === "f16" ? toF16(data) : data;
  };
  const outRows = outOffset + qRows + 1;
  const out = floats(outRows * heads * d, seed + 5);
  const lse = floats(outRows * heads, seed + 6, -3, 3);
  if (spec.accumulate) {
    const next = rng(seed + 7);
    lse.forEach((_, row) => {
      if (next() < 0.25) {
        lse[row] = -Infinity;
        out.fill(NaN, row * d, (row + 1) * d);
      }
    });
  }
  return {
    q: floats((qOffset + qRows) * heads * d, seed),
    k0: kvData(0, 1),
    v0: kvData(0, 2),
    k1: kvData(1, 3),
    v1: kvData(1, 4),
    out: toF32(out),
    lse: toF32(lse),
  };
}

function run(c: Case) {
  return expectMatch(attention, c.spec, attentionSizes(c.shape, c.segments), c.buffers, F32);
}

gpuTest(
  "attention matches the reference over random segment tables, overwriting or merging",
  async () => {
    await fc.assert(
      fc.asyncProperty(problem, async ({ p, segments }) => {
        const spec = {
          headDim: p.headDim,
          kv: p.kv,
          accumulate: p.accumulate,
          ...(p.headDim % 4 ? { keysPerTile: p.keysPerTile } : { tile: TILE_BY_HEAD[p.headDim] }),
        };
        const shape = {
          qRows: p.qRows,
          heads: p.kvHeads * p.group,
          kvHeads: p.kvHeads,
          qOffset: p.qOffset,
          outOffset: p.outOffset,
          scale: p.scaleFactor / Math.sqrt(p.headDim),
        };
        const buffers = buffersFor(spec, shape, segments, p.kvRows, p.seed);
        await run({ spec, shape, segments, buffers });
      }),
      RUNS,
    );
  },
);

/** The APB layout of one host: keys [P | A | B], query rows [A | B]. */
async function checkApb(spec: AttentionSpec, group: number) {
  const [passing, anchor, block, kvHeads] = [23, 19, 37, 2];
  const heads = kvHeads * group;
  const rows = anchor + block;
  const headDim = spec.headDim;
  const shape = {
    qRows: rows,
    heads,
    kvHeads,
    qOffset: 0,
    outOffset: 0,
    scale: 1 / Math.sqrt(headDim),
  };
  // Local K/V (source 0) holds [A | B]; the passing block arrives in source 1.
  const segments: Segment[] = [
    { src: 1, kvStart: 0, kvCount: passing, qStart: anchor, qEnd: rows, causal: 0, diag: 0 },
    { src: 0, kvStart: 0, kvCount: anchor, qStart: anchor, qEnd: rows, causal: 0, diag: 0 },
    { src: 0, kvStart: anchor, kvCount: block, qStart: anchor, qEnd: rows, causal: 1, diag: 0 },
    { src: 0, kvStart: 0, kvCount: anchor, qStart: 0, qEnd: anchor, causal: 1, diag: 0 },
  ];
  const buffers = buffersFor(spec, shape, segments, Math.max(rows, passing), 7);
  const out = await run({ spec, shape, segments, buffers });
  // The mask of apb-spec §2.5 over the concatenated keys [P | A | B].
  const width = kvHeads * headDim;
  const concat = (p: Float64Array, local: Float64Array) => {
    const all = new Float64Array((passing + rows) * width);
    all.set(p.subarray(0, passing * width));
    all.set(local.subarray(0, rows * width), passing * width);
    return all;
  };
  const allowed = (i: number, j: number) =>
    i < anchor ? passing <= j && j <= passing + i : j <= passing + i;
  const naive = maskedSoftmax(
    buffers.q,
    concat(buffers.k1, buffers.k0),
    concat(buffers.v1, buffers.v0),
    rows,
    passing + rows,
    heads,
    kvHeads,
    headDim,
    shape.scale,
    allowed,
  );
  assertClose(out.out.subarray(0, rows * heads * headDim), naive.out, F32, "APB out vs naive");
  assertClose(out.lse.subarray(0, rows * heads), naive.lse, F32, "APB lse vs naive");
}

gpuTest(
  "attention with the APB layout equals a naive masked softmax (d 64, GQA 4)",
  () => checkApb({ headDim: 64, kv: "f32", keysPerTile: 8 }, 4),
);
gpuTest(
  "attention with the APB layout equals a naive masked softmax (d 128 f16, GQA 2)",
  () => checkApb({ headDim: 128, kv: "f16" }, 2),
);
gpuTest(
  "attention with the APB layout equals a naive masked softmax (d 48, no GQA)",
  () => checkApb({ headDim: 48, kv: "f32", keysPerTile: 4 }, 1),
);
gpuTest(
  "attention with the APB layout in the shape of the GPU tiles (d 64 f16, GQA 4)",
  () =>
    // 16 invocations per row and 8 pairs per invocation, as the GPU tiles have; small chunks
    // keep it quick to compile on software adapters.
    checkApb({
      headDim: 64,
      kv: "f16",
      tile: { tx: 16, ty: 2, tq: 8, bkv: 16, dk: 4, vk: 4 },
    }, 4),
);
gpuTest(
  "attention with the APB layout, k-major scores, 8 pairs per invocation (d 32 f16, GQA 4)",
  () =>
    checkApb({
      headDim: 32,
      kv: "f16",
      tile: { tx: 8, ty: 1, tq: 8, bkv: 32, dk: 4, vk: 8, kMajor: true },
    }, 4),
);
gpuTest(
  "attention with the APB layout, pipelined stages in the shape of the GPU tiles (d 128 f16, GQA 4)",
  () =>
    // 16 pairs per row block as the GPU tiles have (ty·tq/4 + 1 = 17 vec4s per Q row), keys 4 per
    // invocation, subgroup row reductions where the device has them (tx 8 fits lavapipe's 8).
    checkApb({
      headDim: 128,
      kv: "f16",
      tile: withSubgroups({ tx: 8, ty: 16, tq: 4, bkv: 32, dk: 8, vk: 8, pipelined: true }),
    }, 4),
);
gpuTest(
  "attention with the APB layout, pipelined stages, 8 pairs per invocation (d 64 f32, GQA 2)",
  () =>
    checkApb({
      headDim: 64,
      kv: "f32",
      accumulate: false,
      tile: { tx: 8, ty: 4, tq: 8, bkv: 32, dk: 16, vk: 8, pipelined: true },
    }, 2),
);
gpuTest(
  "attention with the APB layout, k-major scores and subgroup row reductions (d 32 f32, GQA 4)",
  () =>
    checkApb({
      headDim: 32,
      kv: "f32",
      tile: withSubgroups({ tx: 8, ty: 2, tq: 4, bkv: 32, dk: 8, vk: 8, kMajor: true }),
    }, 4),
);
gpuTest(
  "attention with the APB layout, generic path (d 6, GQA 2)",
  () => checkApb({ headDim: 6, kv: "f16", keysPerTile: 8 }, 2),
);

gpuTest("attention: dense causal, negative diagonal and empty rows", async () => {
  const cases = [[64, "f32", 0, 8], [32, "f16", -3, 16], [16, "f32", 5, undefined]] as const;
  for (const [headDim, kv, diag, keysPerTile] of cases) {
    const rows = 70;
    const spec = { headDim, kv, keysPerTile };
    const shape = { qRows: rows, heads: 4, kvHeads: 2, qOffset: 0, outOffset: 0, scale: 0.3 };
    // Rows 60… see nothing: the only segment covers query rows [0, 60).
    const segments: Segment[] = [
      { src: 0, kvStart: 0, kvCount: rows, qStart: 0, qEnd: 60, causal: 1, diag },
    ];
    const { out, lse } = await run({
      spec,
      shape,
      segments,
      buffers: buffersFor(spec, shape, segments, rows, 11),
    });
    for (let i = 0; i < rows; i++) {
      const empty = i >= 60 || i + diag < 0;
      for (let h = 0; h < 4; h++) {
        ok((lse[i * 4 + h] === -Infinity) === empty, `row ${i} head ${h} lse ${lse[i * 4 + h]}`);
      }
      if (empty) ok(out.subarray(i * 4 * headDim, (i + 1) * 4 * headDim).every((x) => x === 0));
    }
  }
});

gpuTest("attention with no segments writes zeros and −∞", async () => {
  const spec = { headDim: 8, kv: "f32" as const };
  const shape = { qRows: 5, heads: 2, kvHeads: 1, qOffset: 0, outOffset: 1, scale: 1 };
  const { gpu } = await runBoth(
    attention,
    spec,
    attentionSizes(shape, []),
    buffersFor(spec, shape, [], 1, 3),
  );
  ok(gpu.lse.subarray(2, 12).every((x) => x === -Infinity));
  ok(gpu.out.subarray(16, 96).every((x) => x === 0));
});

Deno.test("attention refuses more than 8 segments and a bad GQA ratio", () => {
  const seg: Segment = { src: 0, kvStart: 0, kvCount: 1, qStart: 0, qEnd: 1, causal: 0, diag: 0 };
  const shape = { qRows: 1, heads: 2, kvHeads: 1, qOffset: 0, outOffset: 0, scale: 1 };
  const spec = { headDim: 8, kv: "f32" as const };
  throws(() => attention.params(spec, attentionSizes(shape, Array(9).fill(seg))), /8 segments/);
  throws(() => attention.params(spec, attentionSizes({ ...shape, kvHeads: 3 }, [seg])), /multiple/);
});

gpuTest("attention accumulating over a partition of the keys equals one pass over all", async (
  device,
) => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 30 }),
      fc.integer({ min: 1, max: 50 }),
      share,
      fc.constantFrom(0 as const, 1 as const),
      fc.integer(),
      async (rows, keys, cutShare, causal, seed) => {
        const spec = { headDim: 16, kv: "f32" as const, keysPerTile: 8 };
        const shape = { qRows: rows, heads: 4, kvHeads: 2, qOffset: 0, outOffset: 0, scale: 0.5 };
        const cut = Math.round(cutShare * keys);
        // Bottom-right causal over all keys, split at key `cut` into the two sources.
        const diag = keys - rows;
        const whole = { kvStart: 0, qStart: 0, qEnd: rows, causal } as const;
        const first: Segment = { ...whole, src: 0, kvCount: cut, diag };
        const second: Segment = {
          ...whole,
          src: 1,
          kvStart: cut,
          kvCount: keys - cut,
          diag: diag - cut,
        };
        // Both sources hold the same keys, so the two passes read the two halves of one cache.
        const [k, v] = [floats(keys * 2 * 16, seed + 1), floats(keys * 2 * 16, seed + 2)];
        const buffers = {
          q: floats(rows * 4 * 16, seed),
          k0: k,
          v0: v,
          k1: k,
          v1: v,
          out: new Float64Array(rows * 4 * 16),
          lse: new Float64Array(rows * 4),
        };
        const all = await runKernel(
          device,
          attention,
          spec,
          attentionSizes(shape, [{ ...whole, src: 0, kvCount: keys, diag }]),
          buffers,
        );
        const part = await runKernel(
          device,
          attention,
          spec,
          attentionSizes(shape, [first]),
          buffers,
        );
        const merged = await runKernel(
          device,
          attention,
          { ...spec, accumulate: true },
          attentionSizes(shape, [second]),
          { ...buffers, ...part },
        );
        assertClose(merged.out, all.out, F32, "out");
        assertClose(merged.lse, all.lse, F32, "lse");
      },
    ),
    RUNS,
  );
});

Deno.test("attention keys: a spec without a tile keeps its plan id; tiles are named", () => {
  equal(attention.key({ headDim: 128, kv: "f16", accumulate: true }), "attention_d128_f16_acc");
  equal(
    attention.key({ headDim: 64, kv: "f32", tile: TILES[2] }),
    "attention_d64_f32_t8x2x4_k8_d4_v8",
  );
  equal(
    attention.key({ headDim: 64, kv: "f32", tile: TILES[3] }),
    "attention_d64_f32_t4x2x4_k8_res",
  );
  throws(
    () => attention.generate({ headDim: 64, kv: "f32", tile: { ...TILES[0], bkv: 6 } }),
    /invalid tile/,
  );
  throws(
    () => attention.generate({ headDim: 64, kv: "f32", tile: { ...TILES[0], kMajor: true } }),
    /invalid tile/,
  );
  equal(
    attention.key({ headDim: 64, kv: "f32", tile: { ...TILES[5], subgroups: true } }),
    "attention_d64_f32_t4x2x4_k16_d8_v8_pl_sg",
  );
  // Subgroup reductions need tx to be a power of two; pipelined stages four keys per invocation.
  throws(
    () =>
      attention.generate({
        headDim: 64,
        kv: "f32",
        tile: { tx: 12, ty: 2, tq: 4, bkv: 48, dk: 4, vk: 4, subgroups: true },
      }),
    /invalid tile/,
  );
  throws(
    () => attention.generate({ headDim: 64, kv: "f32", tile: { ...TILES[5], bkv: 8 } }),
    /invalid tile/,
  );
  const sg = attention.generate({ headDim: 64, kv: "f32", tile: { ...TILES[5], subgroups: true } });
  equal(sg.features.join(), "subgroups");
  ok(!sg.code.includes("enable "), "subgroup builtins need no enable directive in naga");
});
