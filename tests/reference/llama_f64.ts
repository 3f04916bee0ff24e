// An independent float64 forward pass of a Hugging Face Llama-family model (Llama, Qwen-2, Yi),
// written straight from transformers' modeling_llama.py / modeling_qwen2.py equations. It reads the
// config.json fields itself and shares nothing with the compiler, the plan or the kernels (nor with
// the runtime's safetensors reader), so agreeing with it means the whole pipeline computes the model.

type Json = Record<string, unknown>;

/** Tensor values by Hugging Face name, as float64. */
export type Tensors = (name: string) => Float64Array;

/** What the forward needs from config.json. */
interface Shapes {
  vocab: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  eps: number;
  bias: boolean;
  tied: boolean;
  invFreq: Float64Array;
}

function shapesOf(config: Json): Shapes {
  const n = (key: string, fallback?: number): number => {
    const v = config[key] ?? fallback;
    if (typeof v !== "number") throw new Error(`reference: config.${key} is ${v}`);
    return v;
  };
  const hidden = n("hidden_size");
  const heads = n("num_attention_heads");
  const headDim = n("head_dim", hidden / heads);
  const params = (config.rope_parameters ?? {}) as Json;
  const scaling = (config.rope_scaling ?? params) as Json | null;
  const theta = Number(params.rope_theta ?? config.rope_theta ?? 10000);
  return {
    vocab: n("vocab_size"),
    hidden,
    layers: n("num_hidden_layers"),
    heads,
    kvHeads: n("num_key_value_heads", heads),
    headDim,
    intermediate: n("intermediate_size"),
    eps: n("rms_norm_eps", 1e-6),
    bias: config.model_type === "qwen2" || config.attention_bias === true,
    tied: config.tie_word_embeddings === true,
    invFreq: inverseFrequencies(headDim, theta, scaling),
  };
}

/**
 * `inv_freq` of transformers' rope_init_fn: 1 / theta^(2i/d), and for rope_type "llama3" the
 * `_compute_llama3_parameters` rescaling (long wavelengths / factor, a smooth blend between).
 */
function inverseFrequencies(dim: number, theta: number, scaling: Json | null): Float64Array {
  const inv = Float64Array.from({ length: dim / 2 }, (_, i) => 1 / theta ** ((2 * i) / dim));
  if ((scaling?.rope_type ?? scaling?.type) !== "llama3") return inv;
  const factor = Number(scaling!.factor);
  const low = Number(scaling!.low_freq_factor);
  const high = Number(scaling!.high_freq_factor);
  const old = Number(scaling!.original_max_position_embeddings);
  const lowWavelen = old / low;
  const highWavelen = old / high;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    const scaled = wavelen > lowWavelen ? f / factor : f;
    const medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
    if (!medium) return scaled;
    const smooth = (old / wavelen - low) / (high - low);
    return ((1 - smooth) * scaled) / factor + smooth * scaled;
  });
}

/** y = x Wᵀ + b for rows x [t, in], W [out, in]. */
function linear(
  x: Float64Array,
  t: number,
  w: Float64Array,
  out: number,
  b?: Float64Array,
): Float64Array {
  const inn = w.length / out;
  const y = new Float64Array(t * out);
  for (let r = 0; r < t; r++) {
    for (let o = 0; o < out; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < inn; i++) s += x[r * inn + i] * w[o * inn + i];
      y[r * out + o] = s;
    }
  }
  return y;
}

/** LlamaRMSNorm: x / sqrt(mean(x²) + eps) · weight, per row. */
function rmsNorm(x: Float64Array, t: number, w: Float64Array, eps: number): Float64Array {
  const h = w.length;
  const y = new Float64Array(x.length);
  for (let r = 0; r < t; r++) {
    let ss = 0;
    for (let i = 0; i < h; i++) ss += x[r * h + i] ** 2;
    const scale = 1 / Math.sqrt(ss / h + eps);
    for (let i = 0; i < h; i++) y[r * h + i] = x[r * h + i] * scale * w[i];
  }
  return y;
}

/** apply_rotary_pos_emb: x·cos + rotate_half(x)·sin per head, with cos/sin = cat(f, f)(position). */
function rope(x: Float64Array, t: number, heads: number, d: number, inv: Float64Array): void {
  const half = d / 2;
  for (let r = 0; r < t; r++) {
    for (let h = 0; h < heads; h++) {
      const at = (r * heads + h) * d;
      for (let i = 0; i < half; i++) {
        const angle = r * inv[i];
        const [c, s] = [Math.cos(angle), Math.sin(angle)];
        const [x1, x2] = [x[at + i], x[at + i + half]];
        x[at + i] = x1 * c - x2 * s;
        x[at + i + half] = x2 * c + x1 * s;
      }
    }
  }
}

/** Causal softmax attention with GQA (query head h reads KV head h / (heads / kvHeads)). */
function attention(q: Float64Array, k: Float64Array, v: Float64Array, t: number, s: Shapes) {
  const d = s.headDim;
  const out = new Float64Array(t * s.heads * d);
  const group = s.heads / s.kvHeads;
  const scores = new Float64Array(t);
  for (let h = 0; h < s.heads; h++) {
    const kv = Math.floor(h / group);
    for (let i = 0; i < t; i++) {
      let max = -Infinity;
      for (let j = 0; j <= i; j++) {
        let dot = 0;
        for (let c = 0; c < d; c++) {
          dot += q[(i * s.heads + h) * d + c] * k[(j * s.kvHeads + kv) * d + c];
        }
        scores[j] = dot / Math.sqrt(d);
        max = Math.max(max, scores[j]);
      }
      let sum = 0;
      for (let j = 0; j <= i; j++) sum += scores[j] = Math.exp(scores[j] - max);
      for (let j = 0; j <= i; j++) {
        const p = scores[j] / sum;
        for (let c = 0; c < d; c++) {
          out[(i * s.heads + h) * d + c] += p * v[(j * s.kvHeads + kv) * d + c];
        }
      }
    }
  }
  return out;
}

/**
 * Logits [tokens.length, vocab] of the causal LM `config` (a config.json object) with weights
 * `tensors`, tokens at positions 0, 1, …
 */
export function llamaForward(config: Json, tensors: Tensors, tokens: readonly number[]) {
  const s = shapesOf(config);
  const t = tokens.length;
  const [hd, q, kv] = [s.hidden, s.heads * s.headDim, s.kvHeads * s.headDim];
  const embed = tensors("model.embed_tokens.weight");
  const x = new Float64Array(t * hd);
  tokens.forEach((id, r) => x.set(embed.subarray(id * hd, (id + 1) * hd), r * hd));
  for (let l = 0; l < s.layers; l++) {
    const p = (name: string) => tensors(`model.layers.${l}.${name}`);
    const bias = (name: string) => (s.bias ? p(name) : undefined);
    const a = rmsNorm(x, t, p("input_layernorm.weight"), s.eps);
    const qs = linear(a, t, p("self_attn.q_proj.weight"), q, bias("self_attn.q_proj.bias"));
    const ks = linear(a, t, p("self_attn.k_proj.weight"), kv, bias("self_attn.k_proj.bias"));
    const vs = linear(a, t, p("self_attn.v_proj.weight"), kv, bias("self_attn.v_proj.bias"));
    rope(qs, t, s.heads, s.headDim, s.invFreq);
    rope(ks, t, s.kvHeads, s.headDim, s.invFreq);
    const o = linear(attention(qs, ks, vs, t, s), t, p("self_attn.o_proj.weight"), hd);
    for (let i = 0; i < x.length; i++) x[i] += o[i];
    const m = rmsNorm(x, t, p("post_attention_layernorm.weight"), s.eps);
    const gate = linear(m, t, p("mlp.gate_proj.weight"), s.intermediate);
    const up = linear(m, t, p("mlp.up_proj.weight"), s.intermediate);
    for (let i = 0; i < gate.length; i++) gate[i] = (gate[i] / (1 + Math.exp(-gate[i]))) * up[i];
    const down = linear(gate, t, p("mlp.down_proj.weight"), hd);
    for (let i = 0; i < x.length; i++) x[i] += down[i];
  }
  const final = rmsNorm(x, t, tensors("model.norm.weight"), s.eps);
  const head = tensors(s.tied ? "model.embed_tokens.weight" : "lm_head.weight");
  return linear(final, t, head, s.vocab);
}

/**
 * The F32 tensors of a safetensors file as float64, parsed here from the format's definition (u64
 * header length, JSON header with data offsets) rather than with the runtime's reader.
 */
export async function readF32Safetensors(path: string): Promise<Map<string, Float64Array>> {
  const bytes = await Deno.readFile(path);
  const length = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + length))) as Record<
    string,
    { dtype: string; data_offsets: [number, number] }
  >;
  const tensors = new Map<string, Float64Array>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    if (entry.dtype !== "F32") throw new Error(`reference reader: ${name} is ${entry.dtype}`);
    const [from, to] = entry.data_offsets.map((o) => o + 8 + length);
    const data = bytes.slice(from, to);
    tensors.set(name, Float64Array.from(new Float32Array(data.buffer)));
  }
  return tensors;
}
