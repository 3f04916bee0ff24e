// The model DSL: a user's forward function runs once on symbolic tensors and records a Graph.

import { type ModelConfig, type RopeConfig, validateConfig } from "./config.ts";
import { ModelError } from "./errors.ts";
import { type Attrs, Graph, type Op, type ParamInit } from "./graph.ts";

/** A symbolic tensor of shape [T, cols]: what DSL calls take and return. */
export class Tensor {
  /** @internal */
  constructor(readonly builder: ModelBuilder, readonly id: number) {}

  /** Features per token. */
  get cols(): number {
    return this.builder.graph.node(this.id).cols;
  }

  /** Elementwise sum. */
  add(other: Tensor): Tensor {
    return this.builder.op("add", [this, other], {});
  }

  /** Elementwise product. */
  mul(other: Tensor): Tensor {
    return this.builder.op("mul", [this, other], {});
  }

  /** SiLU, x·sigmoid(x). */
  silu(): Tensor {
    return this.builder.op("silu", [this], {});
  }
}

/** Options of {@linkcode ModelBuilder.linear}. */
export interface LinearOptions {
  /** Declare a bias `${name}.bias` too. */
  bias?: boolean;
}

/** Options of {@linkcode ModelBuilder.rope}. */
export interface RopeOptions {
  /** Heads packed in the input's features. */
  heads: number;
  /** Width of one head. */
  headDim: number;
  /** Rotary settings. */
  rope: RopeConfig;
}

/** Options of {@linkcode ModelBuilder.attention}. */
export interface AttentionOptions {
  /** Query heads. */
  heads: number;
  /** Key/value heads. */
  kvHeads: number;
  /** Width of one head. */
  headDim: number;
  /** Softmax scale; 1/sqrt(headDim) by default. */
  scale?: number;
}

/** Records DSL calls into a {@linkcode Graph}; handed to the user's forward function. */
export class ModelBuilder {
  #scopes: string[] = [];
  #layers = 0;

  /** A builder recording into `graph`. */
  constructor(readonly graph: Graph) {}

  /** Runs `fn` with `name` appended to the scope that errors and listings show. */
  scope<T>(name: string, fn: () => T): T {
    this.#scopes.push(name);
    try {
      return fn();
    } finally {
      this.#scopes.pop();
    }
  }

  /** The current scope path. */
  get where(): string {
    return this.#scopes.join(".") || this.graph.name;
  }

  /** Token ids of the tokens being processed: u32[T]. */
  tokens(): Tensor {
    return this.op("tokens", [], {});
  }

  /** Their absolute positions: u32[T]. Strategies decide them; RoPE reads them. */
  positions(): Tensor {
    return this.op("positions", [], {});
  }

  /** Embedding lookup with a table `name` of shape [vocab, hidden]. */
  embedding(tokens: Tensor, name: string, vocab: number, hidden: number): Tensor {
    this.graph.param(name, [vocab, hidden], { scale: 0.5, bias: 0 }, this.where);
    return this.op("embed", [tokens], { weight: name });
  }

  /** RMSNorm with weight `name` of shape [cols]. */
  rmsNorm(x: Tensor, name: string, eps: number): Tensor {
    this.graph.param(name, [x.cols], { scale: 0.1, bias: 1 }, this.where);
    return this.op("rmsnorm", [x], { weight: name, eps });
  }

  /** y = x·Wᵀ (+ b) with W = `${name}.weight` [out, in]; an existing W of that name is reused. */
  linear(x: Tensor, name: string, out: number, options: LinearOptions = {}): Tensor {
    const init: ParamInit = { scale: 1 / Math.sqrt(x.cols), bias: 0 };
    const weight = `${name}.weight`;
    this.graph.param(weight, [out, x.cols], init, this.where);
    const attrs: Attrs = { weight };
    if (options.bias) {
      attrs.bias = `${name}.bias`;
      this.graph.param(attrs.bias, [out], { scale: 0.1, bias: 0 }, this.where);
    }
    return this.op("linear", [x], attrs);
  }

  /** Rotary embedding of the heads packed in `x`, at `positions`. */
  rope(x: Tensor, positions: Tensor, options: RopeOptions): Tensor {
    return this.op("rope", [x, positions], { ...options });
  }

  /** Causal attention of q over k, v (after RoPE). Each call is one layer of KV cache. */
  attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions): Tensor {
    const scale = options.scale ?? 1 / Math.sqrt(options.headDim);
    const attention = { ...options, scale, layer: this.#layers++ };
    return this.op("attention", [q, k, v], { attention });
  }

  /** @internal Adds a node. */
  op(op: Op, inputs: Tensor[], attrs: Attrs): Tensor {
    return new Tensor(this, this.graph.add(op, inputs.map((t) => t.id), attrs, this.where).id);
  }
}

/** A model: its config and its traced graph. */
export interface ModelDefinition {
  /** Shapes and settings. */
  config: ModelConfig;
  /** The traced forward pass. */
  graph: Graph;
}

/**
 * Defines a model by tracing `forward` once on symbolic tensors.
 *
 * @example
 * ```ts
 * import { defineModel } from "./dsl.ts";
 * const config = {
 *   name: "one-layer", vocabSize: 32, hiddenSize: 16, layers: 1, heads: 2, kvHeads: 1,
 *   headDim: 8, intermediateSize: 32, normEps: 1e-5, rope: { theta: 10000 },
 *   qkvBias: false, tiedEmbeddings: true, maxPositions: 128,
 * };
 * const model = defineModel(config, (m) => {
 *   const x = m.embedding(m.tokens(), "embed.weight", 32, 16);
 *   return m.linear(m.rmsNorm(x, "norm.weight", 1e-5), "embed", 32);
 * });
 * console.log(model.graph.toString());
 * ```
 */
export function defineModel(
  config: ModelConfig,
  forward: (m: ModelBuilder) => Tensor,
): ModelDefinition {
  validateConfig(config);
  const graph = new Graph(config.name);
  const builder = new ModelBuilder(graph);
  graph.output = forward(builder).id;
  checkVocab(config, graph);
  return { config, graph };
}

function checkVocab(config: ModelConfig, graph: Graph): void {
  const vocab = config.vocabSize;
  for (const n of graph.nodes) {
    if (n.op !== "embed") continue;
    const rows = graph.params.get(n.attrs.weight!)!.shape[0];
    if (rows !== vocab) {
      throw new ModelError(n.scope, n.attrs.weight!, `has ${rows} rows but vocabSize is ${vocab}`);
    }
  }
  const out = graph.node(graph.output);
  if (out.cols !== vocab) {
    throw new ModelError(out.scope, "logits", `width ${out.cols} differs from vocabSize ${vocab}`);
  }
}
