// A tiny Llama-style model written out in the DSL: two layers that run in seconds on a software
// adapter. `deno task demo` compiles and checks it; `deno task run examples/tiny.ts --check` too.

import { defineModel, type ModelConfig } from "../mod.ts";

/** Shapes of the tiny model (GQA with 4 query heads over 2 KV heads, Llama-3.1 RoPE scaling). */
export const config: ModelConfig = {
  name: "tiny",
  vocabSize: 256,
  hiddenSize: 64,
  layers: 2,
  heads: 4,
  kvHeads: 2,
  headDim: 16,
  intermediateSize: 160,
  normEps: 1e-5,
  rope: {
    theta: 500000,
    scaling: {
      type: "llama3",
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositions: 64,
    },
  },
  qkvBias: true,
  tiedEmbeddings: false,
  maxPositions: 4096,
};

/** The model, written layer by layer with the DSL. */
export default defineModel(config, (m) => {
  const c = config;
  const positions = m.positions();
  let h = m.embedding(m.tokens(), "model.embed_tokens.weight", c.vocabSize, c.hiddenSize);
  for (let i = 0; i < c.layers; i++) {
    const p = `model.layers.${i}`;
    m.scope(`layers.${i}`, () => {
      // Attention block: pre-norm, q/k/v projections with biases, RoPE, GQA attention.
      const x = m.rmsNorm(h, `${p}.input_layernorm.weight`, c.normEps);
      const q = m.linear(x, `${p}.self_attn.q_proj`, c.heads * c.headDim, { bias: true });
      const k = m.linear(x, `${p}.self_attn.k_proj`, c.kvHeads * c.headDim, { bias: true });
      const v = m.linear(x, `${p}.self_attn.v_proj`, c.kvHeads * c.headDim, { bias: true });
      const rope = { headDim: c.headDim, rope: c.rope };
      const o = m.attention(
        m.rope(q, positions, { heads: c.heads, ...rope }),
        m.rope(k, positions, { heads: c.kvHeads, ...rope }),
        v,
        { heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim },
      );
      h = h.add(m.linear(o, `${p}.self_attn.o_proj`, c.hiddenSize));
      // MLP block: pre-norm, gated SiLU.
      const y = m.rmsNorm(h, `${p}.post_attention_layernorm.weight`, c.normEps);
      const gate = m.linear(y, `${p}.mlp.gate_proj`, c.intermediateSize);
      const up = m.linear(y, `${p}.mlp.up_proj`, c.intermediateSize);
      h = h.add(m.linear(gate.silu().mul(up), `${p}.mlp.down_proj`, c.hiddenSize));
    });
  }
  const final = m.rmsNorm(h, "model.norm.weight", c.normEps);
  return m.linear(final, "lm_head", c.vocabSize);
});
