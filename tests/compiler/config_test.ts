// Bad model configs fail at compile time with one line naming the layer, the field and the rule;
// Hugging Face configs of both transformers layouts are read.

import { assert } from "../../compiler/_deps.ts";
import { configFromHuggingFace, type ModelConfig } from "../../compiler/config.ts";
import { defineModel } from "../../compiler/dsl.ts";
import { ModelError } from "../../compiler/errors.ts";
import { llama } from "../../compiler/models/llama.ts";
import { config as tiny } from "../../examples/tiny.ts";
import { huggingFaceConfig as l8 } from "../../examples/llama3_8b.ts";

function error(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof ModelError, `expected a ModelError, got ${e}`);
    assert.ok(!e.message.includes("\n"), "the message is one line");
    return e.message;
  }
  throw new Error("expected an error");
}

Deno.test("bad configs name the field and the rule", () => {
  const bad = (patch: Partial<ModelConfig>) => error(() => llama({ ...tiny, ...patch }));
  assert.match(bad({ kvHeads: 3 }), /kvHeads: 3 key\/value heads must divide 4 query heads/);
  assert.match(bad({ headDim: 15 }), /headDim: 15 must be even for rotary embeddings/);
  assert.match(bad({ hiddenSize: 0 }), /hiddenSize: must be a positive integer, found 0/);
  assert.match(bad({ layers: -2 }), /layers: must be a positive integer/);
  assert.match(bad({ intermediateSize: 1.5 }), /intermediateSize/);
  assert.match(bad({ normEps: 0 }), /normEps: must be > 0/);
});

Deno.test("hidden size not divisible by heads is refused when head_dim is implicit", () => {
  const json = { ...l8, hidden_size: 4100 };
  assert.match(
    error(() => configFromHuggingFace(json)),
    /hidden_size: 4100 is not divisible by num_attention_heads 32/,
  );
});

Deno.test("mismatched vocab and shapes name the layer", () => {
  const msg = error(() =>
    defineModel(tiny, (m) => {
      const x = m.embedding(m.tokens(), "embed.weight", tiny.vocabSize, tiny.hiddenSize);
      return m.linear(x, "lm_head", tiny.vocabSize - 1);
    })
  );
  assert.match(msg, /logits: width 255 differs from vocabSize 256/);
  const table = error(() =>
    defineModel(tiny, (m) => {
      const x = m.embedding(m.tokens(), "embed.weight", 100, tiny.hiddenSize);
      return m.linear(x, "lm_head", tiny.vocabSize);
    })
  );
  assert.match(table, /embed.weight: has 100 rows but vocabSize is 256/);
  const shape = error(() =>
    defineModel(tiny, (m) => {
      const x = m.embedding(m.tokens(), "embed.weight", 256, 64);
      const y = m.scope("layers.0", () => m.linear(x, "proj", 32));
      return m.linear(m.linear(y, "embed", 256), "lm_head", 256);
    })
  );
  assert.match(
    shape,
    /^tiny: embed\.weight: used with shape \[256,32\] but declared with \[256,64\]/,
  );
});

Deno.test("GQA heads and RoPE head size are checked where they are used", () => {
  const msg = error(() =>
    defineModel(tiny, (m) => {
      const x = m.embedding(m.tokens(), "e.weight", 256, 64);
      const pos = m.positions();
      return m.scope("layers.0.self_attn", () => {
        const q = m.rope(m.linear(x, "q", 60), pos, { heads: 4, headDim: 15, rope: tiny.rope });
        return q;
      });
    })
  );
  assert.match(msg, /^layers\.0\.self_attn: head_dim: 15 must be even/);
});

Deno.test("Hugging Face configs: transformers 4 and 5 layouts, llama3 scaling, Qwen biases", () => {
  const c = configFromHuggingFace(l8);
  assert.equal(c.rope.theta, 500000);
  assert.equal(c.rope.scaling?.type, "llama3");
  assert.equal(c.rope.scaling?.originalMaxPositions, 8192);
  assert.equal(c.headDim, 128);
  const v5 = configFromHuggingFace({
    ...l8,
    rope_theta: undefined,
    rope_scaling: undefined,
    rope_parameters: { rope_theta: 1234, rope_type: "default" },
  });
  assert.equal(v5.rope.theta, 1234);
  assert.equal(v5.rope.scaling, undefined);
  const qwen = configFromHuggingFace({ ...l8, model_type: "qwen2", rope_scaling: undefined });
  assert.equal(qwen.qkvBias, true);
  const fixture = JSON.parse(
    Deno.readTextFileSync(new URL("../fixtures/retrieval-llama-4l/config.json", import.meta.url)),
  );
  const f = configFromHuggingFace(fixture);
  assert.deepEqual([f.layers, f.heads, f.kvHeads, f.headDim, f.rope.theta], [4, 8, 2, 32, 500000]);
  assert.match(
    error(() => configFromHuggingFace({ ...l8, rope_scaling: { rope_type: "yarn" } })),
    /rope_scaling: rope type "yarn" is not supported/,
  );
});

Deno.test("transformers 5 puts llama3 scaling in rope_parameters; both layouts read alike", () => {
  // Llama-3.1's config.json as transformers 5 writes it: no rope_scaling, no top-level rope_theta.
  const { rope_scaling: scaling, rope_theta: theta, ...rest } = l8 as Record<string, unknown>;
  const v5 = configFromHuggingFace({
    ...rest,
    rope_parameters: { ...(scaling as Record<string, unknown>), rope_theta: theta },
  });
  assert.deepEqual(v5.rope, configFromHuggingFace(l8).rope);
  assert.equal(v5.rope.scaling?.factor, 8);
});

Deno.test("the IR prints one node a line with shapes and weights", () => {
  const text = llama({ ...tiny, layers: 1 }).graph.toString();
  assert.match(text, /^graph tiny: \d+ nodes, [\d.]+K parameters/);
  assert.match(text, /%\d+ = attention\(%\d+, %\d+, %\d+, layer=0 heads=4\/2x16\) : f32\[T,64\]/);
  assert.match(text, /linear\(%\d+, model\.layers\.0\.self_attn\.q_proj\.weight\[64,64\], bias=/);
});
