// The Graph IR: nodes with an op, inputs, a shape and a dtype, checked as they are added.
// Every tensor is [T, features] (or [T] for ids): T is the number of tokens a host processes, so
// all ops but attention are row-independent. That is what lets a strategy move rows freely.

import type { RopeConfig } from "./config.ts";
import { ModelError } from "./errors.ts";

/** Element type of a graph tensor. */
export type DType = "f32" | "u32";

/** The operations of the IR. `slice` is a view; fused ops appear after the fuse pass. */
export type Op =
  | "tokens"
  | "positions"
  | "embed"
  | "rmsnorm"
  | "linear"
  | "linear_cat"
  | "slice"
  | "rope"
  | "attention"
  | "add"
  | "mul"
  | "silu"
  | "silu_mul";

/** One part of a `linear_cat`: a weight (and bias) whose outputs fill a column range. */
export interface LinearPart {
  /** Weight parameter name, shape [cols, in]. */
  weight: string;
  /** Optional bias parameter name, shape [cols]. */
  bias?: string;
  /** Output columns of this part. */
  cols: number;
}

/** Attributes of attention. */
export interface AttentionAttrs {
  /** Index of the layer, keys the KV cache. */
  layer: number;
  /** Query heads. */
  heads: number;
  /** Key/value heads. */
  kvHeads: number;
  /** Head width. */
  headDim: number;
  /** Softmax scale, usually 1/sqrt(headDim). */
  scale: number;
}

/** Attributes of every op, in one record; each op reads its own. */
export interface Attrs {
  /** Parameter holding a weight (embed table, norm weight, linear weight). */
  weight?: string;
  /** Parameter holding a bias. */
  bias?: string;
  /** RMSNorm epsilon. */
  eps?: number;
  /** Parts of a `linear_cat`. */
  parts?: LinearPart[];
  /** First column of a `slice`. */
  start?: number;
  /** Columns of a `slice`. */
  count?: number;
  /** Heads of a `rope`. */
  heads?: number;
  /** Head width of a `rope`. */
  headDim?: number;
  /** Rotary settings of a `rope`. */
  rope?: RopeConfig;
  /** Attention settings. */
  attention?: AttentionAttrs;
  /** `linear` only: add into the second input (a residual) instead of writing a fresh tensor. */
  accumulate?: boolean;
}

/** A node of the graph. Its output shape is [T, cols] (or [T] when cols is 0 for ids). */
export interface Node {
  /** Index in `Graph.nodes`. */
  readonly id: number;
  /** Operation. */
  readonly op: Op;
  /** Input node ids. */
  readonly inputs: readonly number[];
  /** Features per token; 0 for the per-token scalars (tokens, positions). */
  readonly cols: number;
  /** Element type. */
  readonly dtype: DType;
  /** Op attributes. */
  readonly attrs: Attrs;
  /** Where in the model it was made, e.g. "layers.3.self_attn". */
  readonly scope: string;
}

/** How a parameter is initialised when no checkpoint provides it. */
export interface ParamInit {
  /** Values are bias + scale·uniform(−1, 1). */
  scale: number;
  /** Centre of the values. */
  bias: number;
}

/** A weight tensor. Names follow Hugging Face so checkpoints load without renaming. */
export interface Param {
  /** Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight". */
  readonly name: string;
  /** Shape (PyTorch layout: Linear weights are [out, in]). */
  readonly shape: readonly number[];
  /** Seeded initialisation used when no checkpoint is loaded. */
  readonly init: ParamInit;
}

/** A traced model: nodes in execution order, parameters, and the output node. */
export class Graph {
  /** Nodes in a valid execution order. */
  readonly nodes: Node[] = [];
  /** Parameters by name. */
  readonly params: Map<string, Param> = new Map();
  /** Id of the output (logits) node; -1 until set. */
  output: number = -1;

  /** An empty graph named `name`. */
  constructor(readonly name: string) {}

  /** Declares a parameter (or returns the existing one after checking its shape). */
  param(name: string, shape: number[], init: ParamInit, scope: string): Param {
    for (const d of shape) {
      if (!Number.isInteger(d) || d <= 0) {
        throw new ModelError(scope, name, `shape [${shape}] must have positive integer sizes`);
      }
    }
    const existing = this.params.get(name);
    if (existing) {
      if (existing.shape.join() !== shape.join()) {
        throw new ModelError(
          scope,
          name,
          `used with shape [${shape}] but declared with [${existing.shape}]`,
        );
      }
      return existing;
    }
    const p: Param = { name, shape, init };
    this.params.set(name, p);
    return p;
  }

  /** Adds a node after checking its inputs; returns it. */
  add(op: Op, inputs: number[], attrs: Attrs, scope: string): Node {
    const ins = inputs.map((i) => this.node(i));
    const { cols, dtype } = infer(this, op, ins, attrs, scope);
    const node: Node = { id: this.nodes.length, op, inputs, cols, dtype, attrs, scope };
    this.nodes.push(node);
    return node;
  }

  /** The node with id `id`. */
  node(id: number): Node {
    const n = this.nodes[id];
    if (!n) throw new Error(`graph ${this.name}: no node %${id}`);
    return n;
  }

  /** Ids of the nodes that read each node. */
  consumers(): number[][] {
    const users: number[][] = this.nodes.map(() => []);
    for (const n of this.nodes) for (const i of n.inputs) users[i].push(n.id);
    return users;
  }

  /** Total number of parameter elements. */
  paramCount(): number {
    let total = 0;
    for (const p of this.params.values()) total += p.shape.reduce((a, b) => a * b, 1);
    return total;
  }

  /** A readable listing, one node a line. */
  toString(): string {
    const lines = [
      `graph ${this.name}: ${this.nodes.length} nodes, ${fmtCount(this.paramCount())} parameters`,
    ];
    let scope = "";
    for (const n of this.nodes) {
      if (n.scope !== scope) lines.push(`  # ${scope = n.scope}`);
      const args = n.inputs.map((i) => `%${i}`);
      const a = n.attrs;
      if (a.weight) args.push(`${a.weight}[${this.params.get(a.weight)!.shape}]`);
      if (a.bias) args.push(`bias=${a.bias}`);
      if (a.parts) args.push(...a.parts.map((p) => `${p.weight}${p.bias ? "+bias" : ""}`));
      if (a.start !== undefined) args.push(`cols ${a.start}..${a.start + a.count!}`);
      if (a.eps !== undefined) args.push(`eps=${a.eps}`);
      if (a.heads !== undefined) args.push(`heads=${a.heads}x${a.headDim}`);
      if (a.attention) {
        const t = a.attention;
        args.push(`layer=${t.layer} heads=${t.heads}/${t.kvHeads}x${t.headDim}`);
      }
      if (a.accumulate) args.push("accumulate");
      const type = n.cols === 0 ? `${n.dtype}[T]` : `${n.dtype}[T,${n.cols}]`;
      lines.push(`  %${n.id} = ${n.op}(${args.join(", ")}) : ${type}`);
    }
    lines.push(`  return %${this.output}`);
    return lines.join("\n");
  }
}

function fmtCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

type Inferred = { cols: number; dtype: DType };

function infer(g: Graph, op: Op, ins: Node[], a: Attrs, scope: string): Inferred {
  const f32 = (cols: number): Inferred => ({ cols, dtype: "f32" });
  const weight = (name: string | undefined) => {
    const p = name ? g.params.get(name) : undefined;
    if (!p) throw new ModelError(scope, "weight", `parameter ${name} is not declared`);
    return p;
  };
  const needF32 = (n: Node, what: string) => {
    if (n.dtype !== "f32" || n.cols === 0) {
      throw new ModelError(scope, what, `expects f32 features, got %${n.id}: ${n.dtype}`);
    }
  };
  const arity = (k: number) => {
    if (ins.length !== k) throw new ModelError(scope, op, `takes ${k} inputs, got ${ins.length}`);
  };
  switch (op) {
    case "tokens":
    case "positions":
      arity(0);
      return { cols: 0, dtype: "u32" };
    case "embed": {
      arity(1);
      if (ins[0].dtype !== "u32") throw new ModelError(scope, "embed", "input must be token ids");
      const t = weight(a.weight);
      if (t.shape.length !== 2) throw new ModelError(scope, t.name, "must be [vocab, hidden]");
      return f32(t.shape[1]);
    }
    case "rmsnorm": {
      arity(1);
      needF32(ins[0], "rmsnorm input");
      const w = weight(a.weight);
      if (w.shape.length !== 1 || w.shape[0] !== ins[0].cols) {
        throw new ModelError(scope, w.name, `shape [${w.shape}] must be [${ins[0].cols}]`);
      }
      if (!(a.eps! > 0)) throw new ModelError(scope, "eps", `must be > 0, found ${a.eps}`);
      return f32(ins[0].cols);
    }
    case "linear": {
      arity(a.accumulate ? 2 : 1);
      needF32(ins[0], "linear input");
      const w = weight(a.weight);
      checkLinear(g, scope, ins[0].cols, { weight: w.name, bias: a.bias, cols: w.shape[0] });
      if (a.accumulate && ins[1].cols !== w.shape[0]) {
        throw new ModelError(
          scope,
          "residual",
          `has ${ins[1].cols} features, output ${w.shape[0]}`,
        );
      }
      return f32(w.shape[0]);
    }
    case "linear_cat": {
      arity(1);
      needF32(ins[0], "linear input");
      let cols = 0;
      for (const part of a.parts ?? []) cols += checkLinear(g, scope, ins[0].cols, part);
      return f32(cols);
    }
    case "slice": {
      arity(1);
      const { start = -1, count = 0 } = a;
      if (start < 0 || count <= 0 || start + count > ins[0].cols) {
        throw new ModelError(scope, "slice", `columns ${start}+${count} outside ${ins[0].cols}`);
      }
      return f32(count);
    }
    case "rope": {
      arity(2);
      needF32(ins[0], "rope input");
      if (ins[1].dtype !== "u32") throw new ModelError(scope, "rope", "second input: positions");
      const { heads = 0, headDim = 0 } = a;
      if (headDim % 2 !== 0 || headDim <= 0) {
        throw new ModelError(scope, "head_dim", `${headDim} must be even and positive for RoPE`);
      }
      if (heads * headDim !== ins[0].cols) {
        throw new ModelError(
          scope,
          "rope",
          `${heads} heads × ${headDim} ≠ ${ins[0].cols} input features`,
        );
      }
      return f32(ins[0].cols);
    }
    case "attention": {
      arity(3);
      const t = a.attention!;
      ins.forEach((n, i) => needF32(n, ["q", "k", "v"][i]));
      if (t.heads <= 0 || t.kvHeads <= 0 || t.heads % t.kvHeads !== 0) {
        throw new ModelError(
          scope,
          "num_key_value_heads",
          `${t.kvHeads} must divide num_attention_heads ${t.heads}`,
        );
      }
      if (ins[0].cols !== t.heads * t.headDim) {
        throw new ModelError(scope, "q", `${ins[0].cols} features ≠ ${t.heads} × ${t.headDim}`);
      }
      for (const [n, name] of [[ins[1], "k"], [ins[2], "v"]] as const) {
        if (n.cols !== t.kvHeads * t.headDim) {
          throw new ModelError(scope, name, `${n.cols} features ≠ ${t.kvHeads} × ${t.headDim}`);
        }
      }
      return f32(t.heads * t.headDim);
    }
    case "add":
    case "mul":
    case "silu_mul":
      arity(2);
      needF32(ins[0], op);
      needF32(ins[1], op);
      if (ins[0].cols !== ins[1].cols) {
        throw new ModelError(scope, op, `widths differ: ${ins[0].cols} and ${ins[1].cols}`);
      }
      return f32(ins[0].cols);
    case "silu":
      arity(1);
      needF32(ins[0], op);
      return f32(ins[0].cols);
  }
}

function checkLinear(g: Graph, scope: string, inCols: number, part: LinearPart): number {
  const w = g.params.get(part.weight);
  if (!w) throw new ModelError(scope, "weight", `parameter ${part.weight} is not declared`);
  if (w.shape.length !== 2 || w.shape[1] !== inCols) {
    throw new ModelError(
      scope,
      w.name,
      `shape [${w.shape}] must be [out, ${inCols}] to take ${inCols} input features`,
    );
  }
  if (part.bias) {
    const b = g.params.get(part.bias);
    if (!b || b.shape.length !== 1 || b.shape[0] !== w.shape[0]) {
      throw new ModelError(scope, part.bias, `must have shape [${w.shape[0]}]`);
    }
  }
  return w.shape[0];
}
