// `deno task run --weights`: a checkpoint written here whose model continues any byte with the next
// byte (its residual stream is dominated by the token's embedding, and the LM head maps each
// embedding to its successor's row) and ends after "@", with a byte-level tokenizer and a chat
// template. Text goes in through the template, text comes out and stops at end-of-sequence, --check
// passes on the same weights, APB reads retaining heads from their own file; the real fixture runs
// from its config.json alone with f16 storage halving the weight bytes; and the errors a user can
// cause exit 2 with one line.

import { assert } from "../../../compiler/_deps.ts";
import { writeSafetensors } from "../../../runtime/safetensors.ts";
import { gpuHas, testGpu } from "../../_gpu.ts";
import { uniform, writeTinyCheckpoint } from "../../reference/tiny_checkpoint.ts";

const ROOT = new URL("../../../", import.meta.url).pathname;
const FIXTURE = `${ROOT}tests/fixtures/retrieval-llama-4l`;

const BYTES = 256;
const BOS = 256;
const EOS = 257;
/** Two rows more than the tokenizer knows, as real checkpoints pad their embeddings. */
const VOCAB = 260;
const HIDDEN = 64;
const LAYERS = 2;

const CONFIG = {
  model_type: "llama",
  vocab_size: VOCAB,
  hidden_size: HIDDEN,
  intermediate_size: 96,
  num_hidden_layers: LAYERS,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: false,
  bos_token_id: BOS,
  eos_token_id: EOS,
};

/** The token each token is followed by: the next byte, except "@" which ends the text. */
function successor(token: number): number {
  if (token === "@".charCodeAt(0)) return EOS;
  return token < BYTES - 1 ? token + 1 : 0;
}

/** GPT-2's byte-to-character table that byte-level BPE vocabularies are written in. */
function byteChars(): string[] {
  const printable = (b: number) =>
    (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let next = 256;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : next++));
}

/** A byte-level tokenizer without merges: one token a byte, then <|bos|> and <|eos|>. */
function tokenizerJson() {
  const special = (id: number, content: string) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  return {
    version: "1.0",
    added_tokens: [special(BOS, "<|bos|>"), special(EOS, "<|eos|>")],
    normalizer: null,
    pre_tokenizer: {
      type: "ByteLevel",
      add_prefix_space: false,
      trim_offsets: true,
      use_regex: true,
    },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      vocab: Object.fromEntries(byteChars().map((c, i) => [c, i])),
      merges: [],
    },
  };
}

/** The prompt as one user turn in <…>, then "=" as the assistant's turn opens. */
const TEMPLATE = "{{ bos_token }}<{{ messages[0]['content'] }}>" +
  "{% if add_generation_prompt %}={% endif %}";

/**
 * Writes the successor checkpoint: random embeddings, layers whose outputs are scaled down so the
 * residual stays near the embedding, and an LM head whose row for token s is the sum of the
 * embeddings of the tokens s follows.
 */
async function successorCheckpoint(): Promise<string> {
  const { dir } = await writeTinyCheckpoint(CONFIG, {
    edit(tensors) {
      const get = (name: string) => tensors.find((t) => t.name === name)!.data as Float32Array;
      const next = uniform(3);
      const embed = get("model.embed_tokens.weight");
      for (let i = 0; i < embed.length; i++) embed[i] = next() * Math.sqrt(3);
      const head = get("lm_head.weight").fill(0);
      for (let t = 0; t < VOCAB; t++) {
        const s = successor(t);
        for (let i = 0; i < HIDDEN; i++) head[s * HIDDEN + i] += embed[t * HIDDEN + i];
      }
      for (let l = 0; l < LAYERS; l++) {
        for (const name of ["self_attn.o_proj", "mlp.down_proj"]) {
          const w = get(`model.layers.${l}.${name}.weight`);
          for (let i = 0; i < w.length; i++) w[i] *= 0.02;
        }
      }
    },
  });
  await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(tokenizerJson()));
  await Deno.writeTextFile(
    `${dir}/tokenizer_config.json`,
    JSON.stringify({ bos_token: "<|bos|>", eos_token: "<|eos|>", chat_template: TEMPLATE }),
  );
  return dir;
}

/** Runs `deno task run` with `args` from the repository root. */
async function run(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const command = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "compiler/cli/main.ts", "run", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  });
  const { code, stdout, stderr } = await command.output();
  const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code, stdout: text(stdout), stderr: text(stderr) };
}

/** Stderr without the lines the software adapters print on machines without a session bus. */
function errors(stderr: string): string {
  return stderr.split("\n").filter((l) => l && !l.includes("XDG_RUNTIME_DIR")).join("\n");
}

async function withCheckpoint(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await successorCheckpoint();
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("--weights --prompt-file: text in through the chat template, text out, --check", async () => {
  if (!(await testGpu())) return;
  await withCheckpoint(async (dir) => {
    await Deno.writeTextFile(`${dir}/prompt.txt`, "abc");
    const r = await run("--weights", dir, "--prompt-file", `${dir}/prompt.txt`, "--check");
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(errors(r.stderr), "");
    // <|bos|> < a b c > =
    assert.match(r.stdout, /prompt {3}.*prompt\.txt: 7 tokens in the chat template/);
    assert.match(r.stdout, /tokens {3}7 context \+ 0 query, generating 8/);
    assert.match(r.stdout, /memory: weights [\d.]+ KiB \(f32\)/);
    assert.match(r.stdout, /generated ids: 62 63 64\n/);
    assert.match(r.stdout, /stopped at end-of-sequence id 257\n/);
    assert.match(r.stdout, /text:\n>\?@\n/);
    assert.match(r.stdout, /max relative error: .* OK/);
  });
});

Deno.test("APB with --query from the prompt and --retaining-heads from their own file", async () => {
  if (!(await testGpu())) return;
  await withCheckpoint(async (dir) => {
    await Deno.writeTextFile(`${dir}/prompt.txt`, "abcdefghijklmnop");
    const heads = `${dir}/heads.safetensors`;
    const next = uniform(4);
    const width = (4 + 2 * 2) * 16;
    await writeSafetensors(
      heads,
      [0, 1].flatMap((l) => [
        { name: `model.layers.${l}.self_attn.fc1.weight`, shape: [16, width] },
        { name: `model.layers.${l}.self_attn.fc2.weight`, shape: [2, 16] },
      ]).map((t) => ({
        ...t,
        dtype: "F32" as const,
        data: Float32Array.from({ length: t.shape[0] * t.shape[1] }, () => next() / 8),
      })),
    );
    const apb = ["--strategy", "apb", "--hosts", "2", "--query", "2", "--anchor", "4"];
    const args = ["--weights", dir, "--prompt-file", `${dir}/prompt.txt`, ...apb, "--check"];
    const loaded = await run(...args, "--retaining-heads", heads);
    assert.equal(loaded.code, 0, loaded.stdout + loaded.stderr);
    assert.equal(errors(loaded.stderr), "");
    assert.match(loaded.stdout, /retaining heads from .*heads\.safetensors/);
    assert.match(loaded.stdout, /tokens {3}18 context \+ 2 query/);
    assert.match(loaded.stdout, /text:\n>\?@\n/);
    assert.match(loaded.stdout, /max relative error: .* OK/);
    const seeded = await run(...args);
    assert.equal(seeded.code, 0, seeded.stdout + seeded.stderr);
    assert.match(errors(seeded.stderr), /^note: no retaining heads were given[^\n]*$/);
  });
});

Deno.test("--weights alone: the fixture's model from config.json; f16 halves weight bytes", async () => {
  if (!(await testGpu())) return;
  const base = ["--weights", FIXTURE, "--tokens", "32", "--generate", "2"];
  const f32 = await run(...base, "--check");
  assert.equal(f32.code, 0, f32.stdout + f32.stderr);
  assert.match(f32.stdout, /model {4}retrieval-llama-4l \(3\.28M parameters\)/);
  assert.match(f32.stdout, /memory: weights 12\.5 MiB \(f32\)/);
  assert.match(f32.stdout, /max relative error: .* OK/);
  if (!(await gpuHas("shader-f16"))) {
    console.warn("SKIP --storage f16 run: the adapter has no shader-f16");
    return;
  }
  const f16 = await run(...base, "--storage", "f16");
  assert.equal(f16.code, 0, f16.stdout + f16.stderr);
  assert.match(f16.stdout, /memory: weights 6\.3 MiB \(f16\)/);
});

Deno.test("mistakes exit 2 with one line: wrong model file, no tokenizer, prompt without weights", async () => {
  await withCheckpoint(async (dir) => {
    const wrong = await run("--weights", dir, "examples/tiny.ts");
    assert.equal(wrong.code, 2);
    assert.match(
      errors(wrong.stderr),
      /\nerror: model\.embed_tokens\.weight in model\.safetensors has shape \[260, 64\]; the model config expects \[256, 64\]/,
    );
    await Deno.writeTextFile(`${dir}/prompt.txt`, "abc");
    const noTokenizer = await run("--weights", FIXTURE, "--prompt-file", `${dir}/prompt.txt`);
    assert.equal(noTokenizer.code, 2);
    assert.match(errors(noTokenizer.stderr), /^error: .*retrieval-llama-4l has no tokenizer\.json/);
    const noWeights = await run("examples/tiny.ts", "--prompt-file", `${dir}/prompt.txt`);
    assert.equal(noWeights.code, 2);
    assert.equal(
      errors(noWeights.stderr),
      "error: --prompt-file needs --weights DIR: the tokenizer is read from the checkpoint directory",
    );
  });
});
