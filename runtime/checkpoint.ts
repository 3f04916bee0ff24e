// A Hugging Face model directory (config.json plus model.safetensors, or shards listed by
// model.safetensors.index.json) seen as one set of named tensors, and the APB retaining-head
// weights that may live beside it or in a directory of their own. What is wrong with a download is
// reported with the path and the file that was expected, before any kernel runs.

import {
  CheckpointError,
  type NonFiniteReport,
  type ReadOptions,
  type SafetensorsDtype,
  SafetensorsFile,
} from "./safetensors.ts";

// Callers of this module see these in its signatures, so they can import them from here.
export { CheckpointError };
export type { NonFiniteReport, ReadOptions, SafetensorsDtype };

/** Name of the single-file weights of a Hugging Face checkpoint. */
export const WEIGHTS_FILE = "model.safetensors";
/** Name of the index of a sharded Hugging Face checkpoint. */
export const INDEX_FILE = "model.safetensors.index.json";
/** Name of the model configuration of a Hugging Face checkpoint. */
export const CONFIG_FILE = "config.json";

/** Where a tensor lives and what it holds. */
export interface CheckpointTensorInfo {
  /** Element type in the file. */
  dtype: SafetensorsDtype;
  /** Dimensions, outermost first. */
  shape: number[];
  /** Name of the file that holds it, e.g. `model-00002-of-00004.safetensors`. */
  file: string;
  /** Full path of that file. */
  path: string;
}

/** Tensors spread over one or more safetensors files, looked up by name. */
export class TensorStore {
  /** Directory or file the tensors were opened from (used in messages). */
  readonly location: string;
  #byName: Map<string, SafetensorsFile>;
  #files: SafetensorsFile[];

  /** Wraps open files; `byName` says which file holds each tensor. */
  constructor(location: string, files: SafetensorsFile[], byName: Map<string, SafetensorsFile>) {
    this.location = location;
    this.#files = files;
    this.#byName = byName;
  }

  /** Tensor names, in the order of the files and of the data within each. */
  names(): string[] {
    return [...this.#byName.keys()];
  }

  /** Whether a tensor called `name` exists. */
  has(name: string): boolean {
    return this.#byName.has(name);
  }

  /** dtype, shape and file of tensor `name`; a {@linkcode CheckpointError} when it is missing. */
  info(name: string): CheckpointTensorInfo {
    const file = this.#byName.get(name);
    if (!file) {
      throw new CheckpointError(`${this.location} has no tensor ${name}${this.#hint(name)}`);
    }
    const { dtype, shape } = file.info(name);
    return { dtype, shape: [...shape], file: baseName(file.path), path: file.path };
  }

  /** Reads tensor `name` (or a row range of it) as f32. */
  read(name: string, options: ReadOptions & { as: "f32" }): Promise<Float32Array>;
  /** Reads tensor `name` (or a row range of it) as f16. */
  read(name: string, options: ReadOptions & { as: "f16" }): Promise<Float16Array>;
  /** Reads tensor `name` (or a row range of it) as `options.as`. */
  read(name: string, options: ReadOptions): Promise<Float32Array | Float16Array>;
  async read(name: string, options: ReadOptions): Promise<Float32Array | Float16Array> {
    this.info(name);
    return await this.#byName.get(name)!.readTensor(name, options);
  }

  /** Counts NaN and ±Inf values of tensor `name`. */
  async scanNonFinite(name: string): Promise<NonFiniteReport> {
    this.info(name);
    return await this.#byName.get(name)!.scanNonFinite(name);
  }

  /**
   * Asserts that tensor `name` exists with `shape`; the {@linkcode CheckpointError} names the
   * tensor, its file and both shapes. Returns its info.
   */
  expect(name: string, shape: readonly number[]): CheckpointTensorInfo {
    if (!this.has(name)) {
      throw new CheckpointError(
        `${this.location} has no tensor ${name} (the model config expects shape ` +
          `${showShape(shape)})${this.#hint(name)}`,
      );
    }
    const info = this.info(name);
    if (!sameShape(info.shape, shape)) {
      const where = this.#files.length > 1 ? `in shard ${info.file}` : `in ${info.file}`;
      throw new CheckpointError(
        `${name} ${where} has shape ${showShape(info.shape)}; the model config expects ` +
          `${showShape(shape)} (checkpoint at ${this.location}: do these weights belong to ` +
          `the model being built?)`,
      );
    }
    return info;
  }

  /** Closes every file. */
  close(): void {
    for (const file of this.#files) file.close();
  }

  /** Names that end like `name` (same last two parts), to point at a renamed layout. */
  #hint(name: string): string {
    const tail = name.split(".").slice(-2).join(".");
    const similar = this.names().filter((n) => n.endsWith(`.${tail}`) || n === tail).slice(0, 3);
    if (similar.length > 0) return `; tensors with a similar name: ${similar.join(", ")}`;
    const some = this.names().slice(0, 3);
    return `; it holds ${this.#byName.size} tensors${
      some.length ? `, e.g. ${some.join(", ")}` : ""
    }`;
  }
}

/** A Hugging Face checkpoint directory: its parsed config.json and its tensors. */
export class Checkpoint extends TensorStore {
  /** The parsed config.json object. */
  readonly config: Record<string, unknown>;

  /** Wraps an opened directory; use {@linkcode openCheckpoint}. */
  constructor(
    dir: string,
    config: Record<string, unknown>,
    files: SafetensorsFile[],
    byName: Map<string, SafetensorsFile>,
  ) {
    super(dir, files, byName);
    this.config = config;
  }
}

/**
 * Opens the checkpoint in `dir`: config.json plus model.safetensors or a sharded
 * model.safetensors.index.json. Reads headers only; tensors are read on demand.
 */
export async function openCheckpoint(dir: string): Promise<Checkpoint> {
  const expected = `a checkpoint directory holds ${CONFIG_FILE} and ${WEIGHTS_FILE} ` +
    `(or ${INDEX_FILE} with its shards), as a Hugging Face download does`;
  await requireDirectory(dir, expected);
  const configPath = join(dir, CONFIG_FILE);
  if (!await exists(configPath)) {
    throw new CheckpointError(`${dir} has no ${CONFIG_FILE}; ${expected}`);
  }
  const config = await readJsonObject(configPath);
  const weights = await openWeights(dir, false);
  if (!weights) {
    throw new CheckpointError(
      `${dir} has ${CONFIG_FILE} but neither ${WEIGHTS_FILE} nor ${INDEX_FILE}` +
        `${await otherFormats(dir)}; ${expected}`,
    );
  }
  return new Checkpoint(dir, config, weights.files, weights.byName);
}

/** The sizes a retaining head's shapes follow from (the fields of a model config). */
export interface RetainingHeadShapes {
  /** Number of transformer layers; every layer has a head. */
  layers: number;
  /** Query heads (Hq). */
  heads: number;
  /** Key/value heads (Hkv): the head's output width. */
  kvHeads: number;
  /** Width of one attention head (d). */
  headDim: number;
}

const HEAD_WEIGHT = /(?:^|\.)layers\.(\d+)\.self_attn\.fc([12])\.weight$/;

/**
 * APB/Locret retaining heads: per layer `fc1.weight` [hidden, (Hq+2Hkv)·d] and `fc2.weight`
 * [Hkv, hidden], scoring each token's KV for the passing blocks.
 */
export class RetainingHeads extends TensorStore {
  /** Layer indices that have a head, ascending. */
  readonly layers: number[];
  #names: Map<number, { fc1?: string; fc2?: string }>;

  /** Wraps the `fc` tensors of opened files; use {@linkcode openRetainingHeads}. */
  constructor(location: string, files: SafetensorsFile[], byName: Map<string, SafetensorsFile>) {
    super(location, files, byName);
    this.#names = new Map();
    for (const name of byName.keys()) {
      const match = HEAD_WEIGHT.exec(name);
      if (!match) continue;
      const layer = Number(match[1]);
      const pair = this.#names.get(layer) ?? {};
      pair[match[2] === "1" ? "fc1" : "fc2"] = name;
      this.#names.set(layer, pair);
    }
    this.layers = [...this.#names.keys()].sort((a, b) => a - b);
  }

  /** Name of layer `layer`'s first projection, `…layers.{layer}.self_attn.fc1.weight`. */
  fc1(layer: number): string {
    return this.#name(layer, "fc1");
  }

  /** Name of layer `layer`'s second projection, `…layers.{layer}.self_attn.fc2.weight`. */
  fc2(layer: number): string {
    return this.#name(layer, "fc2");
  }

  /**
   * Asserts that there is one head per layer of a model of `shapes` and nothing beyond, each
   * fc1 [hidden, (Hq+2Hkv)·d] and fc2 [Hkv, hidden]. Returns the head's hidden width.
   */
  expectFor(shapes: RetainingHeadShapes): number {
    const extra = this.layers.filter((l) => l >= shapes.layers);
    if (extra.length > 0) {
      throw new CheckpointError(
        `${this.location} has retaining heads for layer ${extra[0]}, but the model has ` +
          `${shapes.layers} layers: these heads belong to another model`,
      );
    }
    const input = (shapes.heads + 2 * shapes.kvHeads) * shapes.headDim;
    const hidden = this.info(this.fc1(0)).shape[0];
    for (let layer = 0; layer < shapes.layers; layer++) {
      this.expect(this.fc1(layer), [hidden, input]);
      this.expect(this.fc2(layer), [shapes.kvHeads, hidden]);
    }
    return hidden;
  }

  #name(layer: number, which: "fc1" | "fc2"): string {
    const name = this.#names.get(layer)?.[which];
    if (name) return name;
    throw new CheckpointError(
      `${this.location} has no retaining-head weight ${which} for layer ${layer} ` +
        `(model.layers.${layer}.self_attn.${which}.weight); the retaining-head checkpoint is ` +
        `incomplete or for another model`,
    );
  }
}

/**
 * Opens retaining-head weights: tensors whose names contain `fc`, from a .safetensors file or from
 * a directory (model.safetensors, a sharded index, or else every .safetensors file in it). The
 * directory may be the model's own when the heads were merged into it.
 */
export async function openRetainingHeads(pathOrDir: string): Promise<RetainingHeads> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(pathOrDir);
  } catch {
    throw new CheckpointError(
      `retaining heads not found: ${pathOrDir} does not exist; pass the directory or .safetensors ` +
        `file of an APB-Locret checkpoint`,
    );
  }
  let weights: OpenedWeights | undefined;
  if (stat.isFile) {
    const file = await SafetensorsFile.open(pathOrDir);
    weights = { files: [file], byName: new Map(file.names().map((n) => [n, file])) };
  } else {
    weights = await openWeights(pathOrDir, true);
  }
  if (!weights) {
    throw new CheckpointError(
      `${pathOrDir} holds no .safetensors file; pass the directory or file of an APB-Locret ` +
        `checkpoint (tensor names containing "fc")`,
    );
  }
  const byName = new Map([...weights.byName].filter(([name]) => name.includes("fc")));
  const heads = new RetainingHeads(pathOrDir, weights.files, byName);
  if (heads.layers.length === 0) {
    heads.close();
    throw new CheckpointError(
      `${pathOrDir} holds no retaining-head weights (names like ` +
        `model.layers.0.self_attn.fc1.weight); it is not an APB-Locret checkpoint`,
    );
  }
  for (const layer of heads.layers) {
    try {
      heads.fc1(layer);
      heads.fc2(layer);
    } catch (e) {
      heads.close();
      throw e;
    }
  }
  return heads;
}

interface OpenedWeights {
  files: SafetensorsFile[];
  byName: Map<string, SafetensorsFile>;
}

/**
 * Opens the weights of `dir`: model.safetensors first (as transformers does), then the index;
 * with `anySafetensors`, every .safetensors file when neither exists. Undefined when none is found.
 */
async function openWeights(
  dir: string,
  anySafetensors: boolean,
): Promise<OpenedWeights | undefined> {
  if (await exists(join(dir, WEIGHTS_FILE))) {
    const file = await SafetensorsFile.open(join(dir, WEIGHTS_FILE));
    return { files: [file], byName: new Map(file.names().map((n) => [n, file])) };
  }
  if (await exists(join(dir, INDEX_FILE))) return await openSharded(dir);
  if (!anySafetensors) return undefined;
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile && entry.name.endsWith(".safetensors")) names.push(entry.name);
  }
  if (names.length === 0) return undefined;
  const files = await openAll(names.sort().map((n) => join(dir, n)));
  const byName = new Map<string, SafetensorsFile>();
  for (const file of files) for (const n of file.names()) byName.set(n, file);
  return { files, byName };
}

/** Opens the shards that model.safetensors.index.json names, checking that each holds its tensors. */
async function openSharded(dir: string): Promise<OpenedWeights> {
  const indexPath = join(dir, INDEX_FILE);
  const weightMap = (await readJsonObject(indexPath)).weight_map;
  if (
    typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap) ||
    !Object.values(weightMap).every((v) => typeof v === "string")
  ) {
    throw new CheckpointError(
      `${indexPath} has no "weight_map" object from tensor names to shard files; ` +
        `the index is damaged, so download it again`,
    );
  }
  const entries = Object.entries(weightMap as Record<string, string>);
  const shardNames = [...new Set(entries.map(([, shard]) => shard))];
  for (const shard of shardNames) {
    // Shard names are plain file names; anything else could read outside the checkpoint.
    if (shard.includes("/") || shard.includes("\\") || shard === "." || shard === "..") {
      throw new CheckpointError(
        `${indexPath} names shard "${shard}", which is not a plain file name in ${dir}; ` +
          `the index is damaged or hostile`,
      );
    }
    if (!await exists(join(dir, shard))) {
      const example = entries.find(([, s]) => s === shard)![0];
      throw new CheckpointError(
        `${indexPath} puts ${example} (and others) in shard ${shard}, which is missing from ` +
          `${dir}: the download is incomplete; fetch every model-*.safetensors file`,
      );
    }
  }
  const files = await openAll(shardNames.map((s) => join(dir, s)));
  const byShard = new Map(shardNames.map((s, i) => [s, files[i]]));
  const byName = new Map<string, SafetensorsFile>();
  for (const [name, shard] of entries) {
    const file = byShard.get(shard)!;
    if (!file.header.tensors.has(name)) {
      for (const f of files) f.close();
      throw new CheckpointError(
        `${indexPath} puts ${name} in shard ${shard}, but that shard does not hold it: ` +
          `the index and the shards come from different downloads`,
      );
    }
    byName.set(name, file);
  }
  return { files, byName };
}

/** Opens every path, closing those already open when one fails. */
async function openAll(paths: string[]): Promise<SafetensorsFile[]> {
  const files: SafetensorsFile[] = [];
  try {
    for (const path of paths) files.push(await SafetensorsFile.open(path));
  } catch (e) {
    for (const f of files) f.close();
    throw e;
  }
  return files;
}

async function requireDirectory(dir: string, expected: string): Promise<void> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(dir);
  } catch {
    throw new CheckpointError(`checkpoint directory ${dir} does not exist; ${expected}`);
  }
  if (!stat.isDirectory) {
    throw new CheckpointError(`${dir} is a file, not a checkpoint directory; ${expected}`);
  }
}

async function readJsonObject(path: string): Promise<Record<string, unknown>> {
  let value: unknown;
  try {
    value = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new CheckpointError(`${path} is not valid JSON (${(e as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new CheckpointError(`${path} is JSON but not an object`);
  }
  return value as Record<string, unknown>;
}

/** Mentions weight files in formats this runtime does not read, so the user knows to convert. */
async function otherFormats(dir: string): Promise<string> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (/\.(bin|pt|pth|ckpt|gguf)$|\.safetensors$/.test(entry.name)) found.push(entry.name);
  }
  if (found.length === 0) return "";
  return ` (it has ${found.sort().slice(0, 3).join(", ")}: only ${WEIGHTS_FILE} or ` +
    `${INDEX_FILE} and its shards are read; re-save the model with save_pretrained(..., ` +
    `safe_serialization=True))`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

function join(dir: string, name: string): string {
  return `${dir.replace(/\/+$/, "")}/${name}`;
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function showShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}
