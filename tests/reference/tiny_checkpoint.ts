// Tiny Hugging Face checkpoints written by tests: config.json plus model.safetensors, or shards with
// model.safetensors.index.json, holding seeded values that are exact in the file's dtype, so the
// float64 reference can use the very values the runtime reads.

import {
  type ReadableDtype,
  type TensorToWrite,
  writeSafetensors,
} from "../../runtime/safetensors.ts";

type Json = Record<string, unknown>;

/** A checkpoint a test wrote, with the exact values of its tensors. */
export interface TinyCheckpoint {
  /** Its directory (a fresh temporary one). */
  dir: string;
  /** The config.json object. */
  config: Json;
  /** Every tensor's values as float64, by name. */
  tensors: Map<string, Float64Array>;
}

/** Options of {@linkcode writeTinyCheckpoint}. */
export interface TinyOptions {
  /** Dtype in the file (default F32). */
  dtype?: ReadableDtype;
  /** Shards (default 1: one model.safetensors; more: an index and model-0000i-of-0000n files). */
  shards?: number;
  /** Seed of the values (default 1). */
  seed?: number;
  /** Replaces tensors before they are written (delete one, change a shape, plant a NaN). */
  edit?: (tensors: TensorToWrite[]) => void;
}

/** The tensors of a Hugging Face Llama-family model of `config`, with their shapes, in file order. */
export function llamaShapes(config: Json): [string, number[]][] {
  const n = (key: string) => config[key] as number;
  const [hidden, heads, vocab] = [n("hidden_size"), n("num_attention_heads"), n("vocab_size")];
  const kvHeads = n("num_key_value_heads") ?? heads;
  const headDim = n("head_dim") ?? hidden / heads;
  const [q, kv, mlp] = [heads * headDim, kvHeads * headDim, n("intermediate_size")];
  const bias = config.model_type === "qwen2" || config.attention_bias === true;
  const shapes: [string, number[]][] = [["model.embed_tokens.weight", [vocab, hidden]]];
  for (let l = 0; l < n("num_hidden_layers"); l++) {
    const p = `model.layers.${l}`;
    shapes.push([`${p}.input_layernorm.weight`, [hidden]]);
    for (const [name, rows] of [["q_proj", q], ["k_proj", kv], ["v_proj", kv]] as const) {
      shapes.push([`${p}.self_attn.${name}.weight`, [rows, hidden]]);
      if (bias) shapes.push([`${p}.self_attn.${name}.bias`, [rows]]);
    }
    shapes.push([`${p}.self_attn.o_proj.weight`, [hidden, q]]);
    shapes.push([`${p}.post_attention_layernorm.weight`, [hidden]]);
    shapes.push([`${p}.mlp.gate_proj.weight`, [mlp, hidden]]);
    shapes.push([`${p}.mlp.up_proj.weight`, [mlp, hidden]]);
    shapes.push([`${p}.mlp.down_proj.weight`, [hidden, mlp]]);
  }
  shapes.push(["model.norm.weight", [hidden]]);
  if (config.tie_word_embeddings !== true) shapes.push(["lm_head.weight", [vocab, hidden]]);
  return shapes;
}

/** A seeded uniform generator on [-1, 1) (mulberry32). */
export function uniform(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * 2 - 1;
  };
}

/** `values` rounded to what `dtype` holds exactly (bf16 by truncation), as f32. */
export function exactIn(dtype: ReadableDtype, values: Float32Array): Float32Array {
  if (dtype === "F16") return Float32Array.from(new Float16Array(values));
  if (dtype === "BF16") {
    const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
    for (let i = 0; i < bits.length; i++) bits[i] &= 0xffff0000;
  }
  return values;
}

/** Seeded values of a weight: norms near 1, biases small, matrices scaled by 1/sqrt(fan-in). */
function seeded(name: string, shape: number[], next: () => number): Float32Array {
  const count = shape.reduce((a, b) => a * b, 1);
  const values = new Float32Array(count);
  const scale = name.endsWith("norm.weight")
    ? 0.2
    : name.endsWith(".bias")
    ? 0.2
    : name === "model.embed_tokens.weight"
    ? 1
    : 1 / Math.sqrt(shape[1]);
  const base = name.endsWith("norm.weight") ? 1 : 0;
  for (let i = 0; i < count; i++) values[i] = base + scale * next();
  return values;
}

/** Writes a checkpoint of `config` with seeded values into a fresh temporary directory. */
export async function writeTinyCheckpoint(
  config: Json,
  options: TinyOptions = {},
): Promise<TinyCheckpoint> {
  const dtype = options.dtype ?? "F32";
  const next = uniform(options.seed ?? 1);
  const tensors: TensorToWrite[] = llamaShapes(config).map(([name, shape]) => ({
    name,
    dtype,
    shape,
    data: exactIn(dtype, seeded(name, shape, next)),
  }));
  options.edit?.(tensors);
  const dir = await Deno.makeTempDir({ prefix: "tiny_checkpoint_" });
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
  const shards = options.shards ?? 1;
  if (shards === 1) {
    await writeSafetensors(`${dir}/model.safetensors`, tensors);
  } else {
    const weightMap: Record<string, string> = {};
    const per = Math.ceil(tensors.length / shards);
    for (let s = 0; s < shards; s++) {
      const file = `model-${pad(s + 1)}-of-${pad(shards)}.safetensors`;
      const part = tensors.slice(s * per, (s + 1) * per);
      for (const t of part) weightMap[t.name] = file;
      await writeSafetensors(`${dir}/${file}`, part);
    }
    await Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ metadata: {}, weight_map: weightMap }),
    );
  }
  const values = new Map(tensors.map((t) => [t.name, Float64Array.from(t.data)]));
  return { dir, config, tensors: values };
}

function pad(n: number): string {
  return String(n).padStart(5, "0");
}
