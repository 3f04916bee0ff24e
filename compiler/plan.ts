// The plan: plain, versioned JSON that says, for every host, which buffers exist and which kernel
// dispatches and transfers run in which phase. The runtime reads nothing else.

import type { ModelConfig, RopeConfig } from "./config.ts";
import type { ParamInit } from "./graph.ts";
import type { Segment } from "./strategies/strategy.ts";
import type { ElementType, StorageType } from "../wgsl/kernel.ts";

/** Identifies the file format. */
export const PLAN_FORMAT = "apb-webgpu-plan";
/**
 * Bumped on every incompatible change. 2: int8 attention steps read K/V that a kv_quantize step
 * wrote (bindings codes and scales) instead of the caches.
 */
export const PLAN_VERSION = 2;

/**
 * A size: a number, or (in the extend program) an expression over run-time variables, e.g.
 * "t" (rows of this call), "past" (rows appended before it), "t-1", "keep+past".
 */
export type Expr = number | string;

/** Names of a plan's programs. */
export type ProgramName = "setup" | "prefill" | "extend";

/** A weight tensor and the buffer that holds it. */
export interface WeightDecl {
  /** Hugging Face name. */
  name: string;
  /** Shape. */
  shape: number[];
  /** Buffer id. */
  buffer: string;
  /** Seeded initialisation when no checkpoint provides it. */
  init: ParamInit;
  /** Seed stream of this tensor (its index). */
  seed: number;
  /** Where a checkpoint would provide it: the model, or APB retaining heads. */
  source: "model" | "retaining";
  /**
   * Rows [start, count) of the tensor's first dimension this buffer holds, when the tensor is
   * split because it is larger than one binding may be; absent for a whole tensor.
   */
  rows?: [start: number, count: number];
}

/** What a buffer holds. */
export type BufferRole =
  | "weight"
  | "activation"
  | "cache"
  | "input"
  | "output"
  | "table"
  | "exchange";

/** Contents the runtime computes for a buffer when it is created. */
export type BufferFill = { kind: "rope"; rope: RopeConfig; headDim: number; positions: number };

/** A GPU buffer. */
export interface BufferDecl {
  /** Unique id, e.g. "h2.k7". */
  id: string;
  /** Host that owns it, or null for weights and tables every host reads. */
  host: number | null;
  /** Element type. */
  elem: ElementType;
  /** Number of elements. */
  elements: number;
  /** What it holds. */
  role: BufferRole;
  /** Contents computed at creation. */
  fill?: BufferFill;
}

/** A kernel specialisation. */
export interface KernelDecl {
  /** Family name (a key of the wgsl registry). */
  family: string;
  /** The family's spec. */
  spec: unknown;
  /** File of its WGSL, relative to the plan. */
  file: string;
}

/** One dispatch. */
export interface Step {
  /** Kernel id. */
  kernel: string;
  /** Sizes for the family's params and dispatch. */
  sizes: Record<string, Expr>;
  /** Buffer id by binding name. */
  bind: Record<string, string>;
  /** What it computes, for listings. */
  label: string;
}

/** A strided copy of rows between hosts' buffers (a piece of a collective). */
export interface Transfer {
  /** Source host. */
  from: number;
  /** Destination host. */
  to: number;
  /** Source buffer id. */
  src: string;
  /** Destination buffer id. */
  dst: string;
  /** Element type of both. */
  elem: ElementType;
  /** Rows copied. */
  rows: Expr;
  /** Elements per row copied. */
  cols: number;
  /** Elements between source rows. */
  srcStride: number;
  /** Element offset of the first source row. */
  srcOffset: Expr;
  /** Elements between destination rows. */
  dstStride: number;
  /** Element offset of the first destination row. */
  dstOffset: Expr;
  /** What it moves, for listings. */
  label: string;
}

/**
 * Work between two synchronisation points: transfers first, then each host's steps. Hosts run
 * their steps in parallel; the slowest bounds the phase.
 */
export interface Phase {
  /** Name, e.g. "layer 3 attention". */
  name: string;
  /** Layer it belongs to, if one. */
  layer: number | null;
  /** Transfers that must finish before the steps. */
  transfers: Transfer[];
  /** Whether the transfers overlap the previous phase's compute (ring attention). */
  overlapPrevious: boolean;
  /** Steps by host. */
  steps: Step[][];
}

/** Where a program leaves logits. */
export interface LogitsOutput {
  /** Host holding them. */
  host: number;
  /** Buffer of [rows, vocab] f32 logits. */
  logits: string;
  /** Buffer of [rows] u32 argmax ids. */
  argmax: string;
  /** Rows. */
  rows: Expr;
  /** For prefill: global token index of each run of rows, in row order. */
  tokens: { token: number; count: number }[] | null;
}

/** A program: setup (once), prefill (the context) or extend (new tokens over the cache). */
export interface Program {
  /** Phases in order. */
  phases: Phase[];
  /** Logits it produces. */
  logits: LogitsOutput[];
}

/** A host: its rows, what it keeps, its input buffers. */
export interface HostDecl {
  /** Local rows in prefill, in order. */
  segments: Segment[];
  /** Rows in prefill. */
  rows: number;
  /** Rows [start, end) of its cache kept after prefill. */
  keep: [number, number];
  /** Whether extend appends new tokens' KV here (the last host). */
  appends: boolean;
  /** Rows of cache available beyond `keep[1]` for appended tokens. */
  appendCapacity: number;
  /** Token id buffer. */
  ids: string;
  /** Position buffer. */
  positions: string;
}

/**
 * The int8 tensor-core kernels a plan was lowered for (`LowerOptions.int8`): the i8×i8→i32
 * subgroup-matrix shape and subgroup size, taken from the adapter, and attention's kind.
 */
export interface PlanInt8 {
  /** Subgroup-matrix shape: left M×K, right K×N. */
  matrix: { m: number; n: number; k: number };
  /** Subgroup size the kernels are laid out for. */
  subgroupSize: number;
  /** Attention on int8_attention or the f32 kernel (absent: "f32"). */
  attention?: "int8" | "f32";
}

/** The whole plan. */
export interface Plan {
  /** Always {@linkcode PLAN_FORMAT}. */
  format: string;
  /** Always {@linkcode PLAN_VERSION} for plans this code reads. */
  version: number;
  /** The model. */
  model: { name: string; config: ModelConfig; parameters: number; graph: string };
  /** The strategy. */
  strategy: {
    name: string;
    hosts: number;
    params: Record<string, unknown>;
    communication: { pattern: string; overlapSteps: boolean };
    parity: boolean;
  };
  /** Shape it was lowered for. */
  shape: {
    contextTokens: number;
    queryTokens: number;
    extendRows: number;
    maxNewTokens: number;
    prefillLogits: "all" | "last" | "none";
    extendLogits: "all" | "last";
    /** Rows each host processes at once outside attention. */
    chunkRows: number;
  };
  /** Storage types of weights and KV caches. */
  storage: { weights: StorageType; kv: StorageType };
  /**
   * The int8 kernels' choice, for plans lowered with `--int8` (absent or null: f32 kernels only).
   * Optional, so version-1 plans without it still load.
   */
  int8?: PlanInt8 | null;
  /** Weights. */
  weights: WeightDecl[];
  /** Kernels by id. */
  kernels: Record<string, KernelDecl>;
  /** Buffers. */
  buffers: BufferDecl[];
  /** Hosts. */
  hosts: HostDecl[];
  /**
   * Programs: `setup` runs once when a session opens (for example quantising weights), `prefill`
   * runs the context, `extend` runs new tokens over the cache.
   */
  programs: { setup: Program; prefill: Program; extend: Program };
}

/** Raised when a plan file is unreadable, from another version, or inconsistent. */
export class PlanFormatError extends Error {
  /** The error\'s name. */
  override name = "PlanFormatError";
}

/** Evaluates a size expression with run-time variables (integers, names, + − * and parentheses). */
export function evalExpr(e: Expr, vars: Record<string, number>): number {
  if (typeof e === "number") return e;
  let i = 0;
  const src = e.replace(/\s+/g, "");
  const fail = (why: string): never => {
    throw new PlanFormatError(`size expression "${e}": ${why}`);
  };
  const atom = (): number => {
    if (src[i] === "(") {
      i++;
      const v = sum();
      if (src[i++] !== ")") fail("missing )");
      return v;
    }
    if (src[i] === "-") {
      i++;
      return -atom();
    }
    const m = /^(\d+|[A-Za-z_]\w*)/.exec(src.slice(i));
    if (!m) return fail(`unexpected "${src.slice(i, i + 1)}" at ${i}`);
    i += m[0].length;
    if (/^\d/.test(m[0])) return Number(m[0]);
    if (!(m[0] in vars)) fail(`unknown variable ${m[0]}`);
    return vars[m[0]];
  };
  const product = (): number => {
    let v = atom();
    while (src[i] === "*") {
      i++;
      v *= atom();
    }
    return v;
  };
  const sum = (): number => {
    let v = product();
    while (src[i] === "+" || src[i] === "-") v = src[i++] === "+" ? v + product() : v - product();
    return v;
  };
  const v = sum();
  if (i !== src.length) fail(`trailing "${src.slice(i)}"`);
  return v;
}

/**
 * Checks that `value` is a plan this code can run: format, version and internal references.
 * Returns it typed; throws {@linkcode PlanFormatError} naming the first problem.
 */
export function validatePlan(value: unknown, source = "plan"): Plan {
  const fail = (why: string): never => {
    throw new PlanFormatError(`${source}: ${why}`);
  };
  if (typeof value !== "object" || value === null) fail("not a JSON object");
  const plan = value as Plan;
  if (plan.format !== PLAN_FORMAT) {
    fail(`not a plan file (format is ${JSON.stringify(plan.format)})`);
  }
  if (plan.version !== PLAN_VERSION) {
    fail(
      `plan format version ${plan.version} is not supported (this build reads version ` +
        `${PLAN_VERSION}); recompile the model with \`deno task compile\``,
    );
  }
  for (const key of ["model", "strategy", "shape", "storage", "kernels", "programs"] as const) {
    if (typeof plan[key] !== "object" || plan[key] === null) fail(`missing "${key}"`);
  }
  if (plan.int8 != null) {
    const { matrix, subgroupSize } = plan.int8;
    const whole = (n: unknown) => Number.isInteger(n) && (n as number) > 0;
    if (!matrix || ![matrix.m, matrix.n, matrix.k, subgroupSize].every(whole)) {
      fail(`"int8" must hold a matrix {m, n, k} and a subgroupSize`);
    }
  }
  for (const key of ["weights", "buffers", "hosts"] as const) {
    if (!Array.isArray(plan[key])) fail(`"${key}" must be a list`);
  }
  const buffers = new Set<string>();
  for (const b of plan.buffers) {
    if (buffers.has(b.id)) fail(`buffer ${b.id} is declared twice`);
    if (!(Number.isInteger(b.elements) && b.elements > 0)) fail(`buffer ${b.id} has no size`);
    buffers.add(b.id);
  }
  if (plan.hosts.length !== plan.strategy.hosts) fail("host count differs from the strategy's");
  for (const w of plan.weights) if (!buffers.has(w.buffer)) fail(`weight ${w.name}: no buffer`);
  if (!plan.programs.prefill || !plan.programs.extend) fail("needs prefill and extend programs");
  for (const [name, program] of Object.entries(plan.programs)) {
    for (const phase of program.phases) {
      if (phase.steps.length !== plan.hosts.length) fail(`${name}/${phase.name}: steps per host`);
      for (const steps of phase.steps) {
        for (const step of steps) {
          if (!plan.kernels[step.kernel]) fail(`${name}/${phase.name}: no kernel ${step.kernel}`);
          for (const id of Object.values(step.bind)) {
            if (!buffers.has(id)) fail(`${name}/${phase.name}/${step.label}: no buffer ${id}`);
          }
        }
      }
      for (const t of phase.transfers) {
        if (!buffers.has(t.src) || !buffers.has(t.dst)) {
          fail(`${name}/${phase.name}: transfer ${t.label} names an unknown buffer`);
        }
      }
    }
  }
  return plan;
}
