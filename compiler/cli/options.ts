// Command-line options shared by compile, run, plan and the benchmarks, and their translation
// into a strategy and lowering options.

import { parseArgs } from "../_deps.ts";
import type { Int8Choice, LowerOptions } from "../lower.ts";
import { chooseInt8, type Int8Adapter, int8Without, parseMatrix } from "../int8.ts";
import { strategyByName } from "../strategies/mod.ts";
import type { Strategy } from "../strategies/strategy.ts";
import { loadStrategyFile, UsageError } from "./model_file.ts";
import type { StorageType } from "../../wgsl/kernel.ts";

/** The option table for node:util parseArgs. */
export const OPTIONS = {
  out: { type: "string" },
  strategy: { type: "string", default: "dense" },
  hosts: { type: "string" },
  tokens: { type: "string" },
  query: { type: "string" },
  generate: { type: "string" },
  seed: { type: "string" },
  check: { type: "boolean", default: false },
  anchor: { type: "string" },
  passing: { type: "string" },
  scorer: { type: "string" },
  "query-offset": { type: "string" },
  "no-query-in-anchor": { type: "boolean", default: false },
  parity: { type: "boolean", default: false },
  storage: { type: "string" },
  kv: { type: "string" },
  "device-per-host": { type: "boolean", default: false },
  backend: { type: "string" },
  weights: { type: "string" },
  "retaining-heads": { type: "string" },
  "prompt-file": { type: "string" },
  svg: { type: "string" },
  json: { type: "string" },
  lengths: { type: "string" },
  strategies: { type: "string" },
  layers: { type: "string" },
  model: { type: "string" },
  eval: { type: "string" },
  samples: { type: "string" },
  help: { type: "boolean", short: "h", default: false },
  "query-form": { type: "string" },
  tune: { type: "boolean", default: false },
  rows: { type: "string" },
  int8: { type: "boolean", default: false },
  "int8-matrix": { type: "string" },
  "int8-attention": { type: "string" },
  "no-int8-reference": { type: "boolean", default: false },
} as const;

/** Parsed options. */
export type Options = ReturnType<typeof parse>["values"];

/** Parses `args`; unknown options are errors that name the option. */
export function parse(args: string[]) {
  try {
    return parseArgs({ args, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** An integer option, or `fallback`; rejects junk with a message naming the option. */
export function int(values: Options, name: keyof Options, fallback: number): number;
export function int(values: Options, name: keyof Options): number | undefined;
export function int(values: Options, name: keyof Options, fallback?: number): number | undefined {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const text = String(raw).toLowerCase().replace(/_/g, "");
  const m = /^(\d+)(k?)$/.exec(text);
  if (!m) throw new UsageError(`--${name} must be a whole number (like 4096 or 4k), got "${raw}"`);
  return Number(m[1]) * (m[2] ? 1024 : 1);
}

/** A comma-separated list of positive whole numbers (like `8k,32k`) given as option `what`. */
export function intList(text: string, what: string): number[] {
  return text.split(",").map((part) => {
    const v = int({ [what]: part.trim() } as unknown as Options, what as keyof Options);
    if (!v) throw new UsageError(`--${what}: "${part}" is not a positive number`);
    return v;
  });
}

/** The storage type option `name` (f32 or f16). */
export function storage(values: Options, name: "storage" | "kv"): StorageType | undefined {
  const v = values[name];
  if (v === undefined) return undefined;
  if (v !== "f32" && v !== "f16") throw new UsageError(`--${name} must be f32 or f16, got "${v}"`);
  return v;
}

/**
 * The strategy the options name (built in, or a file exporting one). `known` holds what the run
 * learned elsewhere, such as the retaining heads' width from their checkpoint.
 */
export async function strategyFrom(
  values: Options,
  known: { retainingHidden?: number } = {},
): Promise<Strategy> {
  const passing = values.passing?.includes(",")
    ? values.passing.split(",").map((p) => int({ passing: p } as Options, "passing")!)
    : int(values, "passing");
  const scorer = values.scorer;
  if (scorer !== undefined && !["retaining", "query", "random"].includes(scorer)) {
    throw new UsageError(`--scorer must be retaining, query or random, got "${scorer}"`);
  }
  const options = {
    anchor: int(values, "anchor"),
    passing,
    scorer: scorer as "retaining" | "query" | "random" | undefined,
    queryOffset: int(values, "query-offset"),
    queryInAnchor: values["no-query-in-anchor"] ? false : undefined,
    parity: values.parity || undefined,
    seed: int(values, "seed"),
    retainingHidden: known.retainingHidden,
  };
  const clean = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
  const name = values.strategy ?? "dense";
  if (name.endsWith(".ts") || name.includes("/")) return await loadStrategyFile(name, clean);
  return strategyByName(name, clean);
}

/**
 * Lowering options from the command line. `adapter` is the opened device's info, where the
 * command opened one: the int8 choice of --int8 comes from it (see {@linkcode int8From}).
 */
export function lowerOptionsFrom(
  values: Options,
  defaults: { tokens: number },
  adapter?: Int8Adapter,
): LowerOptions {
  const query = int(values, "query", 0);
  const generate = int(values, "generate", 8);
  const options: LowerOptions = {
    hosts: int(values, "hosts", 1),
    contextTokens: int(values, "tokens", defaults.tokens),
    queryTokens: query,
    extendRows: Math.max(query, 1),
    maxNewTokens: query + generate,
  };
  const weights = storage(values, "storage");
  const kv = storage(values, "kv");
  if (weights) options.weights = weights;
  if (kv) options.kv = kv;
  const int8 = int8From(values, adapter);
  if (int8) options.int8 = int8;
  return options;
}

/** The one-line refusal of --int8 on Deno's WebGPU. */
export const INT8_NEEDS_DAWN = "--int8 needs --backend dawn: the int8 kernels run on Dawn's " +
  "subgroup matrices (add --backend dawn on an NVIDIA GPU, or drop --int8)";

/**
 * The WebGPU implementation of --backend: Deno's own ("deno", also spelt "gpu"; the default) or
 * Dawn's. --int8 without --backend dawn is refused with {@linkcode INT8_NEEDS_DAWN}.
 */
export function gpuBackend(values: Options): "deno" | "dawn" {
  const backend = values.backend ?? "deno";
  if (backend !== "deno" && backend !== "gpu" && backend !== "dawn") {
    throw new UsageError(`--backend must be deno (or gpu) or dawn, got "${backend}"`);
  }
  if (values.int8 && backend !== "dawn") throw new UsageError(INT8_NEEDS_DAWN);
  return backend === "dawn" ? "dawn" : "deno";
}

/**
 * The int8 choice of --int8, --int8-matrix and --int8-attention, or null without --int8. With an
 * opened adapter it is the adapter's (i8→i32 16×16×32, else 16×8×32, on subgroups of 32; an
 * --int8-matrix must be one it offers); without one (`deno task compile`), --int8-matrix or
 * NVIDIA's 16×16×32 on subgroups of 32.
 */
export function int8From(values: Options, adapter?: Int8Adapter): Int8Choice | null {
  const matrixText = values["int8-matrix"];
  const attention = values["int8-attention"];
  if (!values.int8) {
    const stray = matrixText !== undefined ? "--int8-matrix" : attention ? "--int8-attention" : "";
    if (stray) throw new UsageError(`${stray} needs --int8`);
    return null;
  }
  if (attention !== undefined && attention !== "int8" && attention !== "f32") {
    throw new UsageError(`--int8-attention must be int8 or f32, got "${attention}"`);
  }
  const options = {
    attention: attention as "int8" | "f32" | undefined,
    matrix: matrixText === undefined ? undefined : parseMatrix(matrixText),
  };
  return adapter ? chooseInt8(adapter, options) : int8Without(options);
}
