// Yi-34B-200K, from its Hugging Face config.json: 60 layers, 56 query heads over 8 KV heads of 128,
// RoPE theta 1e7 for its 200K context. A base model: no chat template.

import { llamaFromHuggingFace } from "../mod.ts";

/** The checkpoint's config.json, verbatim in the fields that matter. */
export const huggingFaceConfig = {
  architectures: ["LlamaForCausalLM"],
  hidden_act: "silu",
  hidden_size: 7168,
  intermediate_size: 20480,
  max_position_embeddings: 200000,
  model_type: "llama",
  num_attention_heads: 56,
  num_hidden_layers: 60,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 10000000.0,
  tie_word_embeddings: false,
  vocab_size: 64000,
};

/** Yi-34B-200K. */
export default llamaFromHuggingFace(huggingFaceConfig, "yi-34b-200k");
