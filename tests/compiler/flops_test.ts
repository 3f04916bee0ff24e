// The FLOP convention reproduces the paper's totals (apb-spec.md invariant 22), and counting a
// plan's steps agrees with the closed forms.

import { assert } from "../../compiler/_deps.ts";
import { apbFlops, attentionPairs, denseFlops, planFlops } from "../../compiler/flops.ts";
import { lower } from "../../compiler/lower.ts";
import { strategyByName } from "../../compiler/strategies/mod.ts";
import llama8b from "../../examples/llama3_8b.ts";
import tiny from "../../examples/tiny.ts";

const close = (a: number, b: number, rel: number) => Math.abs(a - b) <= rel * Math.abs(b);

Deno.test("Llama-3.1-8B at 512K: FullAttn 7.94e16, Star (H=8, b = l_a = 65536) 4.63e16", () => {
  const c = llama8b.config;
  assert.ok(close(denseFlops(c, 524288), 7.938e16, 1e-3));
  assert.ok(close(apbFlops(c, 524288, 8, 65536, 0), 4.637e16, 1e-3));
  // The paper's APB figure (1.88e16) matches l_a = 4096, l_p = 1024 rather than the repo's
  // commented 8192/8192 (spec §2.6).
  assert.ok(close(apbFlops(c, 524288, 8, 4096, 1024), 1.88e16, 1e-2));
});

Deno.test("pairs of a segment table: full, causal with positive and negative diagonals", () => {
  const base = { qRows: 4, nseg: 1, qStart0: 0, qEnd0: 4, kvCount0: 4 };
  assert.equal(attentionPairs({ ...base, causal0: 0, diag0: 0 }), 16);
  assert.equal(attentionPairs({ ...base, causal0: 1, diag0: 0 }), 10);
  assert.equal(attentionPairs({ ...base, causal0: 1, diag0: -2 }), 3);
  assert.equal(attentionPairs({ ...base, causal0: 1, diag0: 2 }), 3 + 4 + 4 + 4);
});

Deno.test("counting a plan's steps matches the closed forms when nothing is padded", () => {
  const c = tiny.config;
  const n = 64;
  const dense = planFlops(lower(tiny, strategyByName("dense"), { contextTokens: n }));
  // The closed form counts n²/2 pairs; the causal triangle has n(n+1)/2.
  const pairsFix = c.layers * 4 * c.heads * c.headDim * (n / 2);
  assert.ok(close(dense[0], denseFlops(c, n) + pairsFix, 1e-12));
  const star = planFlops(lower(tiny, strategyByName("star"), { hosts: 4, contextTokens: n }));
  const b = n / 4;
  const starFix = c.layers * 4 * c.heads * c.headDim * (b / 2 + 3 * (2 * b) / 2);
  assert.ok(close(star.reduce((a, x) => a + x), apbFlops(c, n, 4, b, 0) + starFix, 1e-12));
});
