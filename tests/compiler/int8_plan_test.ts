// Int8 plans (Dawn's tensor-core kernels) on the float64 CPU executor, which runs each kernel's
// reference: the quantisation is reproduced code for code, so this checks the lowering (which
// steps, which bindings, the setup program that quantises the weights) and what int8 costs in
// logit error, without a GPU that has subgroup matrices.

import { assert } from "../../compiler/_deps.ts";
import { planFlops } from "../../compiler/flops.ts";
import type { Int8Choice } from "../../compiler/lower.ts";
import { llama } from "../../compiler/models/llama.ts";
import type { Plan } from "../../compiler/plan.ts";
import { apb } from "../../compiler/strategies/apb.ts";
import { dense } from "../../compiler/strategies/dense.ts";
import type { Strategy } from "../../compiler/strategies/strategy.ts";
import tiny from "../../examples/tiny.ts";
import { ids, mapError, planFor, runPlan } from "../_runs.ts";

// The tiny model with a head size the int8 attention kernel takes (a multiple of 32).
const model = llama({ ...tiny.config, name: "tiny-d32", hiddenSize: 128, headDim: 32 });
const INT8: Int8Choice = { matrix: { m: 16, n: 16, k: 32 }, subgroupSize: 32, attention: "int8" };

function plan(strategy: Strategy, hosts: number, n: number, int8: Int8Choice | null): Plan {
  return planFor(model, strategy, { hosts, contextTokens: n, int8 });
}

function families(p: Plan, program: "setup" | "prefill" | "extend"): Map<string, number> {
  const count = new Map<string, number>();
  for (const phase of p.programs[program]?.phases ?? []) {
    for (const step of phase.steps.flat()) {
      const f = p.kernels[step.kernel].family;
      count.set(f, (count.get(f) ?? 0) + 1);
    }
  }
  return count;
}

Deno.test("int8 plans: W8A8 GEMMs and int8 attention in prefill, weights quantised at setup", () => {
  const p = plan(apb({ scorer: "random" }), 2, 90, INT8);
  const setup = families(p, "setup");
  const prefill = families(p, "prefill");
  const extend = families(p, "extend");
  const layers = model.config.layers;
  // q|k|v (one fused node, three weights), o, gate|up (two weights), down per layer.
  assert.equal(setup.get("quantize"), layers * 7);
  assert.ok((prefill.get("int8_attention") ?? 0) >= 2 * layers, "prefill attention is int8");
  assert.ok(
    !prefill.has("attention") || prefill.get("attention")! < prefill.get("int8_attention")!,
  );
  // Each int8 attention dispatch reads K and V that kv_quantize prepared for it, just before.
  assert.equal(prefill.get("kv_quantize"), prefill.get("int8_attention"));
  for (const phase of p.programs.prefill!.phases) {
    for (const steps of phase.steps) {
      steps.forEach((step, i) => {
        if (p.kernels[step.kernel].family !== "int8_attention") return;
        const before = steps[i - 1];
        assert.equal(p.kernels[before.kernel].family, "kv_quantize");
        assert.equal(before.bind.codes, step.bind.codes);
        assert.deepEqual(before.sizes, step.sizes);
      });
    }
  }
  assert.ok((prefill.get("int8_matmul") ?? 0) > 0);
  // The LM head stays f32: one matmul per host in prefill.
  assert.equal(prefill.get("matmul"), 2);
  assert.ok(!extend.has("int8_attention"), "extend steps keep the f32 attention kernel");

  const f32Attention = families(
    plan(apb({ scorer: "random" }), 2, 90, { ...INT8, attention: "f32" }),
    "prefill",
  );
  assert.ok(!f32Attention.has("int8_attention"));
  assert.ok((f32Attention.get("int8_matmul") ?? 0) > 0);
});

Deno.test("int8 plans count the same FLOPs as f32 plans", () => {
  for (const [strategy, hosts] of [[dense(), 1], [apb({ scorer: "random" }), 2]] as const) {
    const f32 = planFlops(plan(strategy, hosts, 90, null));
    const int8 = planFlops(plan(strategy, hosts, 90, INT8));
    assert.deepEqual(int8, f32);
    assert.ok(f32.every((x) => x > 0));
  }
});

Deno.test("int8 plans stay close to the f32 plan: dense and APB, several key tiles", async () => {
  // 150 tokens: more than two 64-key tiles per host, so μ, per-tile scales and the online
  // softmax across tiles all take part.
  for (const [strategy, hosts] of [[dense(), 1], [apb({ scorer: "random" }), 2]] as const) {
    const n = 150;
    const tokens = ids(n, model.config.vocabSize, 5);
    const want = await runPlan(plan(strategy, hosts, n, null), tokens, [], null, 3);
    const got = await runPlan(plan(strategy, hosts, n, INT8), tokens, [], null, 3);
    want.session.destroy();
    got.session.destroy();
    const err = mapError(got.prefill, want.prefill);
    assert.ok(err > 0 && err < 0.05, `${strategy.name} H=${hosts}: int8 vs f32 logits ${err}`);
  }
});
