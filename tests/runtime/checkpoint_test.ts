// Checkpoint directories: tiny Llama (f32, one file) and Qwen-style (bf16, q/k/v biases, sharded)
// models written here and read back, every error naming the path and the file it expected, APB
// retaining heads in their three homes, and the real retrieval-llama-4l fixture against its config.

import { assert } from "../../compiler/_deps.ts";
import {
  CheckpointError,
  openCheckpoint,
  openRetainingHeads,
  type RetainingHeadShapes,
} from "../../runtime/checkpoint.ts";
import {
  type ReadableDtype,
  type TensorToWrite,
  writeSafetensors,
} from "../../runtime/safetensors.ts";

const FIXTURE = new URL("../fixtures/retrieval-llama-4l", import.meta.url).pathname;

type Config = Record<string, unknown>;

/** The tensors a Hugging Face Llama-family model of `config` holds, with their shapes. */
function llamaShapes(config: Config): Map<string, number[]> {
  const n = (key: string) => config[key] as number;
  const [hidden, heads] = [n("hidden_size"), n("num_attention_heads")];
  const kvHeads = n("num_key_value_heads") ?? heads;
  const headDim = n("head_dim") ?? hidden / heads;
  const [q, kv, mlp] = [heads * headDim, kvHeads * headDim, n("intermediate_size")];
  const shapes = new Map<string, number[]>([["model.embed_tokens.weight", [
    n("vocab_size"),
    hidden,
  ]]]);
  for (let l = 0; l < n("num_hidden_layers"); l++) {
    const p = `model.layers.${l}`;
    shapes.set(`${p}.input_layernorm.weight`, [hidden]);
    shapes.set(`${p}.self_attn.q_proj.weight`, [q, hidden]);
    shapes.set(`${p}.self_attn.k_proj.weight`, [kv, hidden]);
    shapes.set(`${p}.self_attn.v_proj.weight`, [kv, hidden]);
    shapes.set(`${p}.self_attn.o_proj.weight`, [hidden, q]);
    if (config.attention_bias) {
      shapes.set(`${p}.self_attn.q_proj.bias`, [q]);
      shapes.set(`${p}.self_attn.k_proj.bias`, [kv]);
      shapes.set(`${p}.self_attn.v_proj.bias`, [kv]);
    }
    shapes.set(`${p}.post_attention_layernorm.weight`, [hidden]);
    shapes.set(`${p}.mlp.gate_proj.weight`, [mlp, hidden]);
    shapes.set(`${p}.mlp.up_proj.weight`, [mlp, hidden]);
    shapes.set(`${p}.mlp.down_proj.weight`, [hidden, mlp]);
  }
  shapes.set("model.norm.weight", [hidden]);
  if (!config.tie_word_embeddings) shapes.set("lm_head.weight", [n("vocab_size"), hidden]);
  return shapes;
}

const TINY_LLAMA: Config = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_size: 16,
  intermediate_size: 24,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  num_hidden_layers: 2,
  vocab_size: 32,
  rms_norm_eps: 1e-5,
  rope_theta: 500000,
  tie_word_embeddings: false,
};

// Qwen-2 writes no attention_bias key; the test's shape table reads it, so it is set here.
const TINY_QWEN: Config = {
  ...TINY_LLAMA,
  architectures: ["Qwen2ForCausalLM"],
  model_type: "qwen2",
  attention_bias: true,
  num_hidden_layers: 4,
  tie_word_embeddings: true,
};

/**
 * Deterministic values that differ between neighbouring tensors (so a mix-up shows) and have at
 * most 7 significant bits (so bf16 and f16 store them exactly).
 */
function tensorsOf(config: Config, dtype: ReadableDtype): TensorToWrite[] {
  return [...llamaShapes(config)].map(([name, shape], t) => ({
    name,
    dtype,
    shape,
    data: Array.from({ length: shape.reduce((a, d) => a * d, 1) }, (_, i) => t % 16 + (i % 8) / 8),
  }));
}

/** Writes a checkpoint directory; with `shards`, splits the tensors into that many files. */
async function writeCheckpoint(
  dir: string,
  config: Config,
  dtype: ReadableDtype,
  shards = 1,
): Promise<TensorToWrite[]> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config, null, 2));
  const tensors = tensorsOf(config, dtype);
  if (shards === 1) {
    await writeSafetensors(`${dir}/model.safetensors`, tensors, { format: "pt" });
    return tensors;
  }
  const weightMap: Record<string, string> = {};
  const per = Math.ceil(tensors.length / shards);
  for (let s = 0; s < shards; s++) {
    const file = `model-${String(s + 1).padStart(5, "0")}-of-${String(shards).padStart(5, "0")}` +
      ".safetensors";
    const part = tensors.slice(s * per, (s + 1) * per);
    await writeSafetensors(`${dir}/${file}`, part, { format: "pt" });
    for (const t of part) weightMap[t.name] = file;
  }
  await Deno.writeTextFile(
    `${dir}/model.safetensors.index.json`,
    JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }),
  );
  return tensors;
}

async function withTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "checkpoint_test_" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Asserts that `promise` rejects with a CheckpointError whose message contains every part. */
async function assertFails(promise: Promise<unknown>, parts: string[]): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(e instanceof CheckpointError, `expected a CheckpointError, got ${e}`);
    for (const part of parts) assert.ok(e.message.includes(part), `lacks "${part}": ${e.message}`);
    return true;
  });
}

function assertThrows(body: () => unknown, parts: string[]): void {
  assert.throws(body, (e: unknown) => {
    assert.ok(e instanceof CheckpointError, `expected a CheckpointError, got ${e}`);
    for (const part of parts) assert.ok(e.message.includes(part), `lacks "${part}": ${e.message}`);
    return true;
  });
}

Deno.test("tiny Llama, f32, one file: config, names, shapes and values", async () => {
  await withTempDir(async (dir) => {
    const written = await writeCheckpoint(dir, TINY_LLAMA, "F32");
    const ckpt = await openCheckpoint(dir);
    try {
      assert.deepEqual(ckpt.config, TINY_LLAMA);
      assert.deepEqual(ckpt.names().toSorted(), [...llamaShapes(TINY_LLAMA).keys()].toSorted());
      for (const [name, shape] of llamaShapes(TINY_LLAMA)) {
        assert.deepEqual(ckpt.expect(name, shape), {
          dtype: "F32",
          shape,
          file: "model.safetensors",
          path: `${dir}/model.safetensors`,
        });
      }
      for (const t of written) {
        assert.deepEqual([...await ckpt.read(t.name, { as: "f32" })], t.data);
      }
      const rows = await ckpt.read("model.embed_tokens.weight", { as: "f16", rows: [3, 2] });
      assert.deepEqual([...rows], written[0].data.slice(3 * 16, 5 * 16));
    } finally {
      ckpt.close();
    }
  });
});

Deno.test("tiny Qwen-style, bf16 with q/k/v biases, sharded: read through the index", async () => {
  await withTempDir(async (dir) => {
    const written = await writeCheckpoint(dir, TINY_QWEN, "BF16", 3);
    const ckpt = await openCheckpoint(dir);
    try {
      const shapes = llamaShapes(TINY_QWEN);
      assert.ok(shapes.has("model.layers.3.self_attn.k_proj.bias"));
      assert.ok(!shapes.has("lm_head.weight"));
      assert.deepEqual(ckpt.names().toSorted(), [...shapes.keys()].toSorted());
      for (const [name, shape] of shapes) assert.equal(ckpt.expect(name, shape).dtype, "BF16");
      const files = new Set(ckpt.names().map((n) => ckpt.info(n).file));
      assert.equal(files.size, 3);
      for (const t of written) {
        assert.deepEqual([...await ckpt.read(t.name, { as: "f32" })], t.data);
      }
    } finally {
      ckpt.close();
    }
  });
});

Deno.test("expect: a shape mismatch names tensor, shard and both shapes", async () => {
  await withTempDir(async (dir) => {
    await writeCheckpoint(dir, TINY_QWEN, "BF16", 2);
    const ckpt = await openCheckpoint(dir);
    try {
      const name = "model.layers.3.self_attn.q_proj.weight";
      assert.equal(ckpt.info(name).file, "model-00002-of-00002.safetensors");
      assertThrows(() => ckpt.expect(name, [64, 16]), [
        `${name} in shard model-00002-of-00002.safetensors has shape [16, 16]; ` +
        `the model config expects [64, 16]`,
      ]);
      assertThrows(
        () => ckpt.expect("model.layers.7.self_attn.q_proj.weight", [16, 16]),
        [dir, "model.layers.7.self_attn.q_proj.weight", "[16, 16]", "model.layers.0.self_attn"],
      );
      assertThrows(() => ckpt.info("transformer.wte.weight"), [dir, "transformer.wte.weight"]);
    } finally {
      ckpt.close();
    }
  });
});

Deno.test("missing directory, config or weights: the path and the expected files", async () => {
  await withTempDir(async (dir) => {
    await assertFails(openCheckpoint(`${dir}/nope`), [
      `${dir}/nope`,
      "does not exist",
      "config.json",
    ]);
    await Deno.writeTextFile(`${dir}/file`, "");
    await assertFails(openCheckpoint(`${dir}/file`), [`${dir}/file`, "not a checkpoint directory"]);
    await Deno.mkdir(`${dir}/empty`);
    await assertFails(openCheckpoint(`${dir}/empty`), [
      `${dir}/empty has no config.json`,
      "model.safetensors",
      "model.safetensors.index.json",
    ]);
    await Deno.writeTextFile(`${dir}/empty/config.json`, "{ not json");
    await assertFails(openCheckpoint(`${dir}/empty`), [
      `${dir}/empty/config.json`,
      "not valid JSON",
    ]);
    await Deno.writeTextFile(`${dir}/empty/config.json`, "[]");
    await assertFails(openCheckpoint(`${dir}/empty`), [
      `${dir}/empty/config.json`,
      "not an object",
    ]);
    await Deno.writeTextFile(`${dir}/empty/config.json`, "{}");
    await Deno.writeTextFile(`${dir}/empty/pytorch_model.bin`, "");
    await assertFails(openCheckpoint(`${dir}/empty`), [
      `${dir}/empty has config.json but neither model.safetensors nor`,
      "pytorch_model.bin",
      "safe_serialization=True",
    ]);
  });
});

Deno.test("damaged shard indexes and shards name the index, the shard and the tensor", async () => {
  await withTempDir(async (dir) => {
    await writeCheckpoint(dir, TINY_LLAMA, "F32", 2);
    const index = `${dir}/model.safetensors.index.json`;
    const good = JSON.parse(await Deno.readTextFile(index));
    const shard2 = "model-00002-of-00002.safetensors";
    const cases: [unknown, string[]][] = [
      [{ metadata: {} }, [index, `"weight_map"`]],
      [{ weight_map: { a: 1 } }, [index, `"weight_map"`]],
      [{ weight_map: { ...good.weight_map, "model.norm.weight": "../model.safetensors" } }, [
        index,
        `"../model.safetensors"`,
        "not a plain file name",
      ]],
      [{ weight_map: { ...good.weight_map, "model.norm.weight": "model-00003.safetensors" } }, [
        index,
        "model.norm.weight",
        "model-00003.safetensors",
        "missing",
      ]],
      [{
        weight_map: { ...good.weight_map, "model.norm.weight": "model-00001-of-00002.safetensors" },
      }, [
        index,
        "model.norm.weight",
        "model-00001-of-00002.safetensors",
        "does not hold it",
      ]],
    ];
    for (const [content, parts] of cases) {
      await Deno.writeTextFile(index, JSON.stringify(content));
      await assertFails(openCheckpoint(dir), parts);
    }
    await Deno.writeTextFile(index, "{");
    await assertFails(openCheckpoint(dir), [index, "not valid JSON"]);
    await Deno.writeTextFile(index, JSON.stringify(good));
    const bytes = await Deno.readFile(`${dir}/${shard2}`);
    await Deno.writeFile(`${dir}/${shard2}`, bytes.subarray(0, bytes.length - 3));
    await assertFails(openCheckpoint(dir), [`${dir}/${shard2} is truncated`, "lm_head.weight"]);
  });
});

// ---- retaining heads ----

const HEAD_MODEL: RetainingHeadShapes = { layers: 2, heads: 4, kvHeads: 2, headDim: 4 };
const HEAD_HIDDEN = 8;

function headTensors(shapes = HEAD_MODEL, layers = shapes.layers): TensorToWrite[] {
  const input = (shapes.heads + 2 * shapes.kvHeads) * shapes.headDim;
  return Array.from({ length: layers }, (_, l) => [
    {
      name: `model.layers.${l}.self_attn.fc1.weight`,
      dtype: "BF16" as const,
      shape: [HEAD_HIDDEN, input],
      data: new Array(HEAD_HIDDEN * input).fill(l + 1),
    },
    {
      name: `model.layers.${l}.self_attn.fc2.weight`,
      dtype: "BF16" as const,
      shape: [shapes.kvHeads, HEAD_HIDDEN],
      data: new Array(shapes.kvHeads * HEAD_HIDDEN).fill(-(l + 1)),
    },
  ]).flat();
}

Deno.test("retaining heads: own directory, single file, merged into the model, any file name", async () => {
  await withTempDir(async (dir) => {
    await Deno.mkdir(`${dir}/locret`);
    await writeSafetensors(`${dir}/locret/model.safetensors`, headTensors());
    await Deno.mkdir(`${dir}/named`);
    await writeSafetensors(`${dir}/named/heads.safetensors`, headTensors());
    await writeCheckpoint(`${dir}/merged`, TINY_LLAMA, "F32");
    await writeSafetensors(`${dir}/merged/model.safetensors`, [
      ...tensorsOf(TINY_LLAMA, "F32"),
      ...headTensors(),
    ]);
    for (
      const where of [
        `${dir}/locret`,
        `${dir}/locret/model.safetensors`,
        `${dir}/named`,
        `${dir}/merged`,
      ]
    ) {
      const heads = await openRetainingHeads(where);
      try {
        assert.deepEqual(heads.layers, [0, 1]);
        assert.ok(heads.names().every((n) => n.includes("fc")), where);
        assert.equal(heads.expectFor(HEAD_MODEL), HEAD_HIDDEN);
        assert.equal(heads.fc2(1), "model.layers.1.self_attn.fc2.weight");
        assert.deepEqual(
          [...await heads.read(heads.fc2(1), { as: "f32" })],
          new Array(16).fill(-2),
        );
      } finally {
        heads.close();
      }
    }
  });
});

Deno.test("retaining heads: wrong model, missing halves and layers, no heads at all", async () => {
  await withTempDir(async (dir) => {
    await assertFails(openRetainingHeads(`${dir}/absent`), [`${dir}/absent`, "does not exist"]);
    await Deno.mkdir(`${dir}/none`);
    await assertFails(openRetainingHeads(`${dir}/none`), [`${dir}/none`, "no .safetensors"]);
    await writeCheckpoint(`${dir}/model`, TINY_LLAMA, "F32");
    await assertFails(openRetainingHeads(`${dir}/model`), [`${dir}/model`, "no retaining-head"]);
    const half = headTensors().filter((t) => t.name !== "model.layers.1.self_attn.fc2.weight");
    await writeSafetensors(`${dir}/half.safetensors`, half);
    await assertFails(openRetainingHeads(`${dir}/half.safetensors`), [
      `${dir}/half.safetensors`,
      "model.layers.1.self_attn.fc2.weight",
    ]);
    await writeSafetensors(`${dir}/heads.safetensors`, headTensors(HEAD_MODEL, 3));
    const heads = await openRetainingHeads(`${dir}/heads.safetensors`);
    try {
      assertThrows(() => heads.expectFor(HEAD_MODEL), ["layer 2", "2 layers"]);
      assertThrows(() => heads.expectFor({ ...HEAD_MODEL, layers: 4 }), [
        "model.layers.3.self_attn.fc1.weight",
      ]);
      assertThrows(() => heads.expectFor({ ...HEAD_MODEL, layers: 3, kvHeads: 1 }), [
        "model.layers.0.self_attn.fc1.weight in heads.safetensors has shape [8, 32]; " +
        "the model config expects [8, 24]",
      ]);
    } finally {
      heads.close();
    }
  });
});

// ---- the real fixture ----

Deno.test("fixture retrieval-llama-4l: every tensor matches its config and is finite", async () => {
  const ckpt = await openCheckpoint(FIXTURE);
  try {
    const shapes = llamaShapes(ckpt.config);
    assert.equal(shapes.size, 4 * 9 + 3);
    assert.deepEqual(ckpt.names().toSorted(), [...shapes.keys()].toSorted());
    for (const [name, shape] of shapes) {
      assert.equal(ckpt.expect(name, shape).dtype, "F32");
      assert.equal((await ckpt.scanNonFinite(name)).count, 0, name);
    }
    const parameters = [...shapes.values()].reduce((a, s) => a + s.reduce((x, d) => x * d, 1), 0);
    assert.equal(parameters, 3_279_104); // as its README states
    const embed = await ckpt.read("model.embed_tokens.weight", { as: "f32", rows: [1, 1] });
    assert.equal(embed.length, 256);
    assert.ok(embed.some((x) => x !== 0));
  } finally {
    ckpt.close();
  }
});
