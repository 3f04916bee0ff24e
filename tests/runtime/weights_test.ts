// Real weights through the whole pipeline: tiny checkpoints written here (Llama in f32, Qwen-2 with
// q/k/v biases in bf16 and tied embeddings, a sharded one with an index) are compiled with lower(),
// loaded by checkpointWeights and run on the GPU and the float64 CPU executor; prefill and decode
// logits must match an independent float64 forward written from the Hugging Face equations. Then the
// errors a bad checkpoint gives, f16 storage, APB retaining heads loaded or seeded, and a weight too
// large for one binding.

import { assert } from "../../compiler/_deps.ts";
import { maxRelativeError } from "../../compiler/cli/compare.ts";
import { llamaFromHuggingFace } from "../../compiler/models/llama.ts";
import { lower, type LowerOptions } from "../../compiler/lower.ts";
import type { Plan } from "../../compiler/plan.ts";
import { apb } from "../../compiler/strategies/apb.ts";
import { dense } from "../../compiler/strategies/dense.ts";
import type { Strategy } from "../../compiler/strategies/strategy.ts";
import { CheckpointError, openCheckpoint, openRetainingHeads } from "../../runtime/checkpoint.ts";
import type { RunResult } from "../../runtime/executor.ts";
import { checkLimits, memoryByHost } from "../../runtime/memory.ts";
import { Session } from "../../runtime/session.ts";
import { writeSafetensors } from "../../runtime/safetensors.ts";
import { checkpointWeights, type CheckpointWeightSource } from "../../runtime/weights.ts";
import type { StorageType } from "../../wgsl/kernel.ts";
import { gpuHas, testGpu } from "../_gpu.ts";
import { llamaForward } from "../reference/llama_f64.ts";
import { type TinyCheckpoint, uniform, writeTinyCheckpoint } from "../reference/tiny_checkpoint.ts";

type Json = Record<string, unknown>;

/** Llama with GQA, Llama-3.1 rope scaling (short original context so all three bands occur). */
const TINY_LLAMA: Json = {
  model_type: "llama",
  vocab_size: 96,
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  rope_scaling: {
    rope_type: "llama3",
    factor: 8,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 32,
  },
  tie_word_embeddings: false,
};

/** Qwen-2: q/k/v biases, tied embeddings, explicit head_dim, transformers-5 rope layout. */
const TINY_QWEN: Json = {
  model_type: "qwen2",
  vocab_size: 80,
  hidden_size: 32,
  intermediate_size: 40,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 1,
  head_dim: 8,
  rms_norm_eps: 1e-6,
  rope_parameters: { rope_type: "default", rope_theta: 1000000 },
  tie_word_embeddings: true,
};

/** Yi-like: plain Llama layout, no GQA scaling tricks, stored in three shards. */
const TINY_SHARDED: Json = { ...TINY_LLAMA, rope_scaling: null, rope_theta: 5000000 };

const CONTEXT = 12;
const DECODE = 3;

/** Token ids for a test, the same for every backend. */
function tokens(count: number, vocab: number, seed: number): number[] {
  const next = uniform(seed);
  return Array.from({ length: count }, () => Math.floor(((next() + 1) / 2) * vocab));
}

async function withCheckpoint(
  config: Json,
  options: Parameters<typeof writeTinyCheckpoint>[1],
  body: (ck: TinyCheckpoint) => Promise<void>,
): Promise<void> {
  const ck = await writeTinyCheckpoint(config, options);
  try {
    await body(ck);
  } finally {
    await Deno.remove(ck.dir, { recursive: true });
  }
}

function planFor(config: Json, storage: StorageType, strategy: Strategy = dense()): Plan {
  const options: LowerOptions = {
    contextTokens: CONTEXT,
    maxNewTokens: DECODE,
    prefillLogits: "all",
    weights: storage,
  };
  return lower(llamaFromHuggingFace(config), strategy, options);
}

/** Every row of a run's logits, host after host, in row order. */
function rows(run: RunResult): Float64Array {
  return Float64Array.from(run.logits.flatMap((out) => [...out.logits!]));
}

/**
 * Runs prefill and DECODE single-token extends of `plan` on `backend` and returns the max relative
 * error of all their logits against the float64 reference of the checkpoint.
 */
async function errorAgainstReference(
  ck: TinyCheckpoint,
  plan: Plan,
  weights: CheckpointWeightSource,
  backend: "gpu" | "cpu",
): Promise<number> {
  const vocab = plan.model.config.vocabSize;
  const ids = tokens(CONTEXT + DECODE, vocab, 7);
  const want = llamaForward(ck.config, (n) => ck.tensors.get(n)!, ids);
  const gpu = backend === "gpu" ? (await testGpu())! : undefined;
  const session = await Session.open(plan, { backend, gpu, weights });
  try {
    const got = new Float64Array(want.length);
    got.set(rows(await session.prefill(ids.slice(0, CONTEXT), [], { readLogits: true })));
    for (let k = 0; k < DECODE; k++) {
      const run = await session.extend([ids[CONTEXT + k]], { readLogits: true });
      got.set(rows(run), (CONTEXT + k) * vocab);
    }
    return maxRelativeError(got, want);
  } finally {
    session.destroy();
  }
}

/** Checks both executors against the reference (the GPU only where there is an adapter). */
async function checkModel(ck: TinyCheckpoint, storage: StorageType, tolerance: number) {
  const checkpoint = await openCheckpoint(ck.dir);
  try {
    const plan = planFor(checkpoint.config, storage);
    const weights = checkpointWeights(checkpoint);
    assert.deepEqual(weights.check(plan.weights).unused, []);
    const cpu = await errorAgainstReference(ck, plan, weights, "cpu");
    assert.ok(cpu <= tolerance, `CPU executor: max relative error ${cpu} > ${tolerance}`);
    if (!(await testGpu())) return;
    if (storage === "f16" && !(await gpuHas("shader-f16"))) {
      console.warn("SKIP f16 storage on the GPU: the adapter has no shader-f16");
      return;
    }
    const gpu = await errorAgainstReference(ck, plan, weights, "gpu");
    assert.ok(gpu <= tolerance, `GPU: max relative error ${gpu} > ${tolerance}`);
  } finally {
    checkpoint.close();
  }
}

Deno.test("tiny Llama, f32 file: GPU and CPU executors match the f64 reference", async () => {
  await withCheckpoint(TINY_LLAMA, {}, (ck) => checkModel(ck, "f32", 1e-4));
});

Deno.test("tiny Qwen-2, bf16 file with q/k/v biases and tied embeddings: match", async () => {
  await withCheckpoint(TINY_QWEN, { dtype: "BF16", seed: 2 }, (ck) => checkModel(ck, "f32", 1e-4));
});

Deno.test("sharded checkpoint with an index: match", async () => {
  await withCheckpoint(TINY_SHARDED, { shards: 3, seed: 3 }, async (ck) => {
    const files = [...Deno.readDirSync(ck.dir)].map((e) => e.name).sort();
    assert.deepEqual(files, [
      "config.json",
      "model-00001-of-00003.safetensors",
      "model-00002-of-00003.safetensors",
      "model-00003-of-00003.safetensors",
      "model.safetensors.index.json",
    ]);
    await checkModel(ck, "f32", 1e-4);
  });
});

Deno.test("f16 storage: half the weight bytes, values rounded to f16, logits close", async () => {
  await withCheckpoint(TINY_LLAMA, { seed: 4 }, async (ck) => {
    const [f32, f16] = [planFor(TINY_LLAMA, "f32"), planFor(TINY_LLAMA, "f16")];
    assert.equal(memoryByHost(f16).weights * 2, memoryByHost(f32).weights);
    const checkpoint = await openCheckpoint(ck.dir);
    try {
      const w = f16.weights.find((w) => w.name === "model.layers.1.mlp.up_proj.weight")!;
      const bytes = (await checkpointWeights(checkpoint).load!(w, "f16"))!;
      const want = new Float16Array(Float32Array.from(ck.tensors.get(w.name)!));
      assert.deepEqual(new Float16Array(bytes.buffer), want);
    } finally {
      checkpoint.close();
    }
    // f16 weights carry about 3 decimal digits and the reference keeps the f32 values: the
    // measured error is 4e-4 on both executors.
    await checkModel(ck, "f16", 2e-3);
  });
});

/** Opens `ck`, builds a dense plan of its config and returns what checking its weights throws. */
async function checkError(ck: TinyCheckpoint, storage: StorageType = "f32"): Promise<Error> {
  const checkpoint = await openCheckpoint(ck.dir);
  try {
    const plan = planFor(TINY_LLAMA, storage);
    const weights = checkpointWeights(checkpoint);
    const viaCheck = (() => {
      try {
        weights.check(plan.weights);
      } catch (e) {
        return e as Error;
      }
    })();
    // Loading must fail the same way (a NaN is only seen there: check() reads headers only).
    const viaLoad = await Session.open(plan, { backend: "cpu", weights }).then(
      () => assert.fail("loading should have failed"),
      (e) => e as Error,
    );
    if (viaCheck) assert.equal(viaCheck.message, viaLoad.message);
    assert.ok(viaLoad instanceof CheckpointError, String(viaLoad));
    return viaLoad;
  } finally {
    checkpoint.close();
  }
}

Deno.test("a missing tensor names itself and the files searched", async () => {
  const edit = (ts: { name: string }[]) => {
    ts.splice(ts.findIndex((t) => t.name === "model.layers.1.mlp.up_proj.weight"), 1);
  };
  await withCheckpoint(TINY_LLAMA, { edit, shards: 2 }, async (ck) => {
    const e = await checkError(ck);
    assert.match(e.message, /model\.layers\.1\.mlp\.up_proj\.weight is missing/);
    assert.match(e.message, /model-00001-of-00002\.safetensors, model-00002-of-00002\.safetensors/);
    assert.match(e.message, /\[48, 32\]/);
  });
});

Deno.test("a tensor of the wrong shape names itself, its file and both shapes", async () => {
  const edit = (ts: { name: string; shape: number[] }[]) => {
    ts.find((t) => t.name === "model.layers.0.self_attn.k_proj.weight")!.shape = [32, 16];
  };
  await withCheckpoint(TINY_LLAMA, { edit }, async (ck) => {
    const e = await checkError(ck);
    assert.match(e.message, /model\.layers\.0\.self_attn\.k_proj\.weight in model\.safetensors/);
    assert.match(e.message, /has shape \[32, 16\]; the model config expects \[16, 32\]/);
  });
});

Deno.test("NaN or Inf in a weight: the tensor and the count, also beyond f16's range", async () => {
  const plant = (values: number[]) => (ts: { name: string; data: Float32Array | number[] }[]) => {
    const t = ts.find((t) => t.name === "model.layers.1.self_attn.o_proj.weight")!;
    values.forEach((v, i) => t.data[5 + 7 * i] = v);
  };
  await withCheckpoint(TINY_LLAMA, { edit: plant([NaN, Infinity]) }, async (ck) => {
    const e = await checkError(ck);
    assert.match(e.message, /"model\.layers\.1\.self_attn\.o_proj\.weight"/);
    assert.match(e.message, /has 2 non-finite values \(NaN or ±Inf; the first at element 5\)/);
  });
  await withCheckpoint(TINY_LLAMA, { edit: plant([1e6]) }, async (ck) => {
    const e = await checkError(ck, "f16");
    assert.match(e.message, /read as f16 has 1 non-finite/);
    assert.match(e.message, /beyond f16's range/);
  });
});

Deno.test("tensors the model does not use are reported (biases of a model built without)", async () => {
  await withCheckpoint(TINY_QWEN, {}, async (ck) => {
    const checkpoint = await openCheckpoint(ck.dir);
    try {
      const plan = planFor({ ...TINY_QWEN, model_type: "llama" }, "f32");
      const { unused } = checkpointWeights(checkpoint).check(plan.weights);
      assert.equal(unused.length, 6);
      assert.ok(unused.every((n) => n.endsWith("_proj.bias")), unused.join(", "));
    } finally {
      checkpoint.close();
    }
  });
});

const HEAD_HIDDEN = 8;
const APB_CONTEXT = CONTEXT;

/** Retaining heads for TINY_LLAMA: fc1 [8, (4+2·2)·8], fc2 [2, 8] per layer, seeded. */
async function writeHeads(path: string, hidden = HEAD_HIDDEN): Promise<Map<string, Float32Array>> {
  const next = uniform(9);
  const values = new Map<string, Float32Array>();
  const tensors = [0, 1].flatMap((l) => {
    const p = `model.layers.${l}.self_attn`;
    return ([["fc1", [hidden, 64]], ["fc2", [2, hidden]]] as const).map(([fc, shape]) => {
      const data = Float32Array.from({ length: shape[0] * shape[1] }, () => next() / 4);
      values.set(`${p}.${fc}.weight`, data);
      return { name: `${p}.${fc}.weight`, dtype: "F32" as const, shape: [...shape], data };
    });
  });
  await writeSafetensors(path, tensors);
  return values;
}

Deno.test("APB retaining heads: from their own file, or seeded with one note", async () => {
  await withCheckpoint(TINY_LLAMA, { seed: 5 }, async (ck) => {
    const strategy = apb({ anchor: 2, passing: 2, retainingHidden: HEAD_HIDDEN });
    const options: LowerOptions = { hosts: 2, contextTokens: APB_CONTEXT, prefillLogits: "all" };
    const plan = lower(llamaFromHuggingFace(TINY_LLAMA), strategy, options);
    const retaining = plan.weights.filter((w) => w.source === "retaining");
    assert.equal(retaining.length, 4);
    const ids = tokens(APB_CONTEXT, 96, 11);
    const checkpoint = await openCheckpoint(ck.dir);
    const notes: string[] = [];
    try {
      // Without heads: seeded, one note however many weights and executors ask.
      const seeded = checkpointWeights(checkpoint, { warn: (m) => notes.push(m) });
      assert.deepEqual(seeded.check(plan.weights).unused, []);
      for (const w of retaining) assert.equal(await seeded.load!(w, "f32"), null);
      await (await Session.open(plan, { backend: "cpu", weights: seeded })).prefill(ids);
      assert.equal(notes.length, 1);
      assert.match(notes[0], /no retaining heads were given/);

      // With heads in a file of their own: loaded exactly, used the same way on both executors.
      const path = `${ck.dir}/heads.safetensors`;
      const values = await writeHeads(path);
      const heads = await openRetainingHeads(path);
      try {
        const weights = checkpointWeights(checkpoint, { retainingHeads: heads });
        weights.check(plan.weights);
        for (const w of retaining) {
          const bytes = (await weights.load!(w, "f32"))!;
          assert.deepEqual(new Float32Array(bytes.buffer), values.get(w.name));
        }
        const cpu = await Session.open(plan, { backend: "cpu", weights });
        const want = rows(await cpu.prefill(ids, [], { readLogits: true }));
        const gpu = await testGpu();
        if (gpu) {
          const session = await Session.open(plan, { gpu, weights });
          const got = await session.prefill(ids, [], { readLogits: true });
          session.destroy();
          const err = maxRelativeError(rows(got), want);
          assert.ok(err <= 1e-4, `APB with loaded heads: GPU against CPU ${err}`);
        }
      } finally {
        heads.close();
      }
      assert.equal(notes.length, 1);

      // Heads of another width than the plan's: named with both shapes.
      await writeHeads(path, 16);
      const wrong = await openRetainingHeads(path);
      try {
        assert.throws(
          () => checkpointWeights(checkpoint, { retainingHeads: wrong }).check(plan.weights),
          {
            name: "CheckpointError",
            message: /has shape \[16, 64\]; the model config expects \[8, 64\]/,
          },
        );
      } finally {
        wrong.close();
      }
    } finally {
      checkpoint.close();
    }
  });
});

Deno.test("a weight larger than one binding fails before allocation, naming the weight", () => {
  // The embedding (96 × 32) is the largest buffer: 12 KiB in f32, 6 KiB in f16.
  const limits = (bytes: number) =>
    ({ maxStorageBufferBindingSize: bytes, maxBufferSize: 2 ** 30 }) as GPUSupportedLimits;
  assert.throws(() => checkLimits(planFor(TINY_LLAMA, "f32"), limits(8192)), {
    name: "OutOfMemoryError",
    message: "weight model.embed_tokens.weight needs 12.0 KiB but one binding on this device " +
      "holds at most 8.0 KiB; store weights as f16 (--storage f16)",
  });
  assert.throws(() => checkLimits(planFor(TINY_LLAMA, "f16"), limits(4096)), {
    name: "OutOfMemoryError",
    message: "weight model.embed_tokens.weight needs 6.0 KiB but one binding on this device " +
      "holds at most 4.0 KiB; splitting one weight over several bindings is not supported yet",
  });
});
