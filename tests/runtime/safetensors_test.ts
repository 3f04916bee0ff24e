// The safetensors reader: round trips through the writer, streaming in small chunks, every
// hardening error (message names file and tensor), and a fuzzer of the header parser.

import fc from "fast-check";
import { assert } from "../../compiler/_deps.ts";
import {
  CheckpointError,
  MAX_HEADER_BYTES,
  parseSafetensorsHeader,
  type ReadableDtype,
  SafetensorsFile,
  writeSafetensors,
} from "../../runtime/safetensors.ts";

async function withTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "safetensors_test_" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A file with `header` as its JSON text, `dataLength` zero bytes after it, and a chosen length field. */
function rawFile(header: string, dataLength: number, declaredLength?: number): Uint8Array {
  const json = new TextEncoder().encode(header);
  const bytes = new Uint8Array(8 + json.length + dataLength);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(declaredLength ?? json.length), true);
  bytes.set(json, 8);
  return bytes;
}

/** Rounds an f32 to bf16 by the definition: the nearest of the two neighbours, ties to even. */
function bf16Round(x: number): number {
  const f = Math.fround(x);
  if (!Number.isFinite(f) || f === 0) return f;
  const bits = new Uint32Array(new Float32Array([f]).buffer)[0];
  const down = new Float32Array(new Uint32Array([bits & 0xffff0000]).buffer)[0];
  // The next bf16 away from zero, in float64 so that past the largest finite one it is 2^128.
  const ulp = 2 ** (Math.max((bits >>> 23) & 0xff, 1) - 127 - 7);
  const up = down + Math.sign(f) * ulp;
  const [dDown, dUp] = [Math.abs(f - down), Math.abs(up - f)];
  const nearest = dDown !== dUp ? (dDown < dUp ? down : up) : (bits >>> 16) % 2 === 0 ? down : up;
  return Math.abs(nearest) >= 2 ** 128 ? Math.sign(f) * Infinity : nearest;
}

function storedValue(dtype: ReadableDtype, x: number): number {
  if (dtype === "F32") return Math.fround(x);
  if (dtype === "F16") return Math.f16round(x);
  return bf16Round(x);
}

const dtypeArb = fc.constantFrom<ReadableDtype>("F32", "F16", "BF16");
const valueArb = fc.oneof(
  fc.float({ noNaN: true, noDefaultInfinity: true }),
  fc.float({ min: -4, max: 4, noNaN: true }),
);
const tensorArb = fc.tuple(
  dtypeArb,
  fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 0, maxLength: 3 }),
).chain(([dtype, shape]) =>
  fc.array(valueArb, {
    minLength: shape.reduce((a, d) => a * d, 1),
    maxLength: shape.reduce((a, d) => a * d, 1),
  }).map((data) => ({ dtype, shape, data }))
);
const tensorsArb = fc.uniqueArray(
  fc.tuple(fc.string({ minLength: 1, maxLength: 12 }), tensorArb).map(([name, t]) => ({
    name,
    ...t,
  })),
  { selector: (t) => t.name, maxLength: 5 },
).filter((ts) => ts.every((t) => t.name !== "__metadata__"));

Deno.test("round trip: random tensors, dtypes and shapes read back as f32 and f16", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/t.safetensors`;
    await fc.assert(
      fc.asyncProperty(
        tensorsArb,
        fc.dictionary(fc.string(), fc.string(), { maxKeys: 3 }),
        fc.integer({ min: 1, max: 64 }),
        async (tensors, metadata, chunkBytes) => {
          await writeSafetensors(path, tensors, metadata);
          const file = await SafetensorsFile.open(path, { chunkBytes });
          try {
            // Order is by data offset; empty tensors share offsets, so compare as sets.
            assert.deepEqual(file.names().toSorted(), tensors.map((t) => t.name).toSorted());
            assert.deepEqual(file.metadata, { ...metadata });
            for (const t of tensors) {
              assert.deepEqual(file.info(t.name).shape, t.shape);
              assert.equal(file.info(t.name).dtype, t.dtype);
              const stored = t.data.map((x) => storedValue(t.dtype, x));
              const f32 = await file.readTensor(t.name, { as: "f32" });
              assert.deepEqual([...f32], stored);
              const f16 = await file.readTensor(t.name, { as: "f16" });
              assert.deepEqual([...f16], stored.map(Math.f16round));
            }
          } finally {
            file.close();
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});

Deno.test("round trip: bf16-representable values come back exactly", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/bf16.safetensors`;
    const bitsArb = fc.integer({ min: 0, max: 0xffff }).filter((b) => (b & 0x7f80) !== 0x7f80);
    await fc.assert(
      fc.asyncProperty(fc.array(bitsArb, { minLength: 1, maxLength: 50 }), async (bits) => {
        const values = [...new Float32Array(new Uint32Array(bits.map((b) => b << 16)).buffer)];
        await writeSafetensors(path, [{
          name: "w",
          dtype: "BF16",
          shape: [bits.length],
          data: values,
        }]);
        const file = await SafetensorsFile.open(path);
        try {
          assert.deepEqual([...await file.readTensor("w", { as: "f32" })], values);
        } finally {
          file.close();
        }
      }),
      { numRuns: 50 },
    );
  });
});

Deno.test("bf16 and f16 writes round to nearest even", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/round.safetensors`;
    // 1 + 2^-8 sits halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to the even one, 1.
    // 1 + 3·2^-8 sits halfway between 1 + 2^-7 and 1 + 2^-6: the even one is 1 + 2^-6.
    const data = [1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, 70000, Number.NaN];
    await writeSafetensors(path, [
      { name: "b", dtype: "BF16", shape: [5], data },
      { name: "h", dtype: "F16", shape: [2], data: [1 + 2 ** -11, 1 + 3 * 2 ** -11] },
    ]);
    const file = await SafetensorsFile.open(path);
    try {
      const b = await file.readTensor("b", { as: "f32" });
      assert.deepEqual([...b.slice(0, 4)], [1, 1 + 2 ** -6, 1 + 2 ** -7, 70144]);
      assert.ok(Number.isNaN(b[4]));
      assert.deepEqual([...await file.readTensor("h", { as: "f32" })], [1, 1 + 2 ** -9]);
    } finally {
      file.close();
    }
  });
});

Deno.test("row ranges equal slices of the whole tensor, across chunk boundaries", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/rows.safetensors`;
    const data = Array.from({ length: 7 * 5 }, (_, i) => i - 17.25);
    await writeSafetensors(path, [
      { name: "f32", dtype: "F32", shape: [7, 5], data },
      { name: "bf16", dtype: "BF16", shape: [7, 5], data },
    ]);
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 7 }).chain((start) =>
          fc.tuple(fc.constant(start), fc.integer({ min: 0, max: 7 - start }))
        ),
        fc.integer({ min: 1, max: 48 }),
        fc.constantFrom("f32", "bf16"),
        fc.constantFrom<"f32" | "f16">("f32", "f16"),
        async (rows, chunkBytes, name, as) => {
          const file = await SafetensorsFile.open(path, { chunkBytes });
          try {
            const whole = await file.readTensor(name, { as });
            const part = await file.readTensor(name, { as, rows });
            assert.deepEqual([...part], [...whole.slice(rows[0] * 5, (rows[0] + rows[1]) * 5)]);
          } finally {
            file.close();
          }
        },
      ),
      { numRuns: 80 },
    );
  });
});

Deno.test("concurrent reads of one file do not interleave their seeks", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/many.safetensors`;
    const tensors = Array.from({ length: 8 }, (_, k) => ({
      name: `t${k}`,
      dtype: "F32" as const,
      shape: [64],
      data: Array.from({ length: 64 }, (_, i) => k * 1000 + i),
    }));
    await writeSafetensors(path, tensors);
    const file = await SafetensorsFile.open(path, { chunkBytes: 16 });
    try {
      const read = await Promise.all(tensors.map((t) => file.readTensor(t.name, { as: "f32" })));
      read.forEach((values, k) => assert.deepEqual([...values], tensors[k].data));
    } finally {
      file.close();
    }
  });
});

// ---- hardening: each broken file gives a CheckpointError naming the file (and tensor) ----

/** Writes `bytes` to a file and asserts that opening it fails with a message matching all of `parts`. */
async function assertOpenFails(dir: string, bytes: Uint8Array, parts: (string | RegExp)[]) {
  const path = `${dir}/bad.safetensors`;
  await Deno.writeFile(path, bytes);
  await assert.rejects(SafetensorsFile.open(path), (e: unknown) => {
    assert.ok(e instanceof CheckpointError, `expected a CheckpointError, got ${e}`);
    assert.ok(e.message.includes(path), `message does not name the file: ${e.message}`);
    for (const part of parts) {
      assert.ok(
        typeof part === "string" ? e.message.includes(part) : part.test(e.message),
        `message lacks ${part}: ${e.message}`,
      );
    }
    return true;
  });
}

const entry = (dtype: string, shape: number[], begin: number, end: number) => ({
  dtype,
  shape,
  data_offsets: [begin, end],
});

Deno.test("hardening: files too short for a header", async () => {
  await withTempDir(async (dir) => {
    await assertOpenFails(dir, new Uint8Array(0), ["fewer than the 8-byte"]);
    await assertOpenFails(dir, new Uint8Array(5), ["has 5 bytes"]);
    await assertOpenFails(dir, rawFile("{}", 0, 100), ["100-byte header", "truncated"]);
    await assertOpenFails(dir, rawFile("{}", 0, MAX_HEADER_BYTES + 1), ["more than the"]);
  });
});

Deno.test("hardening: headers that are not a JSON object of entries", async () => {
  await withTempDir(async (dir) => {
    await assertOpenFails(dir, rawFile("{not json", 0), ["not valid UTF-8 JSON"]);
    await assertOpenFails(dir, rawFile("", 0), ["not valid UTF-8 JSON"]);
    const invalidUtf8 = rawFile("{}", 0);
    invalidUtf8[8] = 0xff;
    await assertOpenFails(dir, invalidUtf8, ["not valid UTF-8 JSON"]);
    await assertOpenFails(dir, rawFile("[1, 2]", 0), ["not an object"]);
    await assertOpenFails(dir, rawFile("null", 0), ["not an object"]);
    await assertOpenFails(dir, rawFile(`{"__metadata__": {"a": 1}}`, 0), ["__metadata__"]);
  });
});

Deno.test("hardening: entries with missing or mistyped fields name the tensor", async () => {
  await withTempDir(async (dir) => {
    const cases: [unknown, string][] = [
      [7, "is not an object"],
      [{ shape: [1], data_offsets: [0, 4] }, `no string "dtype"`],
      [{ dtype: 4, shape: [1], data_offsets: [0, 4] }, `no string "dtype"`],
      [{ dtype: "F32", data_offsets: [0, 4] }, `no "shape" array`],
      [{ dtype: "F32", shape: "1", data_offsets: [0, 4] }, `no "shape" array`],
      [{ dtype: "F32", shape: [1] }, `"data_offsets"`],
      [{ dtype: "F32", shape: [1], data_offsets: [0] }, `"data_offsets"`],
      [{ dtype: "F32", shape: [1], data_offsets: ["0", "4"] }, `"data_offsets"`],
      [{ dtype: "F32", shape: [1], data_offsets: [-4, 0] }, `"data_offsets"`],
      [entry("Q8", [1], 0, 1), "unknown dtype"],
      [entry("F32", [-1], 0, 4), "not all non-negative integers"],
      [entry("F32", [1.5], 0, 4), "not all non-negative integers"],
      [entry("F32", [1], 4, 0), "begin after end"],
      [entry("F32", [2, 3], 0, 20), "needs 24"],
    ];
    for (const [raw, what] of cases) {
      await assertOpenFails(dir, rawFile(JSON.stringify({ "layer.w": raw }), 64), [
        `"layer.w"`,
        what,
      ]);
    }
  });
});

Deno.test("hardening: overlapping ranges, offsets past the data, truncated files", async () => {
  await withTempDir(async (dir) => {
    const overlap = { a: entry("F32", [4], 0, 16), b: entry("F32", [2], 8, 16) };
    await assertOpenFails(dir, rawFile(JSON.stringify(overlap), 16), [`"a"`, `"b"`, "overlap"]);
    const past = { a: entry("F32", [4], 0, 16), b: entry("F16", [8], 16, 32) };
    await assertOpenFails(dir, rawFile(JSON.stringify(past), 20), [`"b"`, "truncated", "20 bytes"]);
    // A real file cut short: the header is intact and promises more data than there is.
    const path = `${dir}/whole.safetensors`;
    await writeSafetensors(path, [
      { name: "first", dtype: "F32", shape: [8], data: new Float32Array(8) },
      { name: "last", dtype: "F32", shape: [8], data: new Float32Array(8) },
    ]);
    const whole = await Deno.readFile(path);
    await assertOpenFails(dir, whole.subarray(0, whole.length - 5), [`"last"`, "truncated"]);
  });
});

Deno.test("hardening: unsupported dtypes, missing tensors, bad rows, closed files", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/mixed.safetensors`;
    const header = { ids: entry("I64", [2], 0, 16), w: entry("F32", [2, 2], 16, 32) };
    await Deno.writeFile(path, rawFile(JSON.stringify(header), 32));
    const file = await SafetensorsFile.open(path);
    await assert.rejects(
      file.readTensor("ids", { as: "f32" }),
      (e: Error) =>
        e instanceof CheckpointError && e.message.includes(path) &&
        e.message.includes(`"ids"`) && e.message.includes("unsupported dtype"),
    );
    await assert.rejects(
      file.readTensor("nope", { as: "f32" }),
      (e: Error) => e instanceof CheckpointError && e.message.includes(`"nope"`),
    );
    await assert.rejects(
      file.readTensor("w", { as: "f32", rows: [1, 2] }),
      (e: Error) => e instanceof RangeError && e.message.includes(`"w"`),
    );
    assert.deepEqual([...await file.readTensor("w", { as: "f32", rows: [1, 1] })], [0, 0]);
    file.close();
    await assert.rejects(
      file.readTensor("w", { as: "f32" }),
      (e: Error) => e instanceof CheckpointError && e.message.includes("closed"),
    );
  });
});

Deno.test("non-finite values are counted and can be refused on read", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/nan.safetensors`;
    const bad = [1, Number.NaN, 2, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 3];
    await writeSafetensors(path, [
      { name: "bad", dtype: "BF16", shape: [2, 3], data: bad },
      { name: "big", dtype: "F32", shape: [3], data: [1, 1e6, Number.NaN] },
      { name: "good", dtype: "F16", shape: [3], data: [1, 2, 3] },
    ]);
    const file = await SafetensorsFile.open(path, { chunkBytes: 4 });
    try {
      assert.deepEqual(await file.scanNonFinite("bad"), {
        file: path,
        tensor: "bad",
        count: 3,
        firstIndex: 1,
      });
      assert.equal((await file.scanNonFinite("good")).count, 0);
      assert.equal((await file.readTensor("good", { as: "f16", requireFinite: true })).length, 3);
      await assert.rejects(
        file.readTensor("bad", { as: "f32", requireFinite: true, rows: [1, 1] }),
        (e: Error) =>
          e instanceof CheckpointError && e.message.includes(path) &&
          e.message.includes(`"bad"`) && e.message.includes("2 non-finite") &&
          e.message.includes("the file itself"),
      );
      // 1e6 is finite in the file but overflows f16: the message says to read it as f32.
      await assert.rejects(
        file.readTensor("big", { as: "f16", requireFinite: true }),
        (e: Error) =>
          e instanceof CheckpointError && e.message.includes("2 non-finite") &&
          e.message.includes("as f32"),
      );
    } finally {
      file.close();
    }
  });
});

// ---- fuzzing the header parser ----

/** Parses `bytes` as a whole file; returns the header, or the CheckpointError it threw. */
function parseOrError(bytes: Uint8Array) {
  try {
    return parseSafetensorsHeader(bytes, bytes.length, "fuzz.safetensors");
  } catch (e) {
    if (e instanceof CheckpointError) return e;
    throw new Error(`the parser threw something other than a CheckpointError: ${e}`);
  }
}

/**
 * Checks what must hold whatever the input: the same answer twice, and a parsed header fits the
 * file. Returns the answer.
 */
function checkParse(bytes: Uint8Array) {
  const first = parseOrError(bytes);
  const second = parseOrError(bytes);
  if (first instanceof CheckpointError) {
    assert.ok(second instanceof CheckpointError && second.message === first.message);
    return first;
  }
  assert.deepEqual(second, first);
  for (const t of first.tensors.values()) {
    assert.ok(t.byteOffset >= first.dataOffset && t.byteOffset + t.byteLength <= bytes.length);
  }
  return first;
}

const DTYPE_SIZES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, I64: 8, U8: 1 };

/** A well-formed header (contiguous entries) and its data length. */
const validHeaderArb = fc.array(
  fc.tuple(
    fc.constantFrom(...Object.keys(DTYPE_SIZES)),
    fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }),
  ),
  { maxLength: 4 },
).map((specs) => {
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  let offset = 0;
  specs.forEach(([dtype, shape], i) => {
    const length = shape.reduce((a, d) => a * d, DTYPE_SIZES[dtype]);
    header[`t${i}`] = { dtype, shape, data_offsets: [offset, offset + length] };
    offset += length;
  });
  return { header, dataLength: offset };
});

/** Damage of the kinds real files show: a field replaced or dropped, a range moved, data cut. */
const garbageArb = fc.oneof(
  fc.jsonValue(),
  fc.constantFrom("F32", "BF16", "I64", "Q4", "f32", -1, 0.5, [], [-1], [2.5], [0, 1e30]),
  fc.array(fc.oneof(fc.integer(), fc.double(), fc.string()), { maxLength: 3 }),
  fc.tuple(fc.integer({ min: 0, max: 96 }), fc.integer({ min: 0, max: 96 })),
);
const mutationArb = fc.record({
  key: fc.oneof(fc.nat(4).map((i) => `t${i}`), fc.constant("__metadata__")),
  field: fc.constantFrom("dtype", "shape", "data_offsets", "entry"),
  remove: fc.boolean(),
  value: garbageArb,
  dataDelta: fc.integer({ min: -16, max: 16 }),
});

Deno.test("fuzz: damaged headers parse consistently or throw CheckpointError", () => {
  const outcomes = new Set<string>();
  fc.assert(
    fc.property(
      validHeaderArb,
      fc.array(mutationArb, { maxLength: 2 }),
      ({ header: generated, dataLength }, mutations) => {
        // fast-check replays generated values while shrinking, so damage a copy.
        const header = structuredClone(generated);
        for (const m of mutations) {
          const target = header[m.key] as Record<string, unknown> | undefined;
          if (m.field === "entry" || typeof target !== "object" || target === null) {
            if (m.remove) delete header[m.key];
            else header[m.key] = m.value;
          } else if (m.remove) delete target[m.field];
          else target[m.field] = m.value;
          dataLength = Math.max(0, dataLength + m.dataDelta);
        }
        const result = checkParse(rawFile(JSON.stringify(header), dataLength));
        outcomes.add(result instanceof CheckpointError ? "error" : "parsed");
      },
    ),
    { numRuns: 3000 },
  );
  // The generator must reach both sides, or the property says little.
  assert.deepEqual([...outcomes].toSorted(), ["error", "parsed"]);
});

Deno.test("fuzz: random JSON and random bytes with any declared length", () => {
  fc.assert(
    fc.property(
      fc.oneof(fc.json(), fc.string()),
      fc.integer({ min: 0, max: 64 }),
      fc.option(fc.nat(), { nil: undefined }),
      (text, dataLength, declared) => {
        checkParse(rawFile(text, dataLength, declared));
      },
    ),
    { numRuns: 1000 },
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      checkParse(bytes);
    }),
    { numRuns: 1000 },
  );
});

Deno.test("fuzz: bit flips and truncations of a valid file; a parsed header always reads", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/valid.safetensors`;
    await writeSafetensors(path, [
      { name: "model.embed.weight", dtype: "F32", shape: [4, 3], data: new Float32Array(12) },
      { name: "model.norm.weight", dtype: "BF16", shape: [3], data: [1, 2, 3] },
      { name: "lm_head.weight", dtype: "F16", shape: [2, 3], data: [1, 2, 3, 4, 5, 6] },
    ], { format: "pt" });
    const valid = await Deno.readFile(path);
    const mutated = `${dir}/mutated.safetensors`;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 7 })), {
          maxLength: 4,
        }),
        fc.option(fc.nat(valid.length), { nil: undefined }),
        async (flips, cut) => {
          const bytes = valid.slice(0, cut ?? valid.length);
          for (const [at, bit] of flips) if (at < bytes.length) bytes[at] ^= 1 << bit;
          checkParse(bytes);
          await Deno.writeFile(mutated, bytes);
          let file: SafetensorsFile;
          try {
            file = await SafetensorsFile.open(mutated, { chunkBytes: 8 });
          } catch (e) {
            assert.ok(e instanceof CheckpointError, `open threw ${e}`);
            return;
          }
          try {
            for (const name of file.names()) {
              if (["F32", "F16", "BF16"].includes(file.info(name).dtype)) {
                await file.readTensor(name, { as: "f32" });
                await file.scanNonFinite(name);
              }
            }
          } finally {
            file.close();
          }
        },
      ),
      { numRuns: 400 },
    );
  });
});
