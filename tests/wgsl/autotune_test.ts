// The autotuner: the divisibility proof behind vec4 choices, cache lookups (and refusals of cached
// specs that do not fit the sizes), tuning by timestamps on the test adapter, and the executor
// running a whole plan with tuned (tiled, vectorised) kernels against the float64 executor.

import { equal, ok } from "node:assert/strict";
import {
  alwaysMultiple,
  candidates,
  ruleSpec,
  saveTuningCache,
  tunedSpec,
  tuneKernel,
  tuningCache,
  tuningKey,
} from "../../runtime/autotune.ts";
import { matmul, type MatmulSpec } from "../../wgsl/matmul.ts";
import { INT8_TILES, type Int8MatmulSpec } from "../../wgsl/int8_matmul.ts";
import { type AttentionSpec, subgroupsAllow } from "../../wgsl/attention.ts";
import { kernelFamily } from "../../wgsl/mod.ts";
import { strategyByName } from "../../compiler/strategies/mod.ts";
import tiny from "../../examples/tiny.ts";
import { ids, mapError, planFor, runPlan } from "../_runs.ts";
import { gpu, gpuTest } from "./_check.ts";

/** Runs `fn` with APB_TUNING_FILE pointing at a fresh file holding `entries`. */
async function withCache(
  entries: Record<string, unknown>,
  fn: (file: string) => void | Promise<void>,
): Promise<void> {
  const file = await Deno.makeTempFile({ suffix: ".json" });
  const before = Deno.env.get("APB_TUNING_FILE");
  await Deno.writeTextFile(file, JSON.stringify({ version: 1, entries }));
  Deno.env.set("APB_TUNING_FILE", file);
  try {
    await fn(file);
  } finally {
    if (before === undefined) Deno.env.delete("APB_TUNING_FILE");
    else Deno.env.set("APB_TUNING_FILE", before);
    await Deno.remove(file);
  }
}

const entry = (spec: unknown) => ({ spec, ms: 1, sizes: {}, tried: [], date: "" });

Deno.test("alwaysMultiple proves divisibility for every value of the variables", () => {
  ok(alwaysMultiple({ count: "(t)*4096" }, (s) => s.count, 4));
  ok(alwaysMultiple({ count: 4096 }, (s) => s.count, 8));
  ok(!alwaysMultiple({ count: "t+1" }, (s) => s.count, 4));
  ok(!alwaysMultiple({ offset: "96+past" }, (s) => s.offset, 4));
  ok(alwaysMultiple({ offset: "4*(past+t)+96" }, (s) => s.offset, 4));
  ok(alwaysMultiple({ rows: "t", cols: 12 }, (s) => s.rows * s.cols, 4));
  ok(!alwaysMultiple({ rows: "t", cols: 6 }, (s) => s.rows * s.cols, 4));
});

gpuTest("tunedSpec: software adapters keep base specs; a cached spec wins when it fits", async (
  device,
) => {
  const base: MatmulSpec = { weight: "f32", bias: false, accumulate: false, activation: "none" };
  const sizes = { M: 100, N: 64, K: 32, aOffset: 0, cStride: 64, cOffset: 0 };
  const tiled = { ...base, tile: { bm: 16, bn: 16, bk: 4, tm: 4, tn: 4, group: 2, vec4: true } };
  await withCache({}, () => {
    equal(tunedSpec(device, "matmul", base, sizes), base);
    // Families the tuner does not know pass through untouched.
    const argmax = {};
    equal(tunedSpec(device, "argmax", argmax, { rows: 1 }), argmax);
  });
  await withCache({ [tuningKey(device, "matmul", base, sizes)]: entry(tiled) }, () => {
    equal(matmul.key(tunedSpec(device, "matmul", base, sizes) as MatmulSpec), matmul.key(tiled));
    // Another K is another shape class: no entry, the rule.
    equal(tunedSpec(device, "matmul", base, { ...sizes, K: 30 }), base);
  });
  // A cached vec4 choice is refused where the sizes do not allow it.
  const odd = { count: "t*3" };
  await withCache({
    [tuningKey(device, "add", {}, odd)]: entry({ vec4: true }),
  }, () => {
    ok(!(tunedSpec(device, "add", {}, odd) as { vec4?: boolean }).vec4);
  });
});

gpuTest("tuneKernel times candidates by timestamps and caches the fastest", async (device) => {
  if (!device.features.has("timestamp-query")) return;
  const base: MatmulSpec = { weight: "f16", bias: true, accumulate: false, activation: "none" };
  const sizes = { M: 40, N: 24, K: 16, aOffset: 0, cStride: 24, cOffset: 0 };
  const list = [
    { ...base, tile: { bm: 16, bn: 16, bk: 4, tm: 4, tn: 4, group: 1, vec4: true } },
    { ...base, tile: { bm: 8, bn: 8, bk: 4, tm: 2, tn: 2, group: 1, vec4: false } },
  ];
  await withCache({}, async (file) => {
    const result = await tuneKernel(device, "matmul", base, sizes, {
      rounds: 2,
      passMs: 0.5,
      candidates: list,
    });
    equal(result.timings.length, 2);
    ok(result.timings.every((t) => t.ms > 0 && Number.isFinite(t.ms)));
    const best = matmul.key(result.best.spec as MatmulSpec);
    equal(best, result.timings[0].key);
    equal(matmul.key(tunedSpec(device, "matmul", base, sizes) as MatmulSpec), best);
    await saveTuningCache();
    const saved = JSON.parse(await Deno.readTextFile(file));
    ok(saved.entries[tuningKey(device, "matmul", base, sizes)]);
    equal(Object.keys(tuningCache().entries).length, 1);
  });
});

Deno.test("attention rules pick subgroup tiles only where the device runs them", () => {
  // A GPU adapter as the rules see it: limits of the H100, subgroups of `min` or none.
  const device = (features: string[], min: number) =>
    ({
      adapterInfo: { isFallbackAdapter: false, subgroupMinSize: min },
      features: new Set(features),
      limits: {
        maxComputeWorkgroupStorageSize: 49152,
        maxComputeInvocationsPerWorkgroup: 1024,
        maxComputeWorkgroupSizeX: 1024,
      },
    }) as unknown as GPUDevice;
  const spec = { headDim: 128, kv: "f32" as const };
  const tile = (d: GPUDevice) => (ruleSpec(d, "attention", spec, {}) as AttentionSpec).tile!;
  const nvidia = device(["subgroups"], 32);
  ok(tile(nvidia).subgroups && tile(nvidia).tx <= 32);
  ok(kernelFamily("attention").generate({ ...spec, tile: tile(nvidia) }).features.length === 1);
  // Without the feature, or with subgroups narrower than tx (lavapipe's 8): no subgroup tile.
  for (const d of [device([], 32), device(["subgroups"], 8)]) {
    ok(!tile(d).subgroups, JSON.stringify(tile(d)));
    equal(kernelFamily("attention").generate({ ...spec, tile: tile(d) }).features.length, 0);
  }
  ok(subgroupsAllow(device(["subgroups"], 8), { ...tile(nvidia), tx: 8 }));
  ok(!subgroupsAllow(device(["subgroups"], 8), { ...tile(nvidia), tx: 16 }));
  // Candidates follow the same check.
  for (const d of [device([], 32), device(["subgroups"], 8)]) {
    const list = candidates(d, "attention", spec, {}) as AttentionSpec[];
    ok(list.every((s) => !s.tile?.subgroups || s.tile.tx <= 8 && d.features.has("subgroups")));
  }
  ok((candidates(nvidia, "attention", spec, {}) as AttentionSpec[]).some((s) => s.tile?.subgroups));
});

Deno.test("candidates are distinct kernels and include vec4 only where the sizes allow", () => {
  if (!gpu) return;
  const device = gpu.device;
  const sizes = { M: 4096, N: 4096, K: 4096, aOffset: 0, cStride: 4096, cOffset: 0 };
  const base = { weight: "f32", bias: false, accumulate: false, activation: "none" };
  const list = candidates(device, "matmul", base, sizes);
  const codes = new Set(list.map((s) => kernelFamily("matmul").generate(s).code));
  equal(codes.size, list.length);
  const add = candidates(device, "add", {}, { count: 6 }) as { vec4?: boolean }[];
  ok(add.every((s) => !s.vec4));
  ok((candidates(device, "add", {}, { count: 8 }) as { vec4?: boolean }[]).some((s) => s.vec4));
});

gpuTest("a plan runs with tuned kernels (tiles, vec4) and matches the float64 executor", async (
  device,
) => {
  const vocab = tiny.config.vocabSize;
  const tokens = ids(40, vocab, 9);
  for (
    const [strategy, hosts] of [[strategyByName("dense"), 1], [strategyByName("apb"), 3]] as const
  ) {
    const plan = planFor(tiny, strategy, {
      hosts,
      contextTokens: 37,
      queryTokens: 3,
      extendRows: 3,
    });
    // Every tuned family gets a small tile or its vec4 variant where allowed (a software adapter's
    // rules would keep the base specs, so the cache forces the fast paths).
    const entries: Record<string, unknown> = {};
    for (const program of Object.values(plan.programs)) {
      for (const step of program.phases.flatMap((p) => p.steps.flat())) {
        const decl = plan.kernels[step.kernel];
        const spec = decl.spec as Record<string, unknown>;
        const fast = decl.family === "matmul"
          ? {
            ...spec,
            tile: { bm: 16, bn: 16, bk: 4, tm: 4, tn: 4, group: 2, vec4: false, kMajor: true },
          }
          : decl.family === "attention"
          ? { ...spec, tile: { tx: 4, ty: 2, tq: 4, bkv: 8, dk: 8, vk: 4 } }
          : { ...spec, vec4: true };
        entries[tuningKey(device, decl.family, decl.spec, step.sizes)] = entry(fast);
      }
    }
    await withCache(entries, async () => {
      const got = await runPlan(plan, tokens.slice(0, 37), tokens.slice(37), gpu, 9);
      const want = await runPlan(plan, tokens.slice(0, 37), tokens.slice(37), null, 9);
      const err = mapError(got.prefill, want.prefill);
      ok(err <= 1e-4, `${strategy.name}: prefill ${err}`);
      const q = mapError(new Map([[0, got.query!]]), new Map([[0, want.query!]]));
      ok(q <= 1e-4, `${strategy.name}: query ${q}`);
      got.session.destroy();
      want.session.destroy();
    });
  }
});

Deno.test("int8 GEMM tiles: the rule by rows, columns and depth; tunings shared across epilogues", async () => {
  const device = (shared: number) =>
    ({
      adapterInfo: { isFallbackAdapter: false, description: "fake", vendor: "", device: "" },
      limits: {
        maxComputeWorkgroupStorageSize: shared,
        maxComputeInvocationsPerWorkgroup: 1024,
        maxComputeWorkgroupSizeX: 1024,
      },
      features: new Set(),
    }) as unknown as GPUDevice;
  const base: Int8MatmulSpec = {
    matrix: { m: 16, n: 16, k: 32 },
    tile: INT8_TILES["128x128x64/64x64"],
    subgroupSize: 32,
    output: "f32",
    biasType: "f16",
    bias: false,
    accumulate: false,
    activation: "none",
  };
  const sizes = (M: number | string, N: number, K = 4096) => ({
    M,
    N,
    K,
    kWords: K / 4,
    aOffset: 0,
    cStride: N,
    cOffset: 0,
  });
  const tile = (M: number | string, N: number, K = 4096, shared = 49152) =>
    (ruleSpec(device(shared), "int8_matmul", base, sizes(M, N, K)) as Int8MatmulSpec).tile;
  equal(tile("t", 4096), INT8_TILES["16x128x64/16x32"]);
  equal(tile(512, 4096), INT8_TILES["64x64x64/32x32"]);
  equal(tile(2048, 1024), INT8_TILES["128x128x64/64x64"]);
  equal(tile(2048, 4096, 14336), INT8_TILES["128x256x32/64x64"]);
  equal(tile(8192, 4096, 14336), INT8_TILES["128x256x32/64x64"]);
  equal(tile(2048, 14336), INT8_TILES["128x256x32/64x64"]);
  // A device without the workgroup memory keeps the lowering's tile.
  equal(tile(2048, 14336, 4096, 8192), base.tile);
  const listed = candidates(device(49152), "int8_matmul", base, sizes(2048, 4096) as never);
  ok(listed.length === Object.keys(INT8_TILES).length, `${listed.length} candidates`);
  // One tuning serves every epilogue: a tile measured on the plain GEMM applies to a layer's
  // residual-adding GEMM, whose own flags stay.
  const measured = { ...base, tile: INT8_TILES["128x128x64/32x64"] };
  const key = tuningKey(device(49152), "int8_matmul", base, sizes(2048, 4096));
  await withCache({ [key]: entry(measured) }, () => {
    const layer = { ...base, accumulate: true, bias: true, biasType: "f32" as const };
    const got = tunedSpec(device(49152), "int8_matmul", layer, sizes(2048, 4096));
    equal(JSON.stringify(got), JSON.stringify({ ...layer, tile: measured.tile }));
  });
});
