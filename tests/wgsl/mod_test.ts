import { equal, ok, throws } from "node:assert/strict";
import { isKernelFamilyName, kernelFamilies, kernelFamily } from "../../wgsl/mod.ts";
import { defaultInt8Tile } from "../../wgsl/int8_matmul.ts";
import { packParams } from "../../wgsl/_params.ts";
import { grid2d } from "../../wgsl/_grid.ts";

Deno.test("kernelFamilies is keyed by each family's own name", () => {
  for (const [name, family] of Object.entries(kernelFamilies)) equal(family.name, name);
  equal(Object.keys(kernelFamilies).length, 20);
});

Deno.test("kernelFamily finds families by name and names the known ones when it cannot", () => {
  equal(kernelFamily("lse_merge"), kernelFamilies.lse_merge);
  ok(isKernelFamilyName("topk") && !isKernelFamilyName("toString"));
  throws(() => kernelFamily("softmax"), /known: embed, rmsnorm/);
});

Deno.test("every kernel declares binding 0 as params and its storage bindings from 1", () => {
  const specs: Record<string, unknown> = {
    embed: { table: "f16" },
    rmsnorm: { weight: "f16" },
    matmul: { weight: "f16", bias: true, accumulate: true, activation: "silu" },
    rope: { rotate: true, out: "f16" },
    attention: { headDim: 64, kv: "f16" },
    copy2d: { elem: "f16" },
    gather: { elem: "f16" },
    query_score: { kv: "f16" },
    fill_random: { elem: "f16" },
    quantize: { input: "f16", smooth: "divide" },
    int8_matmul: {
      matrix: { m: 16, n: 16, k: 32 },
      tile: defaultInt8Tile(1024),
      subgroupSize: 32,
      output: "f32",
      biasType: "f16",
      bias: true,
      accumulate: true,
      activation: "silu",
    },
    int8_attention: { headDim: 128, matrixN: 16, subgroupSize: 32 },
    kv_quantize: { headDim: 96, kv: "f16" },
  };
  // Tensor-core families exist only on Dawn with subgroup matrices; every other one runs anywhere.
  const dawnOnly = new Set(["int8_matmul", "int8_attention"]);
  for (const name of Object.keys(kernelFamilies)) {
    const family = kernelFamily(name);
    const spec = specs[name] ?? {};
    const kernel = family.generate(spec);
    ok(/^[a-z0-9_]+$/.test(family.key(spec)), `${family.key(spec)} is not file-name safe`);
    ok(kernel.code.includes("@group(0) @binding(0) var<uniform> params: Params;"), name);
    kernel.bindings.forEach((b, i) => {
      ok(
        kernel.code.includes(`@binding(${i + 1}) var<storage, ${b.access}> ${b.name}:`),
        `${name} ${b.name}`,
      );
    });
    if (dawnOnly.has(name)) continue;
    equal(kernel.features.length, 0, `${name} needs no device feature`);
    ok(!kernel.code.includes("enable "), `${name} enables nothing`);
  }
});

Deno.test("packParams lays fields out in order and rejects missing or out-of-range sizes", () => {
  const fields = [["a", "u32"], ["b", "i32"], ["c", "f32"]] as const;
  const view = new DataView(packParams("t", fields, { a: 7, b: -2, c: 0.5 }));
  equal(view.byteLength, 16);
  equal(view.getUint32(0, true), 7);
  equal(view.getInt32(4, true), -2);
  equal(view.getFloat32(8, true), 0.5);
  throws(() => packParams("t", fields, { a: 7, b: -2 }), /size "c" is missing/);
  throws(() => packParams("t", fields, { a: -1, b: 0, c: 0 }), /"a" = -1 is not a valid u32/);
  throws(() => packParams("t", fields, { a: 1.5, b: 0, c: 0 }), /u32/);
});

Deno.test("grid2d keeps every dimension within 65535 and covers every workgroup", () => {
  for (const groups of [0, 1, 65535, 65536, 1e6, 65535 * 65535]) {
    const [x, y, z] = grid2d(groups);
    ok(x <= 65535 && y <= 65535 && z === 1);
    ok(groups === 0 ? x === 0 : x * y >= groups && x * (y - 1) < groups);
  }
  throws(() => grid2d(65535 * 65535 + 1));
});
