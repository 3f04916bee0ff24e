// Recovering one layer's attention and transfers from a plan: for the exact strategies the
// recovered masks, put together over hosts, are the causal mask, each pair computed once; APB,
// ring, zigzag and Ulysses show the key sources and steps their strategies describe.

import { assert } from "../../compiler/_deps.ts";
import { lower } from "../../compiler/lower.ts";
import { type HostAttention, layerView } from "../../compiler/plan_view.ts";
import { strategyByName } from "../../compiler/strategies/mod.ts";
import tiny from "../../examples/tiny.ts";

const view = (name: string, hosts: number, tokens = 96, options = {}) =>
  layerView(lower(tiny, strategyByName(name, options), { hosts, contextTokens: tokens }));

/** How often each (query position, key position) pair is attended, over all hosts. */
function pairs(attention: HostAttention[]): Map<string, number> {
  const seen = new Map<string, number>();
  for (const a of attention) {
    for (const b of a.blocks) {
      const row = a.rows[b.row];
      const col = a.cols[b.col];
      assert.ok(row.position !== null && col.position !== null && col.source === "cache");
      for (let r = b.rows[0]; r < b.rows[1]; r++) {
        for (let c = b.cols[0]; c < b.cols[1]; c++) {
          if (b.mask === "causal" && c > r + b.diag) continue;
          const key = `${row.position + r},${col.position + c}`;
          seen.set(key, (seen.get(key) ?? 0) + 1);
        }
      }
    }
  }
  return seen;
}

for (
  const [name, hosts, tokens, times] of [
    ["dense", 1, 96, 1],
    ["ring", 4, 96, 1],
    ["ring", 3, 91, 1],
    ["zigzag", 4, 96, 1],
    ["zigzag", 3, 50, 1],
    // Each host computes every pair for its own slice of heads.
    ["ulysses", 2, 96, 2],
  ] as const
) {
  Deno.test(`${name} on ${hosts} hosts, ${tokens} tokens: the causal mask, each pair ${times}×`, () => {
    const seen = pairs(view(name, hosts, tokens).attention);
    for (let q = 0; q < tokens; q++) {
      for (let k = 0; k < tokens; k++) {
        assert.equal(seen.get(`${q},${k}`) ?? 0, k <= q ? times : 0, `query ${q}, key ${k}`);
      }
    }
    assert.equal(seen.size, (tokens * (tokens + 1)) / 2);
  });
}

Deno.test("apb: anchor rows see the anchor causally; block rows see passing, anchor, own block", () => {
  const v = view("apb", 4, 96, { anchor: 12 });
  assert.equal(v.steps, 1);
  for (const a of v.attention.slice(1)) {
    const h = a.host;
    assert.deepEqual(a.rows.map((r) => r.segment), ["anchor", "block"]);
    assert.deepEqual(
      a.cols.map((c) => `${c.source}:${c.host}:${c.segment}`),
      [
        `cache:${h}:anchor`,
        ...Array.from({ length: h }, (_, r) => `passing:${r}:`),
        `cache:${h}:block`,
      ],
    );
    const masks = a.blocks.map((b) => `${b.row}×${b.col} ${b.mask}`).sort();
    const expected = [
      "0×0 causal",
      "1×0 full",
      ...Array.from({ length: h }, (_, r) => `1×${r + 1} full`),
      `1×${h + 1} causal`,
    ].sort();
    assert.deepEqual(masks, expected);
    assert.ok(a.cols.filter((c) => c.source === "passing").every((c) => c.count === 3));
  }
  const [gather] = v.collectives;
  assert.deepEqual(
    gather.arrows.map((x) => `${x.from}>${x.to}`).sort(),
    ["0>1", "0>2", "0>3", "1>2", "1>3", "2>3"],
  );
  assert.ok(gather.arrows.every((x) => x.bytes === 2 * 3 * 32 * 4));
});

Deno.test("ring: host h reads host h − s's block at step s", () => {
  const v = view("ring", 4);
  assert.equal(v.steps, 4);
  for (const a of v.attention) {
    assert.deepEqual(
      a.cols.map((c) => [c.host, c.steps]),
      Array.from({ length: a.host + 1 }, (_, r) => [r, [a.host - r]]),
    );
  }
  assert.deepEqual(v.collectives.map((c) => c.arrows.length), [3, 2, 1]);
});

Deno.test("zigzag: chunks no local query can see are neither sent nor drawn", () => {
  const host1 = view("zigzag", 4).attention[1];
  assert.equal(host1.cols.find((c) => c.host === 0 && c.segment === "back"), undefined);
  assert.ok(host1.cols.some((c) => c.host === 0 && c.segment === "front"));
});

Deno.test("padding rows are attended by nothing and are no key source", () => {
  const last = view("ring", 4, 90).attention[3];
  const pad = last.rows.findIndex((r) => r.role === "pad");
  assert.deepEqual(last.empty, [pad]);
  assert.ok(last.cols.every((c) => c.role !== "pad"));
});

Deno.test("ulysses: each host computes its slice of heads for every host's rows", () => {
  const v = view("ulysses", 2);
  assert.deepEqual(v.attention.map((a) => a.heads), [[0, 2], [2, 2]]);
  assert.deepEqual(v.attention[1].rows.map((r) => r.owner), [0, 1]);
  assert.deepEqual(v.collectives.map((c) => [c.arrows.length, c.local.length]), [[2, 2], [2, 2]]);
});
