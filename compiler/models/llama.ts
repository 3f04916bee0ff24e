// The Llama family (Llama-3.x, Qwen-2.5, Yi) written in the DSL, with Hugging Face weight names.

import { configFromHuggingFace, type ModelConfig } from "../config.ts";
import { defineModel, type ModelBuilder, type ModelDefinition, type Tensor } from "../dsl.ts";

/** One decoder layer: pre-norm attention and gated SiLU MLP, each with a residual. */
export function llamaLayer(
  m: ModelBuilder,
  c: ModelConfig,
  i: number,
  h: Tensor,
  pos: Tensor,
): Tensor {
  const p = `model.layers.${i}`;
  return m.scope(`layers.${i}`, () => {
    const attn = m.scope("self_attn", () => {
      const x = m.rmsNorm(h, `${p}.input_layernorm.weight`, c.normEps);
      const bias = c.qkvBias;
      const q = m.linear(x, `${p}.self_attn.q_proj`, c.heads * c.headDim, { bias });
      const k = m.linear(x, `${p}.self_attn.k_proj`, c.kvHeads * c.headDim, { bias });
      const v = m.linear(x, `${p}.self_attn.v_proj`, c.kvHeads * c.headDim, { bias });
      const qr = m.rope(q, pos, { heads: c.heads, headDim: c.headDim, rope: c.rope });
      const kr = m.rope(k, pos, { heads: c.kvHeads, headDim: c.headDim, rope: c.rope });
      const o = m.attention(qr, kr, v, { heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim });
      return m.linear(o, `${p}.self_attn.o_proj`, c.hiddenSize);
    });
    h = h.add(attn);
    const mlp = m.scope("mlp", () => {
      const x = m.rmsNorm(h, `${p}.post_attention_layernorm.weight`, c.normEps);
      const gate = m.linear(x, `${p}.mlp.gate_proj`, c.intermediateSize);
      const up = m.linear(x, `${p}.mlp.up_proj`, c.intermediateSize);
      return m.linear(gate.silu().mul(up), `${p}.mlp.down_proj`, c.hiddenSize);
    });
    return h.add(mlp);
  });
}

/** A whole Llama-family causal LM: embedding, layers, final norm, LM head (tied or not). */
export function llama(config: ModelConfig): ModelDefinition {
  return defineModel(config, (m) => {
    const c = config;
    const pos = m.positions();
    let h = m.embedding(m.tokens(), "model.embed_tokens.weight", c.vocabSize, c.hiddenSize);
    for (let i = 0; i < c.layers; i++) h = llamaLayer(m, c, i, h, pos);
    h = m.scope("norm", () => m.rmsNorm(h, "model.norm.weight", c.normEps));
    const head = c.tiedEmbeddings ? "model.embed_tokens" : "lm_head";
    return m.scope("lm_head", () => m.linear(h, head, c.vocabSize));
  });
}

/** A Llama-family model from a Hugging Face `config.json` object. */
export function llamaFromHuggingFace(
  json: Record<string, unknown>,
  name?: string,
): ModelDefinition {
  return llama(configFromHuggingFace(json, name));
}
