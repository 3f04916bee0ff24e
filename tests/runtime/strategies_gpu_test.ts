// Every strategy on the test adapter: the GPU matches the float64 executor on the same plan
// (f32 storage within 1e-4, f16 storage within 1e-2), and the exact strategies match dense.

import { assert } from "../../compiler/_deps.ts";
import { strategyByName } from "../../compiler/strategies/mod.ts";
import { sinkWindow } from "../../examples/custom_strategy.ts";
import tiny from "../../examples/tiny.ts";
import { testGpu } from "../_gpu.ts";
import { ids, mapError, planFor, runPlan } from "../_runs.ts";

const vocab = tiny.config.vocabSize;
const N = 45;
const Q = 3;
const cases = [
  ["dense", strategyByName("dense"), 1],
  ["ring", strategyByName("ring"), 4],
  ["zigzag", strategyByName("zigzag"), 3],
  ["ulysses", strategyByName("ulysses"), 2],
  ["star", strategyByName("star"), 4],
  ["apb retaining", strategyByName("apb", { anchor: 5, passing: 3 }), 4],
  ["apb query", strategyByName("apb", { anchor: 5, passing: 3, scorer: "query" }), 3],
  ["apb random", strategyByName("apb", { anchor: 5, passing: 3, scorer: "random" }), 4],
  ["sink-window (custom)", sinkWindow({ sink: 3, window: 4 }), 4],
] as const;

Deno.test("GPU matches the float64 executor for every strategy (f32)", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const tokens = ids(N + Q, vocab, 5);
  const [context, query] = [tokens.slice(0, N), tokens.slice(N)];
  let denseRun: Awaited<ReturnType<typeof runPlan>> | undefined;
  for (const [name, strategy, hosts] of cases) {
    await t.step(`${name} on ${hosts} host(s)`, async () => {
      const plan = planFor(tiny, strategy, {
        hosts,
        contextTokens: N,
        queryTokens: Q,
        extendRows: Q,
      });
      const got = await runPlan(plan, context, query, gpu, 5);
      const want = await runPlan(plan, context, query, null, 5);
      assert.ok(mapError(got.prefill, want.prefill) <= 1e-4, "prefill logits");
      const q = mapError(new Map([[0, got.query!]]), new Map([[0, want.query!]]));
      assert.ok(q <= 1e-4, `query logits ${q}`);
      if (name === "dense") denseRun = got;
      if (["ring", "zigzag", "ulysses"].includes(name)) {
        assert.ok(mapError(got.prefill, denseRun!.prefill) <= 1e-4, "exact strategies equal dense");
      }
      got.session.destroy();
      want.session.destroy();
    });
  }
});

Deno.test("f16 weights and KV cache stay close to the float64 executor of the same plan", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const tokens = ids(N, vocab, 6);
  for (
    const [strategy, hosts] of [[strategyByName("dense"), 1], [strategyByName("apb"), 4]] as const
  ) {
    const plan = planFor(tiny, strategy, { hosts, contextTokens: N, weights: "f16", kv: "f16" });
    const got = await runPlan(plan, tokens, [], gpu, 6);
    const want = await runPlan(plan, tokens, [], null, 6);
    const err = mapError(got.prefill, want.prefill);
    assert.ok(err <= 1e-2, `${strategy.name}: ${err}`);
    got.session.destroy();
  }
});

Deno.test("one GPUDevice per host gives the same logits as virtual hosts", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const plan = planFor(tiny, strategyByName("apb", { anchor: 4, passing: 3 }), {
    hosts: 3,
    contextTokens: 30,
    queryTokens: 2,
    extendRows: 2,
  });
  const tokens = ids(32, vocab, 7);
  const { Session } = await import("../../runtime/session.ts");
  const runs = [];
  for (const devicePerHost of [false, true]) {
    const s = await Session.open(plan, { gpu, devicePerHost, weights: { seed: 7 } });
    await s.prefill(tokens.slice(0, 30), tokens.slice(30));
    runs.push((await s.extend(tokens.slice(30), { readLogits: true })).logits[0].logits!);
    s.destroy();
  }
  assert.ok(
    mapError(
      new Map([[0, Float64Array.from(runs[1])]]),
      new Map([[0, Float64Array.from(runs[0])]]),
    ) <= 1e-5,
  );
});
