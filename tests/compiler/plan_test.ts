// Plans survive JSON, are validated on load, and refuse other format versions with a message.

import { assert } from "../../compiler/_deps.ts";
import { lower } from "../../compiler/lower.ts";
import { evalExpr, PLAN_VERSION, PlanFormatError, validatePlan } from "../../compiler/plan.ts";
import { emitPlan } from "../../compiler/emit.ts";
import { strategyByName } from "../../compiler/strategies/mod.ts";
import { readPlanDir } from "../../runtime/load.ts";
import tiny from "../../examples/tiny.ts";
import { testGpu } from "../_gpu.ts";

const plan = () =>
  lower(tiny, strategyByName("apb", { anchor: 4, passing: 2 }), {
    hosts: 4,
    contextTokens: 48,
    queryTokens: 3,
  });

Deno.test("a plan round-trips through JSON unchanged", () => {
  const p = plan();
  const back = validatePlan(JSON.parse(JSON.stringify(p)));
  assert.deepEqual(back, p);
});

Deno.test("other versions and broken plans are refused with a message", () => {
  const p = plan();
  assert.throws(
    () => validatePlan({ ...p, version: PLAN_VERSION + 1 }),
    (e) =>
      e instanceof PlanFormatError &&
      new RegExp(`version ${PLAN_VERSION + 1} is not supported.*recompile`).test(e.message),
  );
  // Version 1 plans bound int8 attention to the caches, before kv_quantize.
  assert.throws(() => validatePlan({ ...p, version: 1 }), /version 1 is not supported.*recompile/);
  assert.throws(() => validatePlan({ hello: 1 }), /not a plan file/);
  const broken = structuredClone(p);
  broken.programs.prefill.phases[0].steps[0][0].bind.a = "nowhere";
  assert.throws(() => validatePlan(broken), /no buffer nowhere/);
  const missingKernel = structuredClone(p);
  missingKernel.programs.prefill.phases[0].steps[0][0].kernel = "ghost";
  assert.throws(() => validatePlan(missingKernel), /no kernel ghost/);
});

Deno.test("compile output: plan.json, kernels and typed binding, read back intact", async () => {
  const dir = await Deno.makeTempDir();
  const p = plan();
  await emitPlan(p, dir, "examples/tiny.ts");
  const { plan: back, kernelCode } = await readPlanDir(dir);
  assert.deepEqual(back, p);
  assert.equal(Object.keys(kernelCode).length, Object.keys(p.kernels).length);
  const binding = await Deno.readTextFile(`${dir}/mod.ts`);
  assert.match(binding, /export interface TinySession/);
  assert.match(binding, /prefill\(context: ArrayLike<number>, query: ArrayLike<number>/);
  assert.match(binding, /"contextTokens": 48/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("size expressions evaluate run-time variables and reject junk", () => {
  assert.equal(evalExpr("past+t", { past: 5, t: 3 }), 8);
  assert.equal(evalExpr("12-t", { t: 3 }), 9);
  assert.equal(evalExpr("(t-1)*4", { t: 3 }), 8);
  assert.throws(() => evalExpr("t/2", { t: 3 }), /trailing/);
  assert.throws(() => evalExpr("x", {}), /unknown variable x/);
});

Deno.test("weights larger than a buffer may be are split by rows, with identical results", async () => {
  const { runPlan, ids } = await import("../_runs.ts");
  const { dense } = await import("../../compiler/strategies/dense.ts");
  const base = { contextTokens: 20, prefillLogits: "all" as const };
  const whole = lower(tiny, dense(), base);
  // lm_head [256, 64] f32 = 64 KiB: 10 KiB pieces split it into 7 buffers of 40 rows.
  const split = lower(tiny, dense(), { ...base, maxWeightBytes: 10 * 1024 });
  const pieces = split.weights.filter((w) => w.name === "lm_head.weight");
  assert.equal(pieces.length, 7);
  assert.deepEqual(
    pieces.map((w) => w.rows),
    [0, 40, 80, 120, 160, 200, 240].map((s) => [s, Math.min(40, 256 - s)]),
  );
  const tokens = ids(20, 256);
  const a = await runPlan(whole, tokens, [], null);
  const b = await runPlan(split, tokens, [], null);
  for (const [t, row] of a.prefill) assert.deepEqual(b.prefill.get(t), row);
  const gpu = await testGpu();
  if (!gpu) return;
  // On the GPU too: seeded pieces continue their tensor's stream, gathers and GEMMs add up.
  const c = await runPlan(whole, tokens, [], gpu);
  const d = await runPlan(split, tokens, [], gpu);
  for (const [t, row] of c.prefill) assert.deepEqual(d.prefill.get(t), row);
  c.session.destroy();
  d.session.destroy();
});
