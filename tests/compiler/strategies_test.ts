// The strategy invariants of apb-spec.md §10, on the float64 CPU executor (exact up to rounding),
// as fast-check properties over context lengths and host counts.

import fc from "fast-check";
import { assert } from "../../compiler/_deps.ts";
import { PlanError } from "../../compiler/errors.ts";
import { apb } from "../../compiler/strategies/apb.ts";
import { dense } from "../../compiler/strategies/dense.ts";
import { strategyByName } from "../../compiler/strategies/mod.ts";
import type { Strategy } from "../../compiler/strategies/strategy.ts";
import { blocks } from "../../compiler/strategies/strategy.ts";
import tiny from "../../examples/tiny.ts";
import { ids, mapError, planFor, runPlan, type StrategyRun } from "../_runs.ts";

const EXACT = 1e-9;
const vocab = tiny.config.vocabSize;

async function logits(strategy: Strategy, hosts: number, n: number, q = 0, seed = 0) {
  const plan = planFor(tiny, strategy, {
    hosts,
    contextTokens: n,
    queryTokens: q,
    extendRows: Math.max(q, 1),
  });
  const tokens = ids(n + q, vocab, seed);
  const run = await runPlan(plan, tokens.slice(0, n), tokens.slice(n), null, seed);
  run.session.destroy();
  return run;
}

const shapes = fc.integer({ min: 1, max: 4 }).chain((hosts) =>
  fc.record({
    hosts: fc.constant(hosts),
    n: fc.integer({ min: 2 * hosts, max: 40 }),
    seed: fc.nat(1000),
  })
);

Deno.test("ring, zigzag and ulysses equal dense, padding included", async () => {
  await fc.assert(
    fc.asyncProperty(shapes, async ({ hosts, n, seed }) => {
      const want = (await logits(dense(), 1, n, 0, seed)).prefill;
      for (const name of ["ring", "zigzag"]) {
        const got = (await logits(strategyByName(name), hosts, n, 0, seed)).prefill;
        assert.ok(mapError(got, want) < EXACT, `${name} H=${hosts} n=${n}`);
      }
      if (hosts <= 2) {
        const got = (await logits(strategyByName("ulysses"), hosts, n, 0, seed)).prefill;
        assert.ok(mapError(got, want) < EXACT, `ulysses H=${hosts} n=${n}`);
      }
    }),
    { numRuns: 12 },
  );
});

Deno.test("APB with one host, or with no anchor and full passing, equals dense", async () => {
  await fc.assert(
    fc.asyncProperty(shapes, async ({ hosts, n, seed }) => {
      const want = (await logits(dense(), 1, n, 0, seed)).prefill;
      const one = (await logits(apb({ scorer: "random" }), 1, n, 0, seed)).prefill;
      assert.ok(mapError(one, want) < EXACT, "H = 1");
      const { block } = blocks(n, hosts);
      const full = apb({ anchor: 0, passing: block, scorer: "random", seed });
      const got = (await logits(full, hosts, n, 0, seed)).prefill;
      assert.ok(mapError(got, want) < EXACT, `l_a = 0, l_p = b, H=${hosts} n=${n}`);
    }),
    { numRuns: 10 },
  );
});

Deno.test("APB's anchor path is exact when host 0 passes all it does not share (spec inv. 14)", async () => {
  for (const [hosts, n, anchor] of [[3, 30, 4], [4, 37, 3], [2, 20, 9]]) {
    const { block } = blocks(n, hosts);
    const passing = Array.from({ length: hosts }, (_, h) => (h === 0 ? block - anchor : block));
    const s = apb({ anchor, passing, queryInAnchor: false, scorer: "retaining" });
    const got = (await logits(s, hosts, n, 4)).prefill;
    const want = (await logits(dense(), 1, n)).prefill;
    assert.ok(mapError(got, want) < EXACT, `H=${hosts} n=${n} l_a=${anchor}`);
  }
});

Deno.test("Star equals APB with no passing, anchor = block and no query", async () => {
  for (const [hosts, n] of [[2, 16], [4, 30], [3, 25]]) {
    const { block } = blocks(n, hosts);
    const star = (await logits(strategyByName("star"), hosts, n)).prefill;
    const a =
      (await logits(apb({ anchor: block, passing: 0, queryInAnchor: false }), hosts, n)).prefill;
    assert.ok(mapError(a, star) < EXACT, `H=${hosts} n=${n}`);
  }
});

Deno.test("APB host 0 is exact for any settings", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        hosts: fc.integer({ min: 2, max: 4 }),
        n: fc.integer({ min: 24, max: 40 }),
        scorer: fc.constantFrom("retaining", "query", "random"),
      }),
      async ({ hosts, n, scorer }) => {
        const { block } = blocks(n, hosts);
        const anchor = Math.max(3, Math.floor(block / 2));
        const s = apb({
          anchor,
          passing: Math.floor((block - anchor) / 2),
          scorer: scorer as "random",
        });
        const got = (await logits(s, hosts, n, 3)).prefill;
        const want = (await logits(dense(), 1, n)).prefill;
        const host0 = new Map([...want].filter(([t]) => t < block));
        assert.ok(mapError(got, host0) < EXACT);
      },
    ),
    { numRuns: 6 },
  );
});

Deno.test("passing order is irrelevant", async () => {
  const base = apb({ anchor: 3, passing: 4, scorer: "retaining" });
  const reversed: Strategy = {
    ...base,
    name: "apb-reversed",
    plan(ctx) {
      return base.plan(ctx).map((host) => ({
        ...host,
        tasks: host.tasks.map((t) => {
          const passed = t.kv.filter((e) => e.kv.kind === "selected").reverse();
          return { ...t, kv: [...passed, ...t.kv.filter((e) => e.kv.kind !== "selected")] };
        }),
      }));
    },
  };
  const a = (await logits(base, 4, 36, 2)).prefill;
  const b = (await logits(reversed, 4, 36, 2)).prefill;
  assert.ok(mapError(b, a) < EXACT);
});

Deno.test("anchor rows do not depend on the passing rows", async () => {
  const n = 32;
  const caches = [];
  for (const passing of [0, 4]) {
    const plan = planFor(tiny, apb({ anchor: 4, passing, scorer: "random" }), {
      hosts: 4,
      contextTokens: n,
      queryTokens: 2,
      extendRows: 2,
    });
    const run = await runPlan(plan, ids(n, vocab), ids(2, vocab, 9), null);
    caches.push(await run.session.executor.read("h3.k1"));
    run.session.destroy();
  }
  const anchorElements = 4 * tiny.config.kvHeads * tiny.config.headDim;
  assert.deepEqual(caches[0].subarray(0, anchorElements), caches[1].subarray(0, anchorElements));
  assert.notDeepEqual(caches[0], caches[1]);
});

Deno.test("distributed decoding over the sharded cache equals single-device decoding", async () => {
  for (const [name, hosts] of [["ring", 4], ["zigzag", 3], ["ulysses", 2], ["dense", 1]] as const) {
    const want = await logits(dense(), 1, 26, 5);
    const got = await logits(strategyByName(name), hosts, 26, 5);
    const err = mapError(new Map([[0, got.query!]]), new Map([[0, want.query!]]));
    assert.ok(err < EXACT, `${name}: ${err}`);
  }
});

Deno.test("parity mode changes multi-token query passes only (bottom-right mask)", async () => {
  const n = 24;
  const run = async (q: number, parity: boolean) =>
    (await logits(apb({ anchor: 3, passing: 2, parity }), 4, n, q)).query!;
  const err = (a: Float64Array, b: Float64Array) => mapError(new Map([[0, a]]), new Map([[0, b]]));
  // One new token sees every cached key under either mask; with three, the reference's mask
  // hides the last keys of non-last hosts from the first rows.
  assert.ok(err(await run(1, true), await run(1, false)) < EXACT);
  assert.ok(err(await run(3, true), await run(3, false)) > 1e-6);
});

Deno.test("KV cache after prefill holds each host's own block; host h receives h·l_p passing rows", () => {
  const n = 45;
  const hosts = 4;
  const { block, pad } = blocks(n, hosts);
  const plan = planFor(tiny, apb({ anchor: 3, passing: 2 }), {
    hosts,
    contextTokens: n,
    queryTokens: 2,
  });
  plan.hosts.forEach((h, i) => {
    assert.equal(h.keep[1] - h.keep[0], i === hosts - 1 ? block - pad : block);
    const recv = plan.buffers.find((b) => b.id === `h${i}.rk1`);
    const rows = recv ? recv.elements / (tiny.config.kvHeads * tiny.config.headDim) : 0;
    assert.equal(rows, i * 2, `host ${i} passing rows`);
  });
});

Deno.test("bad strategy settings are refused at compile time with a reason", () => {
  const refuse = (s: Strategy, hosts: number, n: number, q: number, re: RegExp) =>
    assert.throws(
      () => planFor(tiny, s, { hosts, contextTokens: n, queryTokens: q }),
      (e) => e instanceof PlanError && re.test(e.message),
    );
  refuse(apb({ anchor: 20 }), 4, 40, 0, /anchor length 20 must not exceed the block \(10/);
  refuse(apb({ anchor: 4, passing: 7 }), 4, 40, 0, /host 0 passes 7 rows but has 6 candidates/);
  refuse(
    apb({ anchor: 4, passing: 2 }),
    4,
    40,
    5,
    /query of 5 tokens at offset 0 does not fit an anchor of 4/,
  );
  refuse(strategyByName("ring"), 8, 5, 0, /8 hosts need at least 8 tokens/);
  refuse(
    strategyByName("ulysses"),
    3,
    30,
    0,
    /3 hosts must divide both 4 query heads and 2 KV heads/,
  );
  refuse(strategyByName("zigzag"), 4, 7, 0, /zigzag: 4 hosts need at least 8 tokens/);
  refuse(apb({ scorer: "query" }), 2, 20, 0, /query-aware scorer needs a query/);
});

Deno.test("processing rows in chunks changes nothing (any chunk size, any strategy)", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        name: fc.constantFrom("dense", "ring", "star", "apb", "ulysses"),
        chunkRows: fc.integer({ min: 3, max: 17 }),
        n: fc.integer({ min: 20, max: 40 }),
      }),
      async ({ name, chunkRows, n }) => {
        const hosts = name === "dense" ? 1 : 2;
        const s = name === "apb"
          ? apb({ anchor: 4, passing: 3, scorer: "query" })
          : strategyByName(name);
        const base = { hosts, contextTokens: n, queryTokens: 3, extendRows: 3 };
        const tokens = ids(n + 3, vocab, 2);
        const runs: StrategyRun[] = [];
        for (const options of [base, { ...base, chunkRows }]) {
          const run = await runPlan(
            planFor(tiny, s, options),
            tokens.slice(0, n),
            tokens.slice(n),
            null,
          );
          run.session.destroy();
          runs.push(run);
        }
        assert.ok(mapError(runs[1].prefill, runs[0].prefill) < EXACT);
        const q = (r: StrategyRun) => new Map([[0, r.query!]]);
        assert.ok(mapError(q(runs[1]), q(runs[0])) < EXACT);
      },
    ),
    { numRuns: 10 },
  );
});

Deno.test("anchor rows compute the same KV on every host h ≥ 1 (spec inv. 19)", async () => {
  const plan = planFor(tiny, apb({ anchor: 5, passing: 3 }), {
    hosts: 4,
    contextTokens: 40,
    queryTokens: 2,
  });
  const run = await runPlan(plan, ids(40, vocab), ids(2, vocab, 4), null);
  const rows = 5 * tiny.config.kvHeads * tiny.config.headDim;
  const anchors = [];
  for (const h of [1, 2, 3]) {
    anchors.push((await run.session.executor.read(`h${h}.k1`)).subarray(0, rows));
  }
  assert.deepEqual(anchors[1], anchors[0]);
  assert.deepEqual(anchors[2], anchors[0]);
});

Deno.test("more passing rows bring APB closer to dense, down to exact (spec inv. 23)", async () => {
  const n = 48;
  const hosts = 4;
  const { block } = blocks(n, hosts);
  const anchor = 4;
  const errors = [];
  for (const fraction of [0, 0.5, 1]) {
    let sum = 0;
    for (const seed of [1, 2, 3, 4]) {
      const want = (await logits(dense(), 1, n, 0, seed)).prefill;
      // Host 0 can pass at most block − anchor rows; the others their whole block.
      const passing = Array.from(
        { length: hosts },
        (_, h) => Math.round(fraction * (h === 0 ? block - anchor : block)),
      );
      const s = apb({ anchor, passing, queryInAnchor: false, scorer: "random", seed });
      sum += mapError((await logits(s, hosts, n, 0, seed)).prefill, want);
    }
    errors.push(sum / 4);
  }
  assert.ok(errors[0] > errors[1] && errors[1] > errors[2], `errors ${errors}`);
  assert.ok(errors[2] < EXACT);
});
