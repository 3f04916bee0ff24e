// Text in, text out for `deno task run`: a model directory's Hugging Face tokenizer.json (byte-level
// BPE for Llama-3 and Qwen-2.5, sentencepiece-style BPE for Yi) read offline by
// @huggingface/tokenizers, and its chat template rendered by @huggingface/jinja: the pair that
// transformers.js uses, written to give the ids Python transformers gives for the same text.

import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";

/** Raised when a model directory's tokenizer files are missing or unusable. */
export class TokenizerError extends Error {
  /** Always "TokenizerError". */
  override name = "TokenizerError";
}

/** Options of {@linkcode TextTokenizer.encode}. */
export interface EncodeOptions {
  /**
   * Wrap the text as one user turn in the model's chat template, with the assistant's turn opened
   * (`add_generation_prompt`). Without a template (base models such as Yi) the raw text is used.
   */
  chat?: boolean;
}

/** Options of {@linkcode TextTokenizer.decode}. */
export interface DecodeOptions {
  /** Leave out special tokens such as BOS and end-of-turn markers (default true). */
  skipSpecial?: boolean;
}

/** A model's tokenizer as the command line uses it. */
export interface TextTokenizer {
  /** Token ids of `text`, with the special tokens the model expects (BOS where it has one). */
  encode(text: string, options?: EncodeOptions): number[];
  /** The text of `ids`; ids beyond the vocabulary (padding rows of the embedding) give nothing. */
  decode(ids: readonly number[], options?: DecodeOptions): string;
  /** Ids that end generation: generation_config.json, config.json and tokenizer_config.json's. */
  eosIds: number[];
  /** The beginning-of-sequence id, when the model has one. */
  bosId?: number;
  /** Whether `encode(text, { chat: true })` applies a chat template. */
  hasChatTemplate: boolean;
}

type Json = Record<string, unknown>;

/**
 * Loads the tokenizer of the model directory `dir`: tokenizer.json (required), tokenizer_config.json
 * (special tokens, chat template), chat_template.jinja, generation_config.json and config.json
 * (end-of-sequence ids). Reads local files only.
 */
export async function loadTokenizer(dir: string): Promise<TextTokenizer> {
  const tokenizerPath = `${dir}/tokenizer.json`;
  const tokenizerJson = await readJson(tokenizerPath);
  if (!tokenizerJson) {
    throw new TokenizerError(
      `${dir} has no tokenizer.json: text prompts need the Hugging Face "fast" tokenizer file ` +
        `beside config.json. A model that ships only tokenizer.model (sentencepiece) can be ` +
        `converted once with: python -c "from transformers import AutoTokenizer as T; ` +
        `T.from_pretrained('${dir}').save_pretrained('${dir}')"`,
    );
  }
  const config = await readJson(`${dir}/tokenizer_config.json`) ?? {};
  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(tokenizerJson, config);
  } catch (e) {
    throw new TokenizerError(`${tokenizerPath} cannot be used: ${(e as Error).message}`);
  }
  const template = await chatTemplate(dir, config);
  const tokenId = (token: unknown) => {
    const text = tokenText(token);
    return text === undefined ? undefined : tokenizer.token_to_id(text);
  };
  const generation = await readJson(`${dir}/generation_config.json`) ?? {};
  const model = await readJson(`${dir}/config.json`) ?? {};
  const eosIds = [
    ...new Set([
      ...ids(generation.eos_token_id),
      ...ids(model.eos_token_id),
      ...ids(tokenId(config.eos_token)),
    ]),
  ];
  const bosId = tokenId(config.bos_token) ?? ids(model.bos_token_id)[0];
  // The template context transformers passes: the special tokens as text.
  const specialTokens = Object.fromEntries(
    ["bos_token", "eos_token", "unk_token", "pad_token"]
      .map((key) => [key, tokenText(config[key])])
      .filter(([, text]) => text !== undefined),
  );
  const cleanUpSpaces = config.clean_up_tokenization_spaces === true;

  return {
    eosIds,
    bosId,
    hasChatTemplate: template !== undefined,
    encode(text, options = {}) {
      if (!options.chat || !template) return tokenizer.encode(text).ids;
      let rendered: string;
      try {
        rendered = template.render({
          messages: [{ role: "user", content: text }],
          add_generation_prompt: true,
          ...specialTokens,
        });
      } catch (e) {
        throw new TokenizerError(`the chat template of ${dir} failed: ${(e as Error).message}`);
      }
      // The template writes BOS itself where the model wants one, as transformers assumes.
      return tokenizer.encode(rendered, { add_special_tokens: false }).ids;
    },
    decode(ids, options = {}) {
      const known = ids.filter((id) => tokenizer.id_to_token(id) !== undefined);
      if (known.length === 0) return "";
      return tokenizer.decode(known, {
        skip_special_tokens: options.skipSpecial ?? true,
        clean_up_tokenization_spaces: cleanUpSpaces,
      });
    },
  };
}

/**
 * The chat template: chat_template.jinja if present (newer transformers save it there), else
 * tokenizer_config.json's `chat_template`, a string or a list of named templates ("default" wins).
 */
async function chatTemplate(dir: string, config: Json): Promise<Template | undefined> {
  let source: string | undefined;
  let origin = `${dir}/chat_template.jinja`;
  try {
    source = await Deno.readTextFile(origin);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    origin = `${dir}/tokenizer_config.json`;
    const raw = config.chat_template;
    if (typeof raw === "string") source = raw;
    else if (Array.isArray(raw)) {
      const named = raw as { name?: string; template?: string }[];
      source = (named.find((t) => t.name === "default") ?? named[0])?.template;
    }
  }
  if (source === undefined) return undefined;
  try {
    return new Template(source);
  } catch (e) {
    throw new TokenizerError(
      `the chat template in ${origin} does not parse: ${(e as Error).message}`,
    );
  }
}

/** The parsed object in `path`, or undefined when the file does not exist. */
async function readJson(path: string): Promise<Json | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new TokenizerError(`${path} is not valid JSON (${(e as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TokenizerError(`${path} is JSON but not an object`);
  }
  return value as Json;
}

/** A special token as text: tokenizer_config.json writes it as a string or as `{content}`. */
function tokenText(token: unknown): string | undefined {
  if (typeof token === "string") return token;
  const content = (token as { content?: unknown } | null | undefined)?.content;
  return typeof content === "string" ? content : undefined;
}

/** Token ids from a config value: one id, a list of ids, or nothing. */
function ids(value: unknown): number[] {
  const list = Array.isArray(value) ? value : [value];
  return list.filter((v): v is number => Number.isInteger(v));
}
