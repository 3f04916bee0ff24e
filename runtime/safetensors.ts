// The safetensors checkpoint format: an 8-byte little-endian header length, a JSON header, then raw
// tensor bytes. Shards run to several GB, so a file is never read whole: the header is parsed once
// and tensors (or row ranges of them, for weights larger than one GPU binding) are streamed in
// bounded chunks. Every check names the file and tensor, because a damaged download otherwise
// surfaces much later as wrong logits.

/** Raised for a checkpoint that cannot be used as it is; the message names the file (and tensor). */
export class CheckpointError extends Error {
  /** Always "CheckpointError". */
  override name = "CheckpointError";
}

/** A dtype the header may name; only {@linkcode ReadableDtype}s can be read. */
export type SafetensorsDtype =
  | "BOOL"
  | "U8"
  | "I8"
  | "F8_E4M3"
  | "F8_E5M2"
  | "F8_E8M0"
  | "I16"
  | "U16"
  | "F16"
  | "BF16"
  | "I32"
  | "U32"
  | "F32"
  | "I64"
  | "U64"
  | "F64";

/** Bytes per element of every dtype the format defines with a whole-byte size. */
const DTYPE_BYTES: Readonly<Record<SafetensorsDtype, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  F8_E8M0: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
};

/** The dtypes this reader converts from (and the writer writes). */
export type ReadableDtype = "F32" | "F16" | "BF16";

/** Headers above this size are refused: real ones are a few hundred KB even for 100B models. */
export const MAX_HEADER_BYTES = 100_000_000;

/** Upper bound of one read from disk, so memory use does not grow with the tensor. */
export const READ_CHUNK_BYTES = 64 * 1024 * 1024;

/** One tensor of a file, with its place in the file (absolute byte offsets). */
export interface TensorEntry {
  /** Tensor name, e.g. `model.layers.0.self_attn.q_proj.weight`. */
  name: string;
  /** Element type as the header states it. */
  dtype: SafetensorsDtype;
  /** Dimensions, outermost first. */
  shape: number[];
  /** Offset of the first byte from the start of the file. */
  byteOffset: number;
  /** Number of bytes: product(shape) · dtype size. */
  byteLength: number;
}

/** What the header of one file says, after validation. */
export interface SafetensorsHeader {
  /** Byte offset where the data section starts (8 + header length). */
  dataOffset: number;
  /** The `__metadata__` strings (empty when absent). */
  metadata: Record<string, string>;
  /** Tensors by name, in the order of their data in the file. */
  tensors: Map<string, TensorEntry>;
}

/** Options of {@linkcode SafetensorsFile.readTensor}. */
export interface ReadOptions {
  /** Storage type of the result: f32 (exact from all readable dtypes) or f16 (rounded to nearest even). */
  as: "f32" | "f16";
  /** Only rows `[start, start + count)` of the first dimension, to split a tensor across bindings. */
  rows?: [start: number, count: number];
  /** Throw a {@linkcode CheckpointError} when the result holds NaN or ±Inf. */
  requireFinite?: boolean;
}

/** The result of {@linkcode SafetensorsFile.scanNonFinite}. */
export interface NonFiniteReport {
  /** Path of the file. */
  file: string;
  /** Name of the tensor. */
  tensor: string;
  /** Number of NaN and ±Inf elements. */
  count: number;
  /** Element index of the first one, or -1 when there is none. */
  firstIndex: number;
}

/** One tensor for {@linkcode writeSafetensors}. */
export interface TensorToWrite {
  /** Tensor name. */
  name: string;
  /** Storage dtype in the file; values are rounded to it (nearest even). */
  dtype: ReadableDtype;
  /** Dimensions; their product must equal the number of values. */
  shape: number[];
  /** Values, row-major. */
  data: Float32Array | number[];
}

/**
 * Reads the header length from the first 8 bytes of a file of `fileSize` bytes, refusing lengths
 * that cannot belong to a well-formed file.
 */
function headerLengthOf(first8: Uint8Array, fileSize: number, file: string): number {
  if (fileSize < 8 || first8.length < 8) {
    throw new CheckpointError(
      `${file} has ${fileSize} bytes, fewer than the 8-byte header length every safetensors file ` +
        `starts with: it is empty or truncated; download or save it again`,
    );
  }
  const length = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (length > BigInt(MAX_HEADER_BYTES)) {
    throw new CheckpointError(
      `${file} declares a ${length}-byte header, more than the ${MAX_HEADER_BYTES} bytes any real ` +
        `checkpoint needs: it is not a safetensors file or its first bytes are damaged`,
    );
  }
  if (8n + length > BigInt(fileSize)) {
    throw new CheckpointError(
      `${file} declares a ${length}-byte header but only ${fileSize - 8} bytes follow the ` +
        `length: the file is truncated or not a safetensors file; download or save it again`,
    );
  }
  return Number(length);
}

/**
 * Parses and validates the header of a safetensors file of `fileSize` bytes from `bytes`, which holds
 * at least the file's first 8 + header-length bytes. Throws only {@linkcode CheckpointError}.
 */
export function parseSafetensorsHeader(
  bytes: Uint8Array,
  fileSize: number,
  file: string,
): SafetensorsHeader {
  const headerLength = headerLengthOf(bytes, fileSize, file);
  if (bytes.length < 8 + headerLength) {
    throw new CheckpointError(`${file}: only ${bytes.length} bytes given to parse the header from`);
  }
  const json = parseJsonObject(bytes.subarray(8, 8 + headerLength), file);
  const dataOffset = 8 + headerLength;
  const dataLength = fileSize - dataOffset;
  const metadata = parseMetadata(json.__metadata__, file);
  const entries = Object.entries(json).filter(([name]) => name !== "__metadata__")
    .map(([name, raw]) => parseEntry(name, raw, dataOffset, file))
    // JSON.parse moves integer-like keys to the front, so the data order is the stable one.
    .sort((a, b) => a.byteOffset - b.byteOffset || a.byteLength - b.byteLength);
  checkLayout(entries, dataOffset, dataLength, file);
  return { dataOffset, metadata, tensors: new Map(entries.map((e) => [e.name, e])) };
}

function parseJsonObject(headerBytes: Uint8Array, file: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
  } catch (e) {
    throw new CheckpointError(
      `${file}: the header is not valid UTF-8 JSON (${(e as Error).message}); ` +
        `the file is damaged or not a safetensors file`,
    );
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new CheckpointError(
      `${file}: the header is JSON but not an object of tensor entries; ` +
        `the file is damaged or not a safetensors file`,
    );
  }
  return value as Record<string, unknown>;
}

function parseMetadata(raw: unknown, file: string): Record<string, string> {
  if (raw === undefined) return {};
  const ok = typeof raw === "object" && raw !== null && !Array.isArray(raw) &&
    Object.values(raw).every((v) => typeof v === "string");
  if (!ok) {
    throw new CheckpointError(
      `${file}: "__metadata__" must be an object of strings; the header is damaged`,
    );
  }
  return { ...(raw as Record<string, string>) };
}

function parseEntry(name: string, raw: unknown, dataOffset: number, file: string): TensorEntry {
  const fail = (what: string): never => {
    throw new CheckpointError(
      `${file}: the header entry of tensor "${name}" ${what}; the file is damaged or was written ` +
        `by a broken tool, so save it again`,
    );
  };
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) fail("is not an object");
  const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
  if (typeof dtype !== "string") fail(`has no string "dtype"`);
  if (!Object.hasOwn(DTYPE_BYTES, dtype as string)) {
    fail(
      `has unknown dtype ${JSON.stringify(dtype)} (known: ${Object.keys(DTYPE_BYTES).join(", ")})`,
    );
  }
  if (!Array.isArray(shape)) fail(`has no "shape" array`);
  const dims = shape as unknown[];
  if (!dims.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
    fail(`has shape ${JSON.stringify(shape)}, whose dimensions are not all non-negative integers`);
  }
  if (
    !Array.isArray(offsets) || offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)
  ) {
    fail(`has "data_offsets" ${JSON.stringify(offsets)}, not two non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) fail(`has data_offsets [${begin}, ${end}] with begin after end`);
  const elementBytes = DTYPE_BYTES[dtype as SafetensorsDtype];
  const expected = (dims as number[]).reduce((a, d) => a * d, elementBytes);
  if (expected !== end - begin) {
    fail(
      `spans ${end - begin} bytes, but shape ${
        JSON.stringify(shape)
      } of ${dtype} needs ${expected}`,
    );
  }
  return {
    name,
    dtype: dtype as SafetensorsDtype,
    shape: dims as number[],
    byteOffset: dataOffset + begin,
    byteLength: end - begin,
  };
}

/**
 * Rejects overlapping byte ranges and a data section shorter than the header promises, given the
 * entries sorted by offset.
 */
function checkLayout(entries: TensorEntry[], dataOffset: number, dataLength: number, file: string) {
  const end = (e: TensorEntry) => e.byteOffset + e.byteLength - dataOffset;
  const filled = entries.filter((e) => e.byteLength > 0);
  for (let i = 1; i < filled.length; i++) {
    const [previous, next] = [filled[i - 1], filled[i]];
    if (next.byteOffset - dataOffset < end(previous)) {
      throw new CheckpointError(
        `${file}: tensors "${previous.name}" and "${next.name}" overlap in the data section ` +
          `(bytes ${next.byteOffset - dataOffset}..${end(previous)}); the header is damaged, ` +
          `so save the file again`,
      );
    }
  }
  // Empty tensors count too: an offset past the data is damage even with nothing to read.
  const last = entries.reduce<TensorEntry | undefined>(
    (a, e) => a && end(a) >= end(e) ? a : e,
    undefined,
  );
  if (last && end(last) > dataLength) {
    throw new CheckpointError(
      `${file} is truncated: tensor "${last.name}" ends at byte ${
        end(last)
      } of the data section, ` +
        `which has only ${dataLength} bytes; download or save the file again`,
    );
  }
}

/** Options of {@linkcode SafetensorsFile.open}. */
export interface OpenOptions {
  /** Largest single read from disk in bytes (default {@linkcode READ_CHUNK_BYTES}). */
  chunkBytes?: number;
}

/** An open safetensors file: the parsed header plus streaming reads of tensor data. */
export class SafetensorsFile {
  /** Path the file was opened from. */
  readonly path: string;
  /** The validated header. */
  readonly header: SafetensorsHeader;
  #file: Deno.FsFile;
  #chunkBytes: number;
  #closed = false;
  // seek + read is two calls on one handle, so concurrent reads are serialized.
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(
    path: string,
    file: Deno.FsFile,
    header: SafetensorsHeader,
    chunkBytes: number,
  ) {
    this.path = path;
    this.#file = file;
    this.header = header;
    this.#chunkBytes = chunkBytes;
  }

  /** Opens `path` and validates its header; reads no tensor data. */
  static async open(path: string, options: OpenOptions = {}): Promise<SafetensorsFile> {
    const chunkBytes = options.chunkBytes ?? READ_CHUNK_BYTES;
    if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 1) {
      throw new RangeError(`chunkBytes must be a positive integer, not ${chunkBytes}`);
    }
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (e) {
      throw new CheckpointError(`cannot open safetensors file ${path}: ${(e as Error).message}`);
    }
    try {
      const size = (await file.stat()).size;
      const first8 = await readAt(file, 0, new Uint8Array(Math.min(8, size)), path);
      const length = headerLengthOf(first8, size, path);
      const prefix = await readAt(file, 0, new Uint8Array(8 + length), path);
      const header = parseSafetensorsHeader(prefix, size, path);
      return new SafetensorsFile(path, file, header, chunkBytes);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** The `__metadata__` strings of the header. */
  get metadata(): Record<string, string> {
    return this.header.metadata;
  }

  /** Tensor names in the order of their data in the file. */
  names(): string[] {
    return [...this.header.tensors.keys()];
  }

  /** The entry of tensor `name`; a {@linkcode CheckpointError} when the file lacks it. */
  info(name: string): TensorEntry {
    const entry = this.header.tensors.get(name);
    if (!entry) {
      throw new CheckpointError(
        `${this.path} has no tensor "${name}" (it holds ${this.header.tensors.size} tensors)`,
      );
    }
    return entry;
  }

  /** Reads tensor `name` (or a row range of it) converted to f32. */
  readTensor(name: string, options: ReadOptions & { as: "f32" }): Promise<Float32Array>;
  /** Reads tensor `name` (or a row range of it) converted to f16. */
  readTensor(name: string, options: ReadOptions & { as: "f16" }): Promise<Float16Array>;
  /** Reads tensor `name` (or a row range of it) converted to `options.as`. */
  readTensor(name: string, options: ReadOptions): Promise<Float32Array | Float16Array>;
  async readTensor(name: string, options: ReadOptions): Promise<Float32Array | Float16Array> {
    const entry = this.#readable(name);
    const [first, count] = this.#rowRange(entry, options.rows);
    const out = options.as === "f32" ? new Float32Array(count) : new Float16Array(count);
    if (STORED_AS[entry.dtype] === options.as) {
      // Same storage type: the file's bytes are the result, read straight into it.
      await this.#stream(entry, first, count, () => {}, new Uint8Array(out.buffer));
    } else {
      const scratch = Math.min(count, this.#chunkElements(entry.dtype));
      await this.#stream(entry, first, count, converter(entry.dtype, out, scratch));
    }
    if (options.requireFinite) await this.#requireFinite(entry, options, first, out);
    return out;
  }

  /** Counts NaN and ±Inf values of tensor `name`, streaming it in chunks. */
  async scanNonFinite(name: string): Promise<NonFiniteReport> {
    const entry = this.#readable(name);
    return await this.#countNonFinite(entry, 0, entry.byteLength / DTYPE_BYTES[entry.dtype]);
  }

  /** Closes the file; later reads throw. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#file.close();
  }

  #readable(name: string): TensorEntry & { dtype: ReadableDtype } {
    if (this.#closed) throw new CheckpointError(`${this.path} was closed; open it again to read`);
    const entry = this.info(name);
    if (entry.dtype !== "F32" && entry.dtype !== "F16" && entry.dtype !== "BF16") {
      throw new CheckpointError(
        `${this.path}: tensor "${name}" has dtype ${entry.dtype}, which this runtime does not read ` +
          `(unsupported dtype; supported: F32, F16, BF16); convert the checkpoint to one of those`,
      );
    }
    return entry as TensorEntry & { dtype: ReadableDtype };
  }

  /** First element and element count of the requested rows. */
  #rowRange(entry: TensorEntry, rows: [number, number] | undefined): [number, number] {
    const elements = entry.byteLength / DTYPE_BYTES[entry.dtype];
    if (!rows) return [0, elements];
    const [start, count] = rows;
    const height = entry.shape[0];
    if (
      entry.shape.length === 0 || !Number.isSafeInteger(start) || !Number.isSafeInteger(count) ||
      start < 0 || count < 0 || start + count > height
    ) {
      throw new RangeError(
        `${this.path}: rows [${start}, ${count}] (start, count) are outside tensor "${entry.name}" ` +
          `of shape [${entry.shape.join(", ")}]`,
      );
    }
    const rowElements = entry.shape.slice(1).reduce((a, d) => a * d, 1);
    return [start * rowElements, count * rowElements];
  }

  /** Elements of `dtype` in one read: `chunkBytes` worth, one at least. */
  #chunkElements(dtype: ReadableDtype): number {
    return Math.max(1, Math.floor(this.#chunkBytes / DTYPE_BYTES[dtype]));
  }

  /**
   * Streams the bytes of elements [first, first + count) of `entry` in chunks, handing `use` each
   * chunk with its element offset in the range. With `into`, each chunk is read straight into its
   * place there instead of into a reused buffer.
   */
  #stream(
    entry: TensorEntry & { dtype: ReadableDtype },
    first: number,
    count: number,
    use: (bytes: Uint8Array, at: number) => void,
    into?: Uint8Array,
  ): Promise<void> {
    const size = DTYPE_BYTES[entry.dtype];
    const step = Math.min(count, this.#chunkElements(entry.dtype));
    const chunk = into ? undefined : new Uint8Array(step * size);
    return this.#exclusive(async () => {
      for (let done = 0; done < count; done += step) {
        const n = Math.min(step, count - done);
        const target = into?.subarray(done * size, (done + n) * size) ??
          chunk!.subarray(0, n * size);
        const offset = entry.byteOffset + (first + done) * size;
        use(await readAt(this.#file, offset, target, this.path), done);
      }
    });
  }

  async #countNonFinite(
    entry: TensorEntry & { dtype: ReadableDtype },
    first: number,
    count: number,
  ): Promise<NonFiniteReport> {
    const report = { file: this.path, tensor: entry.name, count: 0, firstIndex: -1 };
    await this.#stream(entry, first, count, (bytes, at) => {
      const found = nonFiniteStored(entry.dtype, bytes);
      if (found.count > 0 && report.firstIndex < 0) report.firstIndex = at + found.firstIndex;
      report.count += found.count;
    });
    return report;
  }

  async #requireFinite(
    entry: TensorEntry & { dtype: ReadableDtype },
    options: ReadOptions,
    first: number,
    out: Float32Array | Float16Array,
  ): Promise<void> {
    const found = countNonFinite(out);
    if (found.count === 0) return;
    const inFile = (await this.#countNonFinite(entry, first, out.length)).count;
    const rows = options.rows
      ? ` (rows ${options.rows[0]}..${options.rows[0] + options.rows[1]})`
      : "";
    const cause = inFile === found.count
      ? "the file itself holds them: the checkpoint is damaged or was saved after training diverged"
      : `${inFile} are in the file, the other ${found.count - inFile} are finite values beyond ` +
        `f16's range (±65504): read this tensor as f32`;
    throw new CheckpointError(
      `${this.path}: tensor "${entry.name}"${rows} read as ${options.as} has ${found.count} ` +
        `non-finite values (NaN or ±Inf; the first at element ${found.firstIndex}); ${cause}`,
    );
  }

  #exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(work, work);
    this.#queue = run.catch(() => {});
    return run;
  }
}

/** Fills `into` from byte `offset` of `file`; a short file is a truncation. */
async function readAt(
  file: Deno.FsFile,
  offset: number,
  into: Uint8Array,
  path: string,
): Promise<Uint8Array> {
  await file.seek(offset, Deno.SeekMode.Start);
  for (let filled = 0; filled < into.length;) {
    const n = await file.read(into.subarray(filled));
    if (n === null) {
      throw new CheckpointError(
        `${path} ended at byte ${offset + filled} while ${into.length - filled} more bytes ` +
          `were expected: it was truncated (or changed) after it was opened`,
      );
    }
    filled += n;
  }
  return into;
}

/** The result type whose bytes equal a dtype's in the file, where there is one. */
const STORED_AS: Record<ReadableDtype, "f32" | "f16" | undefined> = {
  F32: "f32",
  F16: "f16",
  BF16: undefined,
};

/**
 * A function that converts a chunk of little-endian `dtype` elements into `out` at an element
 * offset; `chunkElements` bounds a chunk (for the scratch space bf16 → f16 needs). Chunks start
 * buffers of their own, so typed views over them are aligned.
 */
function converter(
  dtype: ReadableDtype,
  out: Float32Array | Float16Array,
  chunkElements: number,
): (bytes: Uint8Array, at: number) => void {
  const view = <T>(Type: new (b: ArrayBuffer, o: number, n: number) => T, bytes: Uint8Array) =>
    new Type(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.length / DTYPE_BYTES[dtype]);
  // TypedArray.set converts element-wise: f32 → f16 rounds to nearest even, f16 → f32 is exact.
  if (dtype === "F32") return (bytes, at) => out.set(view(Float32Array, bytes), at);
  if (dtype === "F16") return (bytes, at) => out.set(view(Float16Array, bytes), at);
  // bf16 is the top half of an f32, so widening is a shift, exact, written in place when the
  // result is f32 and through one reused scratch chunk when it is f16.
  const wide = out instanceof Float32Array
    ? new Uint32Array(out.buffer, out.byteOffset, out.length)
    : new Uint32Array(chunkElements);
  return (bytes, at) => {
    const bits = view(Uint16Array, bytes);
    const base = out instanceof Float32Array ? at : 0;
    for (let i = 0; i < bits.length; i++) wide[base + i] = bits[i] << 16;
    if (!(out instanceof Float32Array)) {
      out.set(new Float32Array(wide.buffer, 0, bits.length), at);
    }
  };
}

/** NaN and ±Inf among little-endian `dtype` elements, told by their bits (no conversion). */
function nonFiniteStored(
  dtype: ReadableDtype,
  bytes: Uint8Array,
): { count: number; firstIndex: number } {
  if (dtype === "F32") {
    return countNonFinite(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4));
  }
  // An all-ones exponent is Inf or NaN: 5 bits in f16, 8 in bf16.
  const mask = dtype === "F16" ? 0x7c00 : 0x7f80;
  const bits = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2);
  let count = 0;
  let firstIndex = -1;
  for (let i = 0; i < bits.length; i++) {
    if ((bits[i] & mask) === mask && count++ === 0) firstIndex = i;
  }
  return { count, firstIndex };
}

function countNonFinite(
  values: Float32Array | Float16Array,
): { count: number; firstIndex: number } {
  let count = 0;
  let firstIndex = -1;
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i]) && count++ === 0) firstIndex = i;
  }
  return { count, firstIndex };
}

/**
 * Writes `tensors` as a safetensors file at `path`, each stored in its dtype (rounded to nearest
 * even), with the header padded to 8 bytes as the format recommends.
 */
export async function writeSafetensors(
  path: string,
  tensors: TensorToWrite[],
  metadata?: Record<string, string>,
): Promise<void> {
  // A Map, not an object literal, so that a tensor named "__proto__" stays an ordinary key.
  const header = new Map<string, unknown>(metadata ? [["__metadata__", metadata]] : []);
  const blobs: Uint8Array[] = [];
  let offset = 0;
  for (const t of tensors) {
    if (t.name === "__metadata__" || header.has(t.name)) {
      throw new RangeError(`cannot write tensor "${t.name}" to ${path}: the name is taken`);
    }
    const elements = t.shape.reduce((a, d) => a * d, 1);
    if (elements !== t.data.length) {
      throw new RangeError(
        `cannot write tensor "${t.name}" to ${path}: shape [${
          t.shape.join(", ")
        }] has ${elements} ` +
          `elements but ${t.data.length} values were given`,
      );
    }
    const blob = encode(t.dtype, Float32Array.from(t.data));
    header.set(t.name, {
      dtype: t.dtype,
      shape: t.shape,
      data_offsets: [offset, offset + blob.length],
    });
    blobs.push(blob);
    offset += blob.length;
  }
  let json = `{${
    [...header].map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(",")
  }}`;
  json += " ".repeat((8 - (new TextEncoder().encode(json).length % 8)) % 8);
  const headerBytes = new TextEncoder().encode(json);
  const lengthBytes = new Uint8Array(8);
  new DataView(lengthBytes.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  for (const part of [lengthBytes, headerBytes, ...blobs]) await writeAll(file, part);
}

/** Stores f32 values as little-endian `dtype` bytes. */
function encode(dtype: ReadableDtype, values: Float32Array): Uint8Array {
  if (dtype === "F32") return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  if (dtype === "F16") return new Uint8Array(new Float16Array(values).buffer);
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const b = bits[i];
    // NaN keeps a quiet-NaN pattern; everything else rounds the low half to nearest even.
    out[i] = Number.isNaN(values[i]) ? 0x7fc0 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return new Uint8Array(out.buffer);
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let written = 0; written < bytes.length;) {
    written += await file.write(bytes.subarray(written));
  }
}
