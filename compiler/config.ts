// Model configuration of the Llama family, and its reading from a Hugging Face config.json object.

import { ModelError } from "./errors.ts";

/** Llama-3.1 "llama3" rotary frequency scaling. */
export interface Llama3RopeScaling {
  /** Always "llama3". */
  type: "llama3";
  /** Overall scaling factor (8 for Llama-3.1). */
  factor: number;
  /** Wavelengths longer than originalMaxPositions / lowFreqFactor are scaled by 1/factor. */
  lowFreqFactor: number;
  /** Wavelengths shorter than originalMaxPositions / highFreqFactor are left alone. */
  highFreqFactor: number;
  /** Context length of pre-training (8192 for Llama-3.1). */
  originalMaxPositions: number;
}

/** Rotary position embedding settings. */
export interface RopeConfig {
  /** Base of the inverse frequencies. */
  theta: number;
  /** Optional frequency scaling. */
  scaling?: Llama3RopeScaling;
}

/** Everything that fixes a Llama-family model's shapes. */
export interface ModelConfig {
  /** Display name. */
  name: string;
  /** Vocabulary size. */
  vocabSize: number;
  /** Hidden (residual stream) width. */
  hiddenSize: number;
  /** Number of transformer layers. */
  layers: number;
  /** Query heads. */
  heads: number;
  /** Key/value heads (GQA); divides heads. */
  kvHeads: number;
  /** Width of one head. */
  headDim: number;
  /** Width of the gated MLP. */
  intermediateSize: number;
  /** RMSNorm epsilon. */
  normEps: number;
  /** Rotary embedding. */
  rope: RopeConfig;
  /** Whether q, k and v projections carry biases (Qwen-2.5). */
  qkvBias: boolean;
  /** Whether the LM head reuses the embedding table. */
  tiedEmbeddings: boolean;
  /** Longest position the model was trained for (informational). */
  maxPositions: number;
}

/**
 * Reads a Hugging Face `config.json` object (Llama, Qwen-2, Yi; transformers 4 and 5 layouts:
 * `rope_theta` at top level or inside `rope_parameters`).
 */
export function configFromHuggingFace(
  json: Record<string, unknown>,
  name?: string,
): ModelConfig {
  const where = "config.json";
  const num = (key: string, fallback?: number): number => {
    const v = json[key] ?? fallback;
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw new ModelError(where, key, `must be a number, found ${JSON.stringify(v)}`);
    }
    return v;
  };
  const heads = num("num_attention_heads");
  const hiddenSize = num("hidden_size");
  const ropeParams = (json.rope_parameters ?? {}) as Record<string, unknown>;
  const scalingJson = (json.rope_scaling ?? ropeParams) as Record<string, unknown> | null;
  const theta = ropeParams.rope_theta ?? json.rope_theta ?? 10000;
  if (typeof theta !== "number") throw new ModelError(where, "rope_theta", "must be a number");
  const ropeType = scalingJson?.rope_type ?? scalingJson?.type;
  let scaling: Llama3RopeScaling | undefined;
  if (ropeType === "llama3") {
    scaling = {
      type: "llama3",
      factor: Number(scalingJson!.factor),
      lowFreqFactor: Number(scalingJson!.low_freq_factor),
      highFreqFactor: Number(scalingJson!.high_freq_factor),
      originalMaxPositions: Number(scalingJson!.original_max_position_embeddings),
    };
  } else if (ropeType !== undefined && ropeType !== "default" && ropeType !== null) {
    throw new ModelError(where, "rope_scaling", `rope type "${ropeType}" is not supported`);
  }
  const modelType = String(json.model_type ?? "llama");
  const config: ModelConfig = {
    name: name ?? modelType,
    vocabSize: num("vocab_size"),
    hiddenSize,
    layers: num("num_hidden_layers"),
    heads,
    kvHeads: num("num_key_value_heads", heads),
    headDim: num("head_dim", Math.floor(hiddenSize / heads)),
    intermediateSize: num("intermediate_size"),
    normEps: num("rms_norm_eps", 1e-6),
    rope: scaling ? { theta, scaling } : { theta },
    qkvBias: modelType === "qwen2" || json.attention_bias === true,
    tiedEmbeddings: json.tie_word_embeddings === true,
    maxPositions: num("max_position_embeddings", 4096),
  };
  if (json.head_dim === undefined && hiddenSize % heads !== 0) {
    throw new ModelError(
      where,
      "hidden_size",
      `${hiddenSize} is not divisible by num_attention_heads ${heads} (set head_dim explicitly)`,
    );
  }
  validateConfig(config);
  return config;
}

/** Checks the rules every config must keep; throws a one-line {@linkcode ModelError}. */
export function validateConfig(c: ModelConfig): void {
  const where = `model ${c.name}`;
  const positive: (keyof ModelConfig)[] = [
    "vocabSize",
    "hiddenSize",
    "layers",
    "heads",
    "kvHeads",
    "headDim",
    "intermediateSize",
  ];
  for (const key of positive) {
    const v = c[key] as number;
    if (!Number.isInteger(v) || v <= 0) {
      throw new ModelError(where, key, `must be a positive integer, found ${v}`);
    }
  }
  if (!(c.normEps > 0)) throw new ModelError(where, "normEps", `must be > 0, found ${c.normEps}`);
  if (c.heads % c.kvHeads !== 0) {
    throw new ModelError(
      where,
      "kvHeads",
      `${c.kvHeads} key/value heads must divide ${c.heads} query heads (GQA)`,
    );
  }
  if (c.headDim % 2 !== 0) {
    throw new ModelError(where, "headDim", `${c.headDim} must be even for rotary embeddings`);
  }
  if (!(c.rope.theta > 0)) {
    throw new ModelError(where, "rope.theta", `must be > 0, found ${c.rope.theta}`);
  }
  const s = c.rope.scaling;
  if (
    s && !(s.factor > 0 && s.lowFreqFactor > 0 && s.highFreqFactor > s.lowFreqFactor &&
      s.originalMaxPositions > 0)
  ) {
    throw new ModelError(
      where,
      "rope.scaling",
      "llama3 scaling needs factor > 0, 0 < lowFreqFactor < highFreqFactor, originalMaxPositions > 0",
    );
  }
}
