// `deno task bench prefill`'s table: f32 runs on Deno's WebGPU keep the fourteen columns of the
// recorded tables; runs on Dawn or with int8 kernels add the backend and kernels, and the int8
// logits' error against the same strategy's f32 plan.

import { assert } from "../../compiler/_deps.ts";
import { NVIDIA_INT8 } from "../../compiler/int8.ts";
import { NVLINK, PCIE } from "../../runtime/timing.ts";
import { markdownTable, type PrefillRecord } from "../../bench/prefill.ts";

function record(over: Partial<PrefillRecord>): PrefillRecord {
  return {
    strategy: "dense",
    hosts: 1,
    tokens: 32768,
    layers: 32,
    backend: "deno",
    int8: null,
    params: {},
    wallMs: 1000,
    hostMs: [900],
    critical: {
      [NVLINK.name]: { totalMs: 900, computeMs: 900, transferMs: 0 },
      [PCIE.name]: { totalMs: 900, computeMs: 900, transferMs: 0 },
    },
    flops: [1e15],
    errorVsDense: 0,
    errorVsF32: null,
    ...over,
  };
}

const cells = (line: string) => line.split("|").slice(1, -1).map((c) => c.trim());

Deno.test("bench prefill table: f32 on Deno keeps its columns", () => {
  const lines = markdownTable([record({})]).split("\n");
  assert.equal(cells(lines[0]).length, 14);
  assert.equal(cells(lines[2]).length, 14);
});

Deno.test("bench prefill table: int8 on Dawn says so and reports the error against f32", () => {
  const int8 = { ...NVIDIA_INT8, attention: "int8" as const };
  const lines = markdownTable([
    record({ backend: "dawn", int8, errorVsF32: 2.5e-2 }),
    record({ backend: "dawn", int8, strategy: "apb", hosts: 8, errorVsDense: 0.1 }),
  ]).split("\n");
  assert.equal(cells(lines[0]).length, 16);
  assert.deepEqual(cells(lines[0]).slice(14), ["backend, kernels", "int8 logits err vs f32"]);
  assert.deepEqual(cells(lines[2]).slice(14), [
    "dawn, int8 16x16x32, attention int8",
    "2.5e-2",
  ]);
  assert.equal(cells(lines[3])[15], "–");
  for (const line of lines) assert.equal(cells(line).length, 16, line);
});
