// The plan picture: well-formed standalone SVG for every built-in strategy, one lane per host,
// every segment named, APB's passing rows labelled, byte counts right, and the same bytes each time.

import { assert } from "../../compiler/_deps.ts";
import { lower, type LowerOptions } from "../../compiler/lower.ts";
import type { Plan } from "../../compiler/plan.ts";
import { planSvg } from "../../compiler/plan_svg.ts";
import { type BuiltinOptions, strategyByName } from "../../compiler/strategies/mod.ts";
import llama from "../../examples/llama3_8b.ts";
import tiny from "../../examples/tiny.ts";
import { allElements, parseXml, textContent, type XmlElement } from "./_xml.ts";

// With 96 tokens on 4 hosts APB's default anchor (b/4 = 6) cannot hold an 8-token query.
const OPTIONS: Record<string, BuiltinOptions> = { apb: { anchor: 12 } };
const HOSTS: Record<string, number> = { dense: 1, ulysses: 2 };
const STRATEGIES = ["dense", "ring", "zigzag", "star", "ulysses", "apb"];

function planOf(name: string, extra: Partial<LowerOptions> = {}): Plan {
  return lower(tiny, strategyByName(name, OPTIONS[name] ?? {}), {
    hosts: HOSTS[name] ?? 4,
    contextTokens: 96,
    queryTokens: 8,
    ...extra,
  });
}

function drawn(plan: Plan) {
  const svg = planSvg(plan);
  const root = parseXml(svg);
  const elements = allElements(root);
  const lanes = elements.filter((e) => e.name === "g" && e.attrs.class === "host");
  const texts = elements.filter((e) => e.name === "text").map(textContent);
  const phases = elements.filter((e) => e.name === "g" && e.attrs.class === "phase")
    .map((e) => e.attrs["data-phase"]);
  return { svg, root, elements, lanes, texts, phases };
}

function texts(e: XmlElement): string[] {
  return allElements(e).filter((x) => x.name === "text").map(textContent);
}

for (const name of STRATEGIES) {
  Deno.test(`${name}: a well-formed SVG with a lane per host naming every segment`, () => {
    const plan = planOf(name);
    const { svg, root, lanes } = drawn(plan);
    assert.equal(root.name, "svg");
    assert.equal(root.attrs.xmlns, "http://www.w3.org/2000/svg");
    assert.match(svg, /^<\?xml version="1.0" encoding="UTF-8"\?>\n<svg /);
    // Standalone: nothing fetched, nothing run.
    assert.doesNotMatch(svg, /<script|<image|<foreignObject|href=|@import|url\(http/);
    assert.doesNotMatch(svg, /NaN|undefined|Infinity/);
    assert.deepEqual(lanes.map((l) => l.attrs["data-host"]), plan.hosts.map((_, h) => `${h}`));
    plan.hosts.forEach((host, h) => {
      const own = texts(lanes[h]);
      assert.ok(own.includes(`host ${h}`), `lane ${h} is labelled`);
      for (const s of host.segments) {
        assert.ok(
          own.some((t) => t.startsWith(`${s.name} (${s.count})`)),
          `${name} ${h} ${s.name}`,
        );
      }
    });
  });
}

Deno.test("the XML checker refuses what a browser would", () => {
  for (
    const bad of [
      "<svg><g></svg>",
      "<svg><text>a < b</text></svg>",
      "<svg><text>fish & chips</text></svg>",
      '<svg a="1" a="2"/>',
      "<svg a=1/>",
      "<svg/><svg/>",
      '<svg a="<"/>',
    ]
  ) assert.throws(() => parseXml(bad), Error, bad);
  assert.equal(textContent(parseXml("<a>x &amp; &lt;y&gt; &#39;z&#x27;</a>")), "x & <y> 'z'");
});

Deno.test("the same plan draws the same bytes, also when lowered again", () => {
  for (const name of STRATEGIES) {
    assert.equal(planSvg(planOf(name)), planSvg(planOf(name)));
  }
});

Deno.test("apb: each host labels the passing rows of every earlier host", () => {
  const plan = planOf("apb");
  const { lanes, texts: all } = drawn(plan);
  lanes.forEach((lane, h) => {
    const labels = texts(lane).filter((t) => t.startsWith("passing from host"));
    assert.deepEqual(
      labels,
      Array.from({ length: h }, (_, r) => `passing from host ${r}, 3 rows`),
    );
  });
  // One all-gather phase: host r sends 3 rows of K and of V (2 KV heads × 16, f32) to each later
  // host, 2 × 3 × 32 × 4 = 768 bytes per arrow; 6 arrows.
  assert.equal(all.filter((t) => t === "768 B").length, 6);
  assert.ok(all.includes("12 copies, 4.5 KiB"));
});

Deno.test("apb with an f16 cache moves half the bytes", () => {
  const { texts: all } = drawn(planOf("apb", { kv: "f16" }));
  assert.equal(all.filter((t) => t === "384 B").length, 6);
});

Deno.test("ring: one transfer column per step, remote blocks labelled by step", () => {
  const { lanes, texts: all, phases } = drawn(planOf("ring"));
  assert.deepEqual(phases, [1, 2, 3].map((s) => `layer 0 attention step ${s}`));
  assert.ok(texts(lanes[3]).includes("host 0 block 0–23 · step 3"));
  assert.ok(texts(lanes[3]).includes("block 72–95 · step 0"));
  // 24 rows × 32 columns × 4 bytes, K and V.
  assert.equal(all.filter((t) => t === "6 KiB").length, 6);
});

Deno.test("ulysses: both all-to-alls and the heads each host computes", () => {
  const { lanes, phases } = drawn(planOf("ulysses"));
  assert.ok(texts(lanes[0]).some((t) => t.endsWith("heads 0–1 of 4")));
  assert.ok(texts(lanes[1]).some((t) => t.endsWith("heads 2–3 of 4")));
  // Scatter q, k, v by heads; then bring each host's results home.
  assert.deepEqual(phases, ["layer 0 attention step 0", "layer 0 attention output"]);
});

Deno.test("star and dense draw no transfers", () => {
  for (const name of ["star", "dense"]) {
    const { texts: all } = drawn(planOf(name));
    assert.ok(all.includes("none: hosts exchange nothing in prefill"), name);
  }
});

Deno.test("text from the plan is escaped", () => {
  const plan = planOf("star");
  plan.model.name = `<tiny & "friends">`;
  plan.hosts[1].segments[0].name = "a<b>&'c'";
  const { svg, texts: all } = drawn(plan);
  assert.ok(all.some((t) => t.startsWith(`<tiny & "friends">`)));
  assert.ok(all.some((t) => t.startsWith("a<b>&'c' (24)")));
  assert.ok(svg.includes("&lt;tiny &amp; &quot;friends&quot;&gt;"));
});

Deno.test("128K tokens stay readable: sizes labelled, a few rows among thousands visible", () => {
  const ring = drawn(lower(llama, strategyByName("ring"), { hosts: 8, contextTokens: 131072 }));
  assert.equal(ring.lanes.length, 8);
  assert.ok(ring.texts.includes("block (16,384)"));
  assert.ok(ring.texts.includes("pos 114,688–131,071"));
  // 16 passing rows next to 32K-row blocks: their matrix columns keep a visible width.
  const apb = drawn(lower(llama, strategyByName("apb", { anchor: 1024, passing: 16 }), {
    hosts: 4,
    contextTokens: 131072,
    queryTokens: 64,
  }));
  assert.ok(apb.texts.includes("passing from host 2, 16 rows"));
  const passing = apb.elements.filter((e) => e.name === "rect" && e.attrs.fill === "#e8740c");
  assert.ok(passing.length >= 6);
  assert.ok(passing.every((e) => Number(e.attrs.width) >= 14), "passing columns stay visible");
});
