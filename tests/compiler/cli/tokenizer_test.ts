// Tokenizers built here in the two layouts the supported models use: byte-level BPE (Llama-3,
// Qwen-2.5) and sentencepiece-style BPE with Metaspace and byte fallback (Yi). Round trips, known
// merges, chat templates in their three homes, end-of-sequence ids, and the errors.

import fc from "fast-check";
import { assert } from "../../../compiler/_deps.ts";
import { loadTokenizer, TokenizerError } from "../../../compiler/cli/tokenizer.ts";

type Json = Record<string, unknown>;

// Llama-3's pre-tokenizer split; Qwen-2.5's differs only in taking digits one at a time.
const LLAMA3_SPLIT = String
  .raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;

/** GPT-2's byte-to-character table that byte-level BPE vocabularies are written in. */
function byteChars(): string[] {
  const printable = (b: number) =>
    (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let next = 256;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : next++));
}

/** A vocabulary from base tokens plus the results of `merges`, in order. */
function vocabOf(base: string[], merges: [string, string][]): Record<string, number> {
  const tokens = [...base, ...merges.map(([a, b]) => a + b)];
  return Object.fromEntries(tokens.map((t, i) => [t, i]));
}

function addedTokens(first: number, contents: string[]) {
  return contents.map((content, i) => ({
    id: first + i,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
}

/** TemplateProcessing that puts `bos` (token and id) before the text, as Llama-3's does. */
function bosProcessor(bos: string, id: number) {
  return {
    type: "TemplateProcessing",
    single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
    pair: [
      { SpecialToken: { id: bos, type_id: 0 } },
      { Sequence: { id: "A", type_id: 0 } },
      { SpecialToken: { id: bos, type_id: 1 } },
      { Sequence: { id: "B", type_id: 1 } },
    ],
    special_tokens: { [bos]: { id: bos, ids: [id], tokens: [bos] } },
  };
}

const BYTE_MERGES: [string, string][] = [
  ["h", "e"],
  ["l", "l"],
  ["he", "ll"],
  ["hell", "o"],
  ["Ġ", "t"],
  ["Ġt", "he"],
];
const LLAMA3_SPECIALS = [
  "<|begin_of_text|>",
  "<|end_of_text|>",
  "<|start_header_id|>",
  "<|end_header_id|>",
  "<|eot_id|>",
];

const BYTE_VOCAB = vocabOf(byteChars(), BYTE_MERGES);
/** Id of the first added token: right after the vocabulary. */
const FIRST_ADDED = Object.keys(BYTE_VOCAB).length;

/** A tiny Llama-3-style byte-level BPE tokenizer.json. */
function byteLevelTokenizer(): Json {
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: addedTokens(FIRST_ADDED, LLAMA3_SPECIALS),
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: LLAMA3_SPLIT }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: bosProcessor("<|begin_of_text|>", FIRST_ADDED),
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: true,
      vocab: BYTE_VOCAB,
      merges: BYTE_MERGES,
    },
  };
}

const META_MERGES: [string, string][] = [["▁", "h"], ["▁h", "i"], ["t", "h"], ["th", "e"]];
const META_VOCAB = vocabOf([
  "<unk>",
  "<s>",
  "</s>",
  ...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`),
  "▁",
  ..."abcdefghijklmnopqrstuvwxyz",
], META_MERGES);
/** Token text by id (ids are the positions in the vocabulary). */
const META_TOKENS = Object.keys(META_VOCAB);

/** A tiny sentencepiece-style BPE tokenizer.json: Metaspace, byte fallback, `<s>` first. */
function metaspaceTokenizer(): Json {
  return {
    version: "1.0",
    added_tokens: [
      { ...addedTokens(0, ["<unk>"])[0] },
      ...addedTokens(1, ["<s>", "</s>"]),
    ],
    normalizer: null,
    pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: false },
    post_processor: bosProcessor("<s>", 1),
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "▁" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: "<unk>",
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      vocab: META_VOCAB,
      merges: META_MERGES.map(([a, b]) => `${a} ${b}`),
    },
  };
}

const LLAMA3_TEMPLATE = "{{- bos_token }}{% for message in messages %}" +
  "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + " +
  "message['content'] | trim + '<|eot_id|>' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

const CHATML_TEMPLATE = "{% for message in messages %}" +
  "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** Writes `files` (objects as JSON, strings as they are) into a fresh directory. */
async function modelDir(files: Record<string, Json | string>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "tokenizer_test_" });
  for (const [name, content] of Object.entries(files)) {
    await Deno.writeTextFile(
      `${dir}/${name}`,
      typeof content === "string" ? content : JSON.stringify(content),
    );
  }
  return dir;
}

async function withModel(
  files: Record<string, Json | string>,
  body: (dir: string) => Promise<void>,
): Promise<void> {
  const dir = await modelDir(files);
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const LLAMA3_CONFIG = {
  bos_token: "<|begin_of_text|>",
  eos_token: "<|eot_id|>",
  clean_up_tokenization_spaces: false,
  chat_template: LLAMA3_TEMPLATE,
};

/** Text that holds no special-token markup and is valid Unicode (what UTF-8 can carry). */
const textArb = fc.oneof(
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 40 }),
  fc.stringMatching(/^[ a-z\n\t'0-9.,!?]{0,40}$/),
).filter((s) => s.isWellFormed() && !s.includes("<|") && !s.includes("▁"));

Deno.test("byte-level BPE: known merges, BOS, and round trips of any text", async () => {
  await withModel({
    "tokenizer.json": byteLevelTokenizer(),
    "tokenizer_config.json": LLAMA3_CONFIG,
  }, async (dir) => {
    const tok = await loadTokenizer(dir);
    const bos = FIRST_ADDED;
    assert.equal(tok.bosId, bos);
    assert.deepEqual(tok.encode("hello the"), [bos, BYTE_VOCAB["hello"], BYTE_VOCAB["Ġthe"]]);
    assert.equal(tok.decode([bos, BYTE_VOCAB["hello"], BYTE_VOCAB["Ġthe"]]), "hello the");
    assert.equal(
      tok.decode([bos, BYTE_VOCAB["hello"]], { skipSpecial: false }),
      "<|begin_of_text|>hello",
    );
    fc.assert(
      fc.property(textArb, (text) => {
        const ids = tok.encode(text);
        assert.equal(ids[0], bos);
        assert.equal(tok.decode(ids), text);
      }),
      { numRuns: 300 },
    );
  });
});

Deno.test("sentencepiece-style BPE with Metaspace and byte fallback: round trips", async () => {
  await withModel({
    "tokenizer.json": metaspaceTokenizer(),
    "tokenizer_config.json": { bos_token: "<s>", eos_token: "</s>" },
  }, async (dir) => {
    const tok = await loadTokenizer(dir);
    assert.equal(tok.bosId, META_VOCAB["<s>"]);
    assert.deepEqual(tok.eosIds, [META_VOCAB["</s>"]]);
    const ids = tok.encode("hi the");
    assert.deepEqual(ids.map((id) => META_TOKENS[id]), ["<s>", "▁hi", "▁", "the"]);
    // é is not in the vocabulary: it falls back to its two UTF-8 bytes and comes back whole.
    assert.deepEqual(tok.encode("hé").map((id) => META_TOKENS[id]), [
      "<s>",
      "▁h",
      "<0xC3>",
      "<0xA9>",
    ]);
    assert.equal(tok.decode(tok.encode("hé")), "hé");
    // A leading space merges with the prepended "▁" and the decoder strips one space, so (as
    // in sentencepiece itself) text that starts with a space loses it.
    fc.assert(
      fc.property(textArb.filter((t) => !t.startsWith(" ")), (text) => {
        assert.equal(tok.decode(tok.encode(text)), text);
      }),
      { numRuns: 300 },
    );
    assert.equal(tok.decode(tok.encode(" hi")), "hi");
    assert.equal(tok.hasChatTemplate, false);
    assert.deepEqual(tok.encode("hi the", { chat: true }), ids);
  });
});

Deno.test("chat template from tokenizer_config.json: one BOS, headers, generation prompt", async () => {
  await withModel({
    "tokenizer.json": byteLevelTokenizer(),
    "tokenizer_config.json": LLAMA3_CONFIG,
  }, async (dir) => {
    const tok = await loadTokenizer(dir);
    assert.equal(tok.hasChatTemplate, true);
    const ids = tok.encode("  hello the  ", { chat: true });
    assert.equal(
      tok.decode(ids, { skipSpecial: false }),
      "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhello the<|eot_id|>" +
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    );
    assert.equal(ids.filter((id) => id === tok.bosId).length, 1);
    assert.equal(tok.decode(ids), "user\n\nhello theassistant\n\n");
  });
});

Deno.test("chat template as a named list (ChatML, no BOS) and from chat_template.jinja", async () => {
  const qwenTokenizer = byteLevelTokenizer();
  qwenTokenizer.added_tokens = addedTokens(FIRST_ADDED, [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
  ]);
  qwenTokenizer.post_processor = null;
  const config = {
    bos_token: null,
    eos_token: "<|im_end|>",
    chat_template: [{ name: "tool_use", template: "{{ raise_exception('tools') }}" }, {
      name: "default",
      template: CHATML_TEMPLATE,
    }],
  };
  const expected = "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n";
  await withModel(
    { "tokenizer.json": qwenTokenizer, "tokenizer_config.json": config },
    async (dir) => {
      const tok = await loadTokenizer(dir);
      assert.equal(tok.bosId, undefined);
      assert.equal(
        tok.decode(tok.encode("hello", { chat: true }), { skipSpecial: false }),
        expected,
      );
      assert.equal(tok.decode(tok.encode("hello"), { skipSpecial: false }), "hello");
    },
  );
  // A chat_template.jinja file wins over tokenizer_config.json, as in transformers.
  await withModel({
    "tokenizer.json": qwenTokenizer,
    "tokenizer_config.json": { ...config, chat_template: "{{ raise_exception('not this one') }}" },
    "chat_template.jinja": CHATML_TEMPLATE,
  }, async (dir) => {
    const tok = await loadTokenizer(dir);
    assert.equal(tok.decode(tok.encode("hello", { chat: true }), { skipSpecial: false }), expected);
  });
});

Deno.test("end-of-sequence ids gather generation_config, config and tokenizer_config", async () => {
  const vocabSize = FIRST_ADDED;
  const eot = vocabSize + LLAMA3_SPECIALS.indexOf("<|eot_id|>");
  const eos = vocabSize + LLAMA3_SPECIALS.indexOf("<|end_of_text|>");
  await withModel({
    "tokenizer.json": byteLevelTokenizer(),
    "tokenizer_config.json": {
      ...LLAMA3_CONFIG,
      eos_token: { content: "<|eot_id|>", special: true },
    },
    "generation_config.json": { eos_token_id: [eos, eot] },
    "config.json": { eos_token_id: eos, bos_token_id: 0 },
  }, async (dir) => {
    const tok = await loadTokenizer(dir);
    assert.deepEqual(tok.eosIds, [eos, eot]);
    assert.equal(tok.bosId, vocabSize); // the tokenizer's BOS token wins over config.json's id
    assert.equal(tok.decode([]), "");
    assert.equal(tok.decode([10 ** 6, vocabSize - 1]), tok.decode([vocabSize - 1]));
  });
});

Deno.test("missing or broken tokenizer files say which file and what to do", async () => {
  const fails = async (files: Record<string, Json | string>, parts: string[]) => {
    await withModel(files, async (dir) => {
      await assert.rejects(loadTokenizer(dir), (e: unknown) => {
        assert.ok(e instanceof TokenizerError, `expected a TokenizerError, got ${e}`);
        for (const part of [dir, ...parts]) {
          assert.ok(e.message.includes(part), `lacks "${part}": ${e.message}`);
        }
        return true;
      });
    });
  };
  await fails({ "config.json": {} }, ["has no tokenizer.json", "save_pretrained"]);
  await fails({ "tokenizer.json": "{" }, ["tokenizer.json is not valid JSON"]);
  await fails({ "tokenizer.json": "[]" }, ["tokenizer.json is JSON but not an object"]);
  await fails({ "tokenizer.json": { model: { type: "Nope" }, added_tokens: [] } }, [
    "tokenizer.json cannot be used",
  ]);
  await fails({
    "tokenizer.json": byteLevelTokenizer(),
    "tokenizer_config.json": { chat_template: "{% for %}" },
  }, [
    "tokenizer_config.json does not parse",
  ]);
  await withModel({
    "tokenizer.json": byteLevelTokenizer(),
    "tokenizer_config.json": {
      chat_template: "{{ raise_exception('only system and user roles') }}",
    },
  }, async (dir) => {
    const tok = await loadTokenizer(dir);
    assert.throws(
      () => tok.encode("hi", { chat: true }),
      (e: Error) =>
        e instanceof TokenizerError && e.message.includes(dir) &&
        e.message.includes("only system and user roles"),
    );
  });
});
