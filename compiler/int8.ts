// Which int8 tensor-core kernels a plan uses, chosen from what an adapter reports (Dawn's
// subgroup-matrix configurations, subgroup sizes, features), or from the command line when no
// adapter is opened (`deno task compile --int8 [--int8-matrix 16x16x32]`). Pure: no device here.

import type { Int8Choice } from "./lower.ts";
import type { PlanInt8 } from "./plan.ts";
import type { DeviceInfo } from "../runtime/device.ts";
import { int8AttentionAccepts } from "../wgsl/int8_attention.ts";
import { INT8_FEATURES } from "../wgsl/int8_matmul.ts";

export type { Int8Choice };

/** Subgroup size the int8 kernels are laid out for (wgsl/int8_matmul.ts, int8_attention.ts). */
export const INT8_SUBGROUP_SIZE = 32;

/**
 * NVIDIA's choice (what Dawn reports on an H100: i8→i32 at 16×16×32 and 16×8×32, subgroups of
 * 32): the default of `deno task compile --int8` when no adapter is opened.
 */
export const NVIDIA_INT8: Int8Choice = { matrix: { m: 16, n: 16, k: 32 }, subgroupSize: 32 };

/**
 * The i8×i8→i32 shapes the kernels accept, best first: int8_attention takes M = 16, K = 32 and N of
 * 16 or 8; int8_matmul's tiles are whole 16-row, 32-column matrices in that case too.
 */
export const INT8_SHAPES: readonly Int8Choice["matrix"][] = [
  { m: 16, n: 16, k: 32 },
  { m: 16, n: 8, k: 32 },
];

/** Raised when an adapter cannot run the int8 kernels; the message names what it lacks and the fix. */
export class Int8UnavailableError extends Error {
  /** The error's name. */
  override name = "Int8UnavailableError";
}

/** What {@linkcode chooseInt8} reads of an adapter ({@linkcode DeviceInfo}'s fields). */
export type Int8Adapter =
  & Pick<
    DeviceInfo,
    "features" | "subgroupMinSize" | "subgroupMaxSize" | "subgroupMatrixConfigs"
  >
  & { description?: string };

/** Options of {@linkcode chooseInt8}. */
export interface ChooseInt8Options {
  /** Attention on the int8 kernel (default) or the f32 one. */
  attention?: "int8" | "f32";
  /** A shape asked for (`--int8-matrix`); it must be one the adapter offers. */
  matrix?: Int8Choice["matrix"];
}

const FIX = "run with --backend dawn on an NVIDIA GPU (Dawn's int8 subgroup matrices), " +
  "or drop --int8";

/**
 * The int8 choice for an adapter: i8×i8→i32 at 16×16×32 where offered, else 16×8×32, on subgroups
 * of exactly 32. Throws {@linkcode Int8UnavailableError} naming what the adapter lacks.
 */
export function chooseInt8(adapter: Int8Adapter, options: ChooseInt8Options = {}): Int8Choice {
  const name = adapter.description ? `the adapter "${adapter.description}"` : "the adapter";
  const fail = (why: string): never => {
    throw new Int8UnavailableError(`--int8: ${name} ${why}; ${FIX}`);
  };
  const features = adapter.features.map(String);
  const missing = INT8_FEATURES.filter((f) => !features.includes(f));
  if (missing.length) {
    fail(`lacks the feature${missing.length > 1 ? "s" : ""} ${missing.join(", ")}`);
  }
  const configs = adapter.subgroupMatrixConfigs ?? [];
  const i8 = configs.filter((c) => c.componentType === "i8" && c.resultComponentType === "i32");
  const offered = (s: Int8Choice["matrix"]) =>
    i8.some((c) => c.M === s.m && c.N === s.n && c.K === s.k);
  if (!INT8_SHAPES.some(offered)) {
    const list = configs.length
      ? configs.map((c) => `${c.componentType}→${c.resultComponentType} ${c.M}x${c.N}x${c.K}`)
        .join(", ")
      : "none";
    fail(
      `offers no i8→i32 subgroup matrix the kernels take (${
        INT8_SHAPES.map(shapeText).join(" or ")
      }; it offers ${list})`,
    );
  }
  let matrix = INT8_SHAPES.find(offered)!;
  if (options.matrix) {
    const asked = takenShape(options.matrix);
    if (!offered(asked)) {
      fail(`offers no i8→i32 ${shapeText(asked)} subgroup matrix (leave --int8-matrix out)`);
    }
    matrix = asked;
  }
  const min = adapter.subgroupMinSize, max = adapter.subgroupMaxSize;
  if (max !== INT8_SUBGROUP_SIZE || (min !== 0 && min !== INT8_SUBGROUP_SIZE)) {
    fail(
      `runs subgroups of ${
        max ? (min && min !== max ? `${min} to ${max}` : String(max)) : "an unreported size"
      }, and the int8 kernels are laid out for subgroups of exactly ${INT8_SUBGROUP_SIZE}`,
    );
  }
  return { matrix: { ...matrix }, subgroupSize: INT8_SUBGROUP_SIZE, ...attentionOf(options) };
}

/**
 * The choice without an adapter (`deno task compile`): `matrix` (default NVIDIA's 16×16×32) on
 * subgroups of 32. Throws {@linkcode Int8UnavailableError} for a shape the kernels do not take.
 */
export function int8Without(options: ChooseInt8Options = {}): Int8Choice {
  const matrix = takenShape(options.matrix ?? NVIDIA_INT8.matrix);
  return { matrix: { ...matrix }, subgroupSize: INT8_SUBGROUP_SIZE, ...attentionOf(options) };
}

/** Parses `16x16x32` (M×N×K); throws {@linkcode Int8UnavailableError} on anything else. */
export function parseMatrix(text: string): Int8Choice["matrix"] {
  const m = /^(\d+)[x×](\d+)[x×](\d+)$/i.exec(text.trim());
  if (!m) {
    throw new Int8UnavailableError(`--int8-matrix must be MxNxK like 16x16x32, got "${text}"`);
  }
  return { m: Number(m[1]), n: Number(m[2]), k: Number(m[3]) };
}

/**
 * Checks that an adapter can run a plan compiled with `choice` (its shape offered, subgroups of its
 * size); throws {@linkcode Int8UnavailableError} naming the mismatch and the fix otherwise.
 */
export function checkInt8(choice: PlanInt8, adapter: Int8Adapter): void {
  const best = chooseInt8(adapter);
  const offered = (adapter.subgroupMatrixConfigs ?? []).some((c) =>
    c.componentType === "i8" && c.resultComponentType === "i32" &&
    sameShape({ m: c.M, n: c.N, k: c.K }, choice.matrix)
  );
  if (!offered || best.subgroupSize !== choice.subgroupSize) {
    throw new Int8UnavailableError(
      `the plan was compiled for ${int8Text(choice)}, which ${
        adapter.description ? `the adapter "${adapter.description}"` : "this adapter"
      } cannot run (it offers ${
        shapeText(best.matrix)
      } on subgroups of ${best.subgroupSize}); recompile it with --int8 --backend dawn here`,
    );
  }
}

/** A choice in one line, such as `int8 16x16x32 on subgroups of 32, attention f32`. */
export function int8Text(choice: PlanInt8 | null | undefined): string {
  if (!choice) return "off";
  return `int8 ${shapeText(choice.matrix)} on subgroups of ${choice.subgroupSize}, attention ` +
    `${choice.attention ?? "f32"}`;
}

function attentionOf(options: ChooseInt8Options): { attention: "int8" | "f32" } {
  return { attention: options.attention ?? "int8" };
}

// `matrix` when the kernels take it; else the refusal of --int8-matrix.
function takenShape(matrix: Int8Choice["matrix"]): Int8Choice["matrix"] {
  if (INT8_SHAPES.some((s) => sameShape(s, matrix))) return matrix;
  throw new Int8UnavailableError(
    `--int8-matrix ${shapeText(matrix)}: the kernels take ${
      INT8_SHAPES.map(shapeText).join(" or ")
    }`,
  );
}

function shapeText(s: Int8Choice["matrix"]): string {
  return `${s.m}x${s.n}x${s.k}`;
}

function sameShape(a: Int8Choice["matrix"], b: Int8Choice["matrix"]): boolean {
  return a.m === b.m && a.n === b.n && a.k === b.k;
}

/**
 * Whether prefill attention runs on int8_attention: asked for (`attention: "int8"`), and the
 * kernel takes the head size and the matrix shape; else the f32 kernel.
 */
export function int8Attention(headDim: number, choice: Int8Choice | null | undefined): boolean {
  return choice?.attention === "int8" &&
    int8AttentionAccepts(headDim, choice.matrix, choice.subgroupSize);
}
