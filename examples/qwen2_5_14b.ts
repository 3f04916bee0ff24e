// Qwen-2.5-14B(-Instruct), from its Hugging Face config.json: 48 layers, 40 query heads over 8 KV
// heads of 128, q/k/v projections with biases, RoPE theta 1e6.

import { llamaFromHuggingFace } from "../mod.ts";

/** The checkpoint's config.json, verbatim in the fields that matter. */
export const huggingFaceConfig = {
  architectures: ["Qwen2ForCausalLM"],
  hidden_act: "silu",
  hidden_size: 5120,
  intermediate_size: 13824,
  max_position_embeddings: 32768,
  model_type: "qwen2",
  num_attention_heads: 40,
  num_hidden_layers: 48,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  tie_word_embeddings: false,
  vocab_size: 152064,
};

/** Qwen-2.5-14B. */
export default llamaFromHuggingFace(huggingFaceConfig, "qwen2.5-14b");
