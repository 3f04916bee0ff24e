// Llama-3.1-8B(-Instruct), from its Hugging Face config.json: 32 layers, 32 query heads over 8 KV
// heads of 128, FFN 14336, RoPE theta 500000 with Llama-3.1's "llama3" frequency scaling.

import { llamaFromHuggingFace } from "../mod.ts";

/** The checkpoint's config.json, verbatim in the fields that matter. */
export const huggingFaceConfig = {
  architectures: ["LlamaForCausalLM"],
  attention_bias: false,
  hidden_act: "silu",
  hidden_size: 4096,
  intermediate_size: 14336,
  max_position_embeddings: 131072,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_scaling: {
    factor: 8.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192,
    rope_type: "llama3",
  },
  rope_theta: 500000.0,
  tie_word_embeddings: false,
  vocab_size: 128256,
};

/** Llama-3.1-8B. */
export default llamaFromHuggingFace(huggingFaceConfig, "llama3.1-8b");
