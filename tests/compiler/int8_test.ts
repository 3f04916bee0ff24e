// The int8 choice from an adapter's report (compiler/int8.ts): NVIDIA's H100 gets 16×16×32 on
// subgroups of 32, an adapter with 16×8×32 only gets that, and an adapter without i8 matrices, the
// features or subgroups of 32 is refused with a message naming what it lacks and the fix. The
// command line's --int8 options, the plan's optional "int8" field, and run/bench refusing --int8
// without --backend dawn in one line.

import { assert } from "../../compiler/_deps.ts";
import {
  checkInt8,
  chooseInt8,
  type Int8Adapter,
  int8Text,
  Int8UnavailableError,
  int8Without,
  NVIDIA_INT8,
  parseMatrix,
} from "../../compiler/int8.ts";
import { UsageError } from "../../compiler/cli/model_file.ts";
import {
  gpuBackend,
  INT8_NEEDS_DAWN,
  int8From,
  lowerOptionsFrom,
  parse,
} from "../../compiler/cli/options.ts";
import { lower } from "../../compiler/lower.ts";
import { llama } from "../../compiler/models/llama.ts";
import { validatePlan } from "../../compiler/plan.ts";
import { strategyByName } from "../../compiler/strategies/mod.ts";
import tiny from "../../examples/tiny.ts";

const FEATURES = [
  "shader-f16",
  "timestamp-query",
  "subgroups",
  "chromium-experimental-subgroup-matrix",
] as GPUFeatureName[];

const i8 = (M: number, N: number, K: number) => ({
  componentType: "i8",
  resultComponentType: "i32",
  M,
  N,
  K,
});
const f16 = (M: number, N: number, K: number) => ({
  componentType: "f16",
  resultComponentType: "f32",
  M,
  N,
  K,
});

/** What Dawn reports on the H100 (runtime/dawn.ts). */
const H100: Int8Adapter = {
  description: "NVIDIA H100 80GB HBM3",
  features: FEATURES,
  subgroupMinSize: 32,
  subgroupMaxSize: 32,
  subgroupMatrixConfigs: [f16(16, 16, 16), f16(16, 8, 16), i8(16, 16, 32), i8(16, 8, 32)],
};

/** The Int8UnavailableError `f` throws. */
function thrown(f: () => unknown): Error {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof Int8UnavailableError, String(e));
    return e;
  }
  throw new Error("did not throw");
}

/** Asserts that `f` throws a `kind` whose message holds `text`. */
function throwsWith(f: () => unknown, kind: new (m: string) => Error, text: string): void {
  assert.throws(f, (e: unknown) => e instanceof kind && e.message.includes(text));
}

function refusal(adapter: Int8Adapter, pattern: RegExp): void {
  const e = thrown(() => chooseInt8(adapter));
  assert.match(e.message, pattern);
  assert.match(e.message, /--backend dawn on an NVIDIA GPU.*drop --int8/);
  assert.ok(!e.message.includes("\n"), "one line");
}

Deno.test("int8 choice: the H100 gets i8 16x16x32 on subgroups of 32, attention int8", () => {
  assert.deepEqual(chooseInt8(H100), { ...NVIDIA_INT8, attention: "int8" });
  assert.deepEqual(chooseInt8(H100, { attention: "f32" }).attention, "f32");
  // Order of the report does not matter: N = 16 is preferred wherever it is listed.
  const reversed = { ...H100, subgroupMatrixConfigs: [...H100.subgroupMatrixConfigs!].reverse() };
  assert.deepEqual(chooseInt8(reversed).matrix, { m: 16, n: 16, k: 32 });
  // Asked for the narrower shape, it gets it.
  assert.deepEqual(chooseInt8(H100, { matrix: { m: 16, n: 8, k: 32 } }).matrix, {
    m: 16,
    n: 8,
    k: 32,
  });
  // The min size is unreported (0) on some adapters: the max decides.
  assert.equal(chooseInt8({ ...H100, subgroupMinSize: 0 }).subgroupSize, 32);
});

Deno.test("int8 choice: an adapter with 16x8x32 only gets N = 8", () => {
  const narrow = { ...H100, subgroupMatrixConfigs: [f16(16, 16, 16), i8(16, 8, 32)] };
  assert.deepEqual(chooseInt8(narrow).matrix, { m: 16, n: 8, k: 32 });
  const e = thrown(() => chooseInt8(narrow, { matrix: { m: 16, n: 16, k: 32 } }));
  assert.match(e.message, /no i8→i32 16x16x32/);
});

Deno.test("int8 choice: no i8 matrices, wrong i8 shapes, or u8 are refused", () => {
  refusal(
    { ...H100, subgroupMatrixConfigs: [f16(16, 16, 16)] },
    /offers no i8→i32 subgroup matrix.*16x16x32 or 16x8x32.*it offers f16→f32 16x16x16/,
  );
  refusal({ ...H100, subgroupMatrixConfigs: [i8(8, 8, 32)] }, /it offers i8→i32 8x8x32/);
  refusal(
    {
      ...H100,
      subgroupMatrixConfigs: [{
        ...i8(16, 16, 32),
        componentType: "u8",
        resultComponentType: "u32",
      }],
    },
    /it offers u8→u32 16x16x32/,
  );
  refusal({ ...H100, subgroupMatrixConfigs: [] }, /it offers none/);
  refusal({ ...H100, subgroupMatrixConfigs: undefined }, /it offers none/);
});

Deno.test("int8 choice: missing features (Deno's WebGPU) are named", () => {
  // What Deno's own backend reports: no subgroup matrices at all.
  refusal(
    {
      description: "NVIDIA H100",
      features: ["shader-f16", "subgroups"] as GPUFeatureName[],
      subgroupMinSize: 32,
      subgroupMaxSize: 32,
    },
    /"NVIDIA H100" lacks the feature chromium-experimental-subgroup-matrix/,
  );
  refusal(
    { ...H100, features: ["shader-f16"] as GPUFeatureName[] },
    /lacks the features subgroups, chromium-experimental-subgroup-matrix/,
  );
});

Deno.test("int8 choice: subgroups other than exactly 32 are refused", () => {
  refusal({ ...H100, subgroupMinSize: 64, subgroupMaxSize: 64 }, /subgroups of 64.*exactly 32/);
  refusal({ ...H100, subgroupMinSize: 16, subgroupMaxSize: 16 }, /subgroups of 16/);
  refusal({ ...H100, subgroupMinSize: 8, subgroupMaxSize: 32 }, /subgroups of 8 to 32/);
  refusal({ ...H100, subgroupMinSize: 0, subgroupMaxSize: 0 }, /an unreported size/);
});

Deno.test("int8 without an adapter: NVIDIA's default, --int8-matrix, and bad shapes", () => {
  assert.deepEqual(int8Without(), { ...NVIDIA_INT8, attention: "int8" });
  assert.deepEqual(int8Without({ matrix: parseMatrix("16x8x32") }).matrix, { m: 16, n: 8, k: 32 });
  assert.deepEqual(parseMatrix("16×16×32"), { m: 16, n: 16, k: 32 });
  throwsWith(() => parseMatrix("16x16"), Int8UnavailableError, "MxNxK");
  thrown(() => int8Without({ matrix: { m: 8, n: 8, k: 8 } }));
  assert.equal(
    int8Text(int8Without({ attention: "f32" })),
    "int8 16x16x32 on subgroups of 32, attention f32",
  );
  assert.equal(int8Text(null), "off");
});

Deno.test("int8 of a plan: checked against the adapter that runs it", () => {
  checkInt8({ ...NVIDIA_INT8, attention: "int8" }, H100);
  const narrow = { ...H100, subgroupMatrixConfigs: [i8(16, 8, 32)] };
  const e = thrown(() => checkInt8(NVIDIA_INT8, narrow));
  assert.match(e.message, /compiled for int8 16x16x32.*offers 16x8x32.*recompile/);
});

Deno.test("int8 command line: --int8, --int8-matrix, --int8-attention", () => {
  const values = (args: string[]) => parse(args).values;
  assert.equal(int8From(values([])), null);
  assert.deepEqual(int8From(values(["--int8"])), { ...NVIDIA_INT8, attention: "int8" });
  assert.deepEqual(int8From(values(["--int8", "--int8-attention", "f32"]))!.attention, "f32");
  assert.deepEqual(int8From(values(["--int8", "--int8-matrix", "16x8x32"]))!.matrix.n, 8);
  // With an adapter, the adapter decides.
  const narrow = { ...H100, subgroupMatrixConfigs: [i8(16, 8, 32)] };
  assert.deepEqual(int8From(values(["--int8"]), narrow)!.matrix.n, 8);
  thrown(() => int8From(values(["--int8"]), { ...H100, features: [] }));
  throwsWith(() => int8From(values(["--int8-matrix", "16x16x32"])), UsageError, "needs --int8");
  throwsWith(() => int8From(values(["--int8-attention", "f32"])), UsageError, "needs --int8");
  throwsWith(
    () => int8From(values(["--int8", "--int8-attention", "f16"])),
    UsageError,
    "int8 or f32",
  );
  assert.deepEqual(lowerOptionsFrom(values(["--int8"]), { tokens: 64 }, H100).int8, {
    ...NVIDIA_INT8,
    attention: "int8",
  });
  assert.equal(lowerOptionsFrom(values([]), { tokens: 64 }).int8, undefined);
});

Deno.test("int8 command line: --int8 without --backend dawn is refused in one line", () => {
  const values = (args: string[]) => parse(args).values;
  assert.equal(gpuBackend(values([])), "deno");
  assert.equal(gpuBackend(values(["--backend", "gpu"])), "deno");
  assert.equal(gpuBackend(values(["--backend", "dawn", "--int8"])), "dawn");
  throwsWith(() => gpuBackend(values(["--int8"])), UsageError, INT8_NEEDS_DAWN);
  throwsWith(() => gpuBackend(values(["--int8", "--backend", "deno"])), UsageError, "dawn");
  throwsWith(() => gpuBackend(values(["--backend", "metal"])), UsageError, "--backend");
  assert.ok(!INT8_NEEDS_DAWN.includes("\n"));
});

Deno.test("plan: lowering records the int8 choice as lowered; the field is validated", () => {
  const options = { contextTokens: 64, int8: { ...NVIDIA_INT8, attention: "int8" as const } };
  // A head size int8_attention takes (32): the choice as asked.
  const wide = llama({ ...tiny.config, headDim: 32 });
  const plan = lower(wide, strategyByName("dense"), options);
  const loaded = validatePlan(JSON.parse(JSON.stringify(plan)));
  assert.deepEqual(loaded.int8, options.int8);
  // The tiny model's head size 16 keeps attention in f32, and the plan says so.
  assert.equal(lower(tiny, strategyByName("dense"), options).int8!.attention, "f32");
  const f32Attention = { ...NVIDIA_INT8, attention: "f32" as const };
  assert.deepEqual(
    lower(wide, strategyByName("dense"), { contextTokens: 64, int8: f32Attention }).int8,
    f32Attention,
  );
  // An f32 plan has none, and still loads.
  const f32 = lower(tiny, strategyByName("dense"), { contextTokens: 64 });
  assert.equal(validatePlan(JSON.parse(JSON.stringify(f32))).int8, undefined);
  const broken = { ...JSON.parse(JSON.stringify(plan)), int8: { matrix: { m: 16 } } };
  throwsWith(() => validatePlan(broken), Error, '"int8" must hold');
});

async function cli(...args: string[]) {
  return await deno("../../compiler/cli/main.ts", ...args);
}

async function deno(file: string, ...args: string[]) {
  const main = new URL(file, import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr).trim() };
}

Deno.test("CLI: run and bench refuse --int8 without --backend dawn, exit 2, one line", async () => {
  const tinyFile = new URL("../../examples/tiny.ts", import.meta.url).pathname;
  for (const args of [["run", tinyFile, "--int8"], ["bench", "prefill", "--int8"]]) {
    const { code, stderr } = await cli(...args);
    assert.equal(code, 2, args.join(" "));
    assert.equal(stderr, `error: ${INT8_NEEDS_DAWN}`);
  }
  // bench/main.ts, the GPU machine's entry, passes the flags through and says the same.
  const bench = await deno("../../bench/main.ts", "prefill", "--int8", "--model", "tiny");
  assert.equal(bench.code, 2);
  assert.equal(bench.stderr, `error: ${INT8_NEEDS_DAWN}`);
});

Deno.test("CLI: compile --int8 records NVIDIA's choice in plan.json", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const tinyFile = new URL("../../examples/tiny.ts", import.meta.url).pathname;
    const { code } = await cli(
      "compile",
      tinyFile,
      "--tokens",
      "64",
      "--int8",
      "--int8-matrix",
      "16x8x32",
      "--int8-attention",
      "f32",
      "--out",
      dir,
    );
    assert.equal(code, 0);
    const plan = JSON.parse(await Deno.readTextFile(`${dir}/plan.json`));
    assert.deepEqual(plan.int8, {
      matrix: { m: 16, n: 8, k: 32 },
      subgroupSize: 32,
      attention: "f32",
    });
    const run = await cli("run", dir);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /compiled with --int8.*run it with --backend dawn/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
