// Lowering: model graph + strategy + shape → plan. Every per-token node becomes one dispatch per
// host over that host's rows; attention nodes go to lower_attention.ts, where the strategy's
// tasks become kernels and transfers.

import type { ModelConfig } from "./config.ts";
import type { ModelDefinition } from "./dsl.ts";
import { PlanError } from "./errors.ts";
import type { Graph, LinearPart, Node } from "./graph.ts";
import { fuse } from "./passes/fuse.ts";
import { type MemoryPlan, planMemory } from "./passes/memory.ts";
import { verify } from "./passes/verify.ts";
import {
  type BufferDecl,
  type BufferFill,
  type BufferRole,
  type Expr,
  type HostDecl,
  type KernelDecl,
  type LogitsOutput,
  type Plan,
  PLAN_FORMAT,
  PLAN_VERSION,
  type PlanInt8,
  type Program,
  type WeightDecl,
} from "./plan.ts";
import { ProgramBuilder } from "./program.ts";
import type { Segment, Strategy } from "./strategies/strategy.ts";
import {
  attentionPrologue,
  lowerAttentionExtend,
  lowerAttentionPrefill,
  resolveTasks,
  type TaskSet,
} from "./lower_attention.ts";
import { kernelFamily } from "../wgsl/mod.ts";
import { defaultInt8Tile } from "../wgsl/int8_matmul.ts";
import { int8Attention } from "./int8.ts";
import { packedStride } from "../wgsl/quantize.ts";
import type { BindingSpec, ElementType, StorageType } from "../wgsl/kernel.ts";

/** The shape and storage a plan is lowered for. */
export interface LowerOptions {
  /** Number of hosts (default 1). */
  hosts?: number;
  /** Context tokens prefilled. */
  contextTokens: number;
  /** Query tokens (APB embeds them in anchors; the query pass runs them over the cache). */
  queryTokens?: number;
  /** Most rows one extend call (query pass or decode step) takes (default max(query, 1)). */
  extendRows?: number;
  /** Most tokens appended after prefill in total (default query + 64). */
  maxNewTokens?: number;
  /** Logits from prefill: every kept row, the last context row, or none (default "last"). */
  prefillLogits?: "all" | "last" | "none";
  /** Logits from extend calls: every new row or the last (default "last"). */
  extendLogits?: "all" | "last";
  /** Storage type of weights (default f32). */
  weights?: StorageType;
  /** Storage type of the KV cache (default f32). */
  kv?: StorageType;
  /**
   * Largest weight buffer in bytes (default 1 GiB, within common binding limits); larger tensors
   * are split by rows into several buffers.
   */
  maxWeightBytes?: number;
  /**
   * Rows a host processes at once outside attention (default: as many as keep the widest
   * activation within 128 MiB, at least the extend rows). Bounds activation memory and binding
   * sizes for long contexts; results do not depend on it.
   */
  chunkRows?: number;
  /**
   * Int8 tensor-core kernels (Dawn subgroup matrices): linear layers but the LM head become
   * quantize + int8_matmul (weights quantised per output channel once, in the setup program);
   * prefill attention becomes int8_attention when `attention` is "int8". The subgroup-matrix
   * shape comes from the adapter.
   */
  int8?: Int8Choice | null;
}

/** The int8 kernels a plan uses: subgroup-matrix shape and subgroup size from the adapter. */
export interface Int8Choice {
  /** i8×i8→i32 subgroup-matrix shape. */
  matrix: { m: number; n: number; k: number };
  /** Subgroup size. */
  subgroupSize: number;
  /**
   * Attention's products: int8 on the tensor cores (kv_quantize + int8_attention: 112 TFLOP/s at 32K
   * on the H100, the f32 kernel 28) or f32; absent: f32.
   */
  attention?: "int8" | "f32";
}

/** A run of a host's rows processed together outside attention. */
export interface Chunk {
  /** Index; persistent tensors have one buffer per chunk. */
  index: number;
  /** First local row. */
  start: number;
  /** Rows (an expression in extend). */
  rows: Expr;
}

// 128 MiB: within every adapter's binding limit (the spec default), large enough for full GEMMs.
const CHUNK_BYTES = 128 * 2 ** 20;

/** What the lowering of one host knows. */
export interface HostInfo {
  /** Host index. */
  index: number;
  /** Its segments. */
  segments: Segment[];
  /** First local row of each segment by name. */
  start: Map<string, number>;
  /** Rows in prefill. */
  rows: number;
  /** Kept rows [start, end). */
  keep: [number, number];
  /** Whether extend appends here. */
  appends: boolean;
  /** Rows of each layer's cache. */
  cacheRows: number;
  /** Its prefill chunks. */
  chunks: Chunk[];
  /** Rows of its largest chunk in either program: what chunk buffers hold. */
  chunkCap: number;
}

/** Operands of {@linkcode Lowering.matmul}. */
export interface MatmulArgs {
  /** Input buffer ([rows, K], contiguous). */
  a: string;
  /** Output buffer. */
  c: string;
  /** Weight name ([N, K]). */
  weight: string;
  /** Bias name ([N]), if any. */
  bias?: string;
  /** Rows. */
  M: Expr;
  /** Inner size. */
  K: number;
  /** First row of a. */
  aOffset?: Expr;
  /** Elements between rows of c. */
  cStride: number;
  /** Element offset of c[0, 0]. */
  cOffset: Expr;
  /** Add into c instead of writing it. */
  accumulate?: boolean;
  /** Epilogue activation. */
  activation?: "none" | "silu";
}

/** Which program is being lowered. */
export type Mode = "prefill" | "extend";

/** Shared state of a lowering, handed to the attention lowering. */
export class Lowering {
  readonly graph: Graph;
  readonly memory: MemoryPlan;
  readonly hosts: HostInfo[];
  readonly buffers = new Map<string, BufferDecl>();
  readonly kernels: Record<string, KernelDecl> = {};
  readonly weights: WeightDecl[] = [];
  readonly opts: Required<LowerOptions>;
  /** Rows per chunk. */
  readonly chunkRows: number;
  /** The strategy's tasks, resolved (set before the programs are lowered). */
  tasks!: TaskSet;
  #ropeTables = new Map<string, string>();

  /** @param model the model @param strategy the strategy @param options shape and storage */
  constructor(readonly model: ModelDefinition, readonly strategy: Strategy, options: LowerOptions) {
    const query = options.queryTokens ?? 0;
    this.opts = {
      hosts: options.hosts ?? 1,
      contextTokens: options.contextTokens,
      queryTokens: query,
      extendRows: options.extendRows ?? Math.max(query, 1),
      maxNewTokens: options.maxNewTokens ?? query + 64,
      prefillLogits: options.prefillLogits ?? "last",
      extendLogits: options.extendLogits ?? "last",
      weights: options.weights ?? "f32",
      kv: options.kv ?? "f32",
      chunkRows: options.chunkRows ?? 0,
      maxWeightBytes: options.maxWeightBytes ?? 2 ** 30,
      int8: options.int8 ?? null,
    };
    checkShape(this.opts);
    this.graph = fuse(verify(model.graph));
    this.memory = planMemory(this.graph);
    const widest = Math.max(1, ...this.memory.local, ...this.memory.persistent);
    const auto = 2 ** Math.floor(Math.log2(Math.max(1, CHUNK_BYTES / (4 * widest))));
    this.chunkRows = Math.max(this.opts.chunkRows || auto, this.opts.extendRows);
    const plans = strategy.plan({
      hosts: this.opts.hosts,
      contextTokens: this.opts.contextTokens,
      queryTokens: query,
      model: model.config,
    });
    if (plans.length !== this.opts.hosts) {
      throw new PlanError(`${strategy.name} planned ${plans.length} hosts, not ${this.opts.hosts}`);
    }
    this.hosts = plans.map((p, h) => this.#hostInfo(h, p.segments));
    checkConservation(strategy.name, this.hosts, this.opts.contextTokens);
    // Biases follow their weight's split, so that each piece of a split weight has its own.
    const biasOf = new Map<string, string>();
    for (const n of this.graph.nodes) {
      const parts = n.attrs.parts ?? (n.op === "linear" ? [n.attrs as LinearPart] : []);
      for (const part of parts) if (part.bias) biasOf.set(part.bias, part.weight);
    }
    for (const [name, p] of this.graph.params) {
      if (!biasOf.has(name)) this.#weight(name, [...p.shape], p.init, "model");
    }
    for (const [bias, weight] of biasOf) {
      const rows = this.pieces(weight)[0].count;
      this.#weight(
        bias,
        [...this.graph.params.get(bias)!.shape],
        this.graph.params.get(bias)!.init,
        "model",
        rows,
      );
    }
  }

  /** Declares (or widens) a buffer; returns its id. */
  buffer(
    id: string,
    host: number | null,
    elem: ElementType,
    elements: number,
    role: BufferRole,
    fill?: BufferFill,
  ): string {
    const b = this.buffers.get(id);
    if (b) b.elements = Math.max(b.elements, elements);
    else {
      const decl: BufferDecl = { id, host, elem, elements: Math.max(1, elements), role };
      if (fill) decl.fill = fill;
      this.buffers.set(id, decl);
    }
    return id;
  }

  /** The id of kernel `family` specialised on `spec` (registering it). */
  kernel(family: string, spec: unknown): string {
    const id = kernelFamily(family).key(spec);
    this.kernels[id] ??= { family, spec, file: `kernels/${id}.wgsl` };
    return id;
  }

  /** Appends a dispatch for `host`. */
  dispatch(
    pb: ProgramBuilder,
    host: number,
    family: string,
    spec: unknown,
    sizes: Record<string, Expr>,
    bind: Record<string, string>,
    label: string,
  ): void {
    const kernel = this.kernel(family, spec);
    checkAliasing(kernelFamily(family).generate(spec).bindings, bind, label);
    pb.step(host, { kernel, sizes, bind, label });
  }

  /**
   * Buffer, element offset and row stride of node `id` on `host` for chunk `chunk`: persistent
   * tensors have a buffer per chunk, chunk-local ones share one. Rows start at 0 in either.
   */
  at(id: number, host: number, chunk: number): { buffer: string; offset: number; stride: number } {
    const p = this.memory.placements[id];
    if (p.kind !== "slot") throw new Error(`internal: node %${id} has no slot (${p.kind})`);
    const width = p.persistent ? this.memory.persistent[p.slot] : this.memory.local[p.slot];
    const id_ = p.persistent ? `h${host}.p${p.slot}.c${chunk}` : `h${host}.s${p.slot}`;
    const buffer = this.buffer(id_, host, "f32", width * this.hosts[host].chunkCap, "activation");
    return { buffer, offset: p.offset, stride: p.stride };
  }

  /** The chunk holding local row `row` of a host, and the row inside it. */
  chunkOf(row: number): { chunk: number; row: number } {
    const chunk = Math.floor(row / this.chunkRows);
    return { chunk, row: row - chunk * this.chunkRows };
  }

  /** The chunks a program processes on `h`. */
  chunks(h: HostInfo, mode: Mode): Chunk[] {
    return mode === "prefill" ? h.chunks : [{ index: 0, start: 0, rows: "t" }];
  }

  /** The KV cache buffer of `layer` on `host`. */
  cache(kind: "k" | "v", layer: number, host: number): string {
    const c = this.model.config;
    const h = this.hosts[host];
    const elements = h.cacheRows * c.kvHeads * c.headDim;
    return this.buffer(`h${host}.${kind}${layer}`, host, this.opts.kv, elements, "cache");
  }

  /**
   * c[m, cOffset + n] (+)= act(a[aOffset + m] · W[n] + bias[n]) for weight `weight` ([N, K]),
   * one dispatch per piece of a split weight.
   */
  matmul(pb: ProgramBuilder, host: number, args: MatmulArgs, label: string): void {
    const bias = args.bias ? this.pieces(args.bias) : undefined;
    for (const [i, piece] of this.pieces(args.weight).entries()) {
      const spec = {
        weight: this.opts.weights,
        bias: !!bias,
        accumulate: args.accumulate ?? false,
        activation: args.activation ?? "none",
      };
      const bind: Record<string, string> = { a: args.a, b: piece.buffer, c: args.c };
      if (bias) bind.bias = bias[i].buffer;
      const sizes = {
        M: args.M,
        N: piece.count,
        K: args.K,
        aOffset: args.aOffset ?? 0,
        cStride: args.cStride,
        cOffset: typeof args.cOffset === "number"
          ? args.cOffset + piece.start
          : `${args.cOffset}+${piece.start}`,
      };
      this.dispatch(pb, host, "matmul", spec, sizes, bind, label);
    }
  }

  /** Buffer of RoPE cos/sin for `node`'s settings. */
  ropeTable(node: Node): string {
    const { rope, headDim } = node.attrs;
    const key = JSON.stringify([rope, headDim]);
    let id = this.#ropeTables.get(key);
    if (!id) {
      id = `rope${this.#ropeTables.size}`;
      const o = this.opts;
      const positions = o.contextTokens + o.queryTokens + o.maxNewTokens + 1;
      const fill: BufferFill = { kind: "rope", rope: rope!, headDim: headDim!, positions };
      this.buffer(id, null, "f32", positions * headDim!, "table", fill);
      this.#ropeTables.set(key, id);
    }
    return id;
  }

  /** Declares a weight (model or retaining head) and returns its buffer id. */
  weight(name: string, shape: number[], scale: number, source: "model" | "retaining"): string {
    return this.#weight(name, shape, { scale, bias: 0 }, source);
  }

  /**
   * Attention's log-sum-exp for the rows of one chunk of `host`: kept per chunk because later
   * tasks merge into earlier results (ring steps) chunk by chunk.
   */
  lseScratch(host: number, chunk: number): string {
    const c = this.model.config;
    const rows = this.hosts[host].chunkCap;
    return this.buffer(`h${host}.lse.c${chunk}`, host, "f32", rows * c.heads, "exchange");
  }

  /**
   * The buffers holding weight `name` with the rows each holds: one for most tensors, several
   * for tensors larger than `maxWeightBytes` (split by rows of their first dimension).
   */
  pieces(name: string): { buffer: string; start: number; count: number }[] {
    const found = this.weights.filter((w) => w.name === name);
    if (!found.length) throw new Error(`internal: no weight ${name}`);
    return found.map((w) => ({
      buffer: w.buffer,
      start: w.rows?.[0] ?? 0,
      count: w.rows?.[1] ?? w.shape[0],
    }));
  }

  #weight(
    name: string,
    shape: number[],
    init: WeightDecl["init"],
    source: WeightDecl["source"],
    rowsPerPiece?: number,
  ) {
    const existing = this.weights.find((w) => w.name === name);
    if (existing) return existing.buffer;
    const seed = new Set(this.weights.map((w) => w.name)).size;
    const rowElements = shape.slice(1).reduce((a, b) => a * b, 1);
    const rowBytes = rowElements * (this.opts.weights === "f16" ? 2 : 4);
    const perPiece = rowsPerPiece ??
      Math.max(1, Math.floor(this.opts.maxWeightBytes / rowBytes));
    const first = `w${this.weights.length}`;
    for (let start = 0; start < shape[0]; start += perPiece) {
      const count = Math.min(perPiece, shape[0] - start);
      const buffer = `w${this.weights.length}`;
      this.buffer(buffer, null, this.opts.weights, count * rowElements, "weight");
      const w: WeightDecl = { name, shape, buffer, init, seed, source };
      if (count < shape[0]) w.rows = [start, count];
      this.weights.push(w);
    }
    return first;
  }

  #hostInfo(index: number, segments: Segment[]): HostInfo {
    const start = new Map<string, number>();
    let rows = 0;
    for (const s of segments) {
      if (start.has(s.name)) throw new PlanError(`host ${index}: segment "${s.name}" twice`);
      if (!Number.isInteger(s.count) || s.count < 0) {
        throw new PlanError(`host ${index}: segment "${s.name}" has ${s.count} rows`);
      }
      start.set(s.name, rows);
      rows += s.count;
    }
    if (rows === 0) throw new PlanError(`host ${index} holds no tokens`);
    const kept = segments.filter((s) => s.keep && s.count > 0);
    const keepStart = kept.length ? start.get(kept[0].name)! : 0;
    let keepEnd = keepStart;
    for (const s of kept) {
      if (start.get(s.name) !== keepEnd) {
        throw new PlanError(`host ${index}: kept segments must be adjacent rows`);
      }
      keepEnd += s.count;
    }
    const appends = index === this.opts.hosts - 1;
    const cacheRows = Math.max(rows, keepEnd + (appends ? this.opts.maxNewTokens : 0));
    const chunks = Array.from({ length: Math.ceil(rows / this.chunkRows) }, (_, i): Chunk => ({
      index: i,
      start: i * this.chunkRows,
      rows: Math.min(this.chunkRows, rows - i * this.chunkRows),
    }));
    const chunkCap = Math.min(this.chunkRows, Math.max(rows, this.opts.extendRows));
    const keep: [number, number] = [keepStart, keepEnd];
    return { index, segments, start, rows, keep, appends, cacheRows, chunks, chunkCap };
  }
}

/** Lowers `model` with `strategy` to a plan. */
export function lower(model: ModelDefinition, strategy: Strategy, options: LowerOptions): Plan {
  const L = new Lowering(model, strategy, options);
  const tasks = L.tasks = resolveTasks(L);
  const prefill = lowerProgram(L, "prefill", (pb, n) => lowerAttentionPrefill(L, pb, n, tasks));
  const extend = lowerProgram(L, "extend", (pb, n) => lowerAttentionExtend(L, pb, n));
  const setup = new ProgramBuilder(L.hosts.length, "setup");
  if (L.opts.int8) quantizeWeights(L, setup);
  const hosts: HostDecl[] = L.hosts.map((h) => ({
    segments: h.segments,
    rows: h.rows,
    keep: h.keep,
    appends: h.appends,
    appendCapacity: h.cacheRows - h.keep[1],
    ids: L.buffer(`h${h.index}.ids`, h.index, "u32", Math.max(h.rows, L.opts.extendRows), "input"),
    positions: L.buffer(
      `h${h.index}.pos`,
      h.index,
      "u32",
      Math.max(h.rows, L.opts.extendRows),
      "input",
    ),
  }));
  return {
    format: PLAN_FORMAT,
    version: PLAN_VERSION,
    model: {
      name: model.config.name,
      config: model.config,
      parameters: L.graph.paramCount(),
      graph: L.graph.toString(),
    },
    strategy: {
      name: strategy.name,
      hosts: L.opts.hosts,
      params: strategy.params,
      communication: strategy.communication,
      parity: strategy.parity ?? false,
    },
    shape: {
      contextTokens: L.opts.contextTokens,
      queryTokens: L.opts.queryTokens,
      extendRows: L.opts.extendRows,
      maxNewTokens: L.opts.maxNewTokens,
      prefillLogits: L.opts.prefillLogits,
      extendLogits: L.opts.extendLogits,
      chunkRows: L.chunkRows,
    },
    storage: { weights: L.opts.weights, kv: L.opts.kv },
    weights: L.weights,
    kernels: L.kernels,
    buffers: [...L.buffers.values()],
    hosts,
    programs: { setup: { phases: setup.finish(), logits: [] }, prefill, extend },
    ...(L.opts.int8 ? { int8: effectiveInt8(model.config, L.opts.int8) } : {}),
  };
}

/** The int8 choice as lowered: attention in f32 where int8_attention does not take the head size. */
function effectiveInt8(c: ModelConfig, int8: Int8Choice): PlanInt8 {
  const attention = int8Attention(c.headDim, int8) ? "int8" : "f32";
  return { matrix: { ...int8.matrix }, subgroupSize: int8.subgroupSize, attention };
}

type AttentionLowering = (pb: ProgramBuilder, node: Node) => void;

/**
 * Lowers one program. Nodes between two attentions are row-independent, so each host runs them
 * chunk by chunk (all of them for chunk 0, then chunk 1, ...), and the attention's per-chunk
 * prologue (K/V into the cache, compressor scores) with them; the attention itself follows.
 */
function lowerProgram(L: Lowering, mode: Mode, attention: AttentionLowering): Program {
  const pb = new ProgramBuilder(L.hosts.length, mode);
  const g = L.graph;
  const logits = new LogitsLowering(L, mode, g.node(g.output));
  let run: Node[] = [];
  for (const n of g.nodes) {
    if (n.op !== "attention") {
      run.push(n);
      continue;
    }
    lowerRun(L, pb, run, n, mode, logits);
    attention(pb, n);
    run = [];
  }
  lowerRun(L, pb, run, null, mode, logits);
  return { phases: pb.finish(), logits: logits.finish(pb) };
}

function lowerRun(
  L: Lowering,
  pb: ProgramBuilder,
  run: Node[],
  attention: Node | null,
  mode: Mode,
  logits: LogitsLowering,
): void {
  for (const h of L.hosts) {
    for (const chunk of L.chunks(h, mode)) {
      for (const n of run) {
        if (n.id === L.graph.output) logits.chunk(pb, h, chunk);
        else lowerPerToken(L, pb, n, h, chunk);
      }
      if (attention) attentionPrologue(L, pb, attention, h, chunk, mode);
    }
  }
}

function lowerPerToken(L: Lowering, pb: ProgramBuilder, n: Node, h: HostInfo, chunk: Chunk): void {
  const host = h.index;
  const g = L.graph;
  const p = L.memory.placements[n.id];
  if (p.kind === "input" || p.kind === "cache" || n.op === "slice") return;
  const rows = chunk.rows;
  const ws = L.opts.weights;
  const input = (i: number) => L.at(n.inputs[i], host, chunk.index);
  const contiguous = (i: number) => {
    const x = input(i);
    if (x.offset !== 0 || x.stride !== g.node(n.inputs[i]).cols) {
      throw new PlanError(`${n.scope}: ${n.op} needs a contiguous input, got a column slice`);
    }
    return x.buffer;
  };
  const out = L.at(n.id, host, chunk.index);
  const label = `${n.scope} ${n.op}`;
  const w = (name: string) => {
    const pieces = L.pieces(name);
    if (pieces.length > 1) {
      throw new PlanError(
        `${n.scope}: ${name} is larger than one weight buffer may be and cannot be split for ` +
          `${n.op}; store weights as f16 (--storage f16)`,
      );
    }
    return pieces[0].buffer;
  };
  switch (n.op) {
    case "embed": {
      const hidden = g.params.get(n.attrs.weight!)!.shape[1];
      // A split table is gathered piece by piece; the first piece zeroes rows of other ids.
      for (const [i, piece] of L.pieces(n.attrs.weight!).entries()) {
        L.dispatch(
          pb,
          host,
          "embed",
          { table: ws },
          {
            rows,
            hidden,
            vocab: piece.count,
            idsOffset: chunk.start,
            vocabOffset: piece.start,
            zeroMissing: i === 0 ? 1 : 0,
          },
          { ids: `h${host}.ids`, table: piece.buffer, out: out.buffer },
          label,
        );
      }
      return;
    }
    case "rmsnorm":
      L.dispatch(pb, host, "rmsnorm", { weight: ws }, { rows, cols: n.cols, eps: n.attrs.eps! }, {
        x: contiguous(0),
        weight: w(n.attrs.weight!),
        out: out.buffer,
      }, label);
      return;
    case "linear":
    case "linear_cat": {
      const parts = n.op === "linear"
        ? [{ weight: n.attrs.weight!, bias: n.attrs.bias, cols: n.cols }]
        : n.attrs.parts!;
      const K = g.node(n.inputs[0]).cols;
      if (L.opts.int8) {
        lowerLinearInt8(
          L,
          pb,
          host,
          rows,
          K,
          contiguous(0),
          out,
          parts,
          !!n.attrs.accumulate,
          n.scope,
        );
        return;
      }
      let col = 0;
      for (const part of parts) {
        L.matmul(pb, host, {
          a: contiguous(0),
          c: out.buffer,
          weight: part.weight,
          bias: part.bias,
          M: rows,
          K,
          cStride: out.stride,
          cOffset: col,
          accumulate: !!n.attrs.accumulate,
        }, `${n.scope} ${part.weight}`);
        col += part.cols;
      }
      return;
    }
    case "rope": {
      const x = input(0);
      L.dispatch(pb, host, "rope", { rotate: true, out: "f32" }, {
        rows,
        heads: n.attrs.heads!,
        headDim: n.attrs.headDim!,
        inStride: x.stride,
        inOffset: x.offset,
        outRowOffset: 0,
        posOffset: chunk.start,
      }, {
        x: x.buffer,
        positions: `h${host}.pos`,
        table: L.ropeTable(n),
        out: out.buffer,
      }, label);
      return;
    }
    case "silu_mul":
      L.dispatch(pb, host, "silu_mul", {}, { rows, cols: n.cols }, {
        a: contiguous(0),
        b: contiguous(1),
        out: out.buffer,
      }, label);
      return;
    case "add": {
      const copy = {
        rows,
        cols: n.cols,
        srcStride: n.cols,
        srcOffset: 0,
        dstStride: n.cols,
        dstOffset: 0,
      };
      L.dispatch(pb, host, "copy2d", { elem: "f32" }, copy, {
        src: contiguous(0),
        dst: out.buffer,
      }, `${label} (copy)`);
      const count = typeof rows === "number" ? rows * n.cols : `(${rows})*${n.cols}`;
      L.dispatch(pb, host, "add", {}, { count }, { x: out.buffer, y: contiguous(1) }, label);
      return;
    }
    case "mul":
    case "silu":
      throw new PlanError(
        `${n.scope}: ${n.op} on its own has no kernel; write the gated form silu(a).mul(b)`,
      );
    default:
      throw new Error(`internal: no lowering for ${n.op}`);
  }
}

// --- int8 (Dawn) lowering: kept together so that the f32 path above stays as it was. ---

/** Buffers of a weight quantised per output channel: packed codes and scales. */
function int8Weight(
  L: Lowering,
  name: string,
): { q: string; s: string; rows: number; cols: number } {
  const w = L.weights.find((x) => x.name === name)!;
  const [rows, cols] = w.shape;
  const stride = packedStride(cols);
  return {
    q: L.buffer(`${w.buffer}.q`, null, "i32", rows * stride, "weight"),
    s: L.buffer(`${w.buffer}.s`, null, "f32", rows, "weight"),
    rows,
    cols,
  };
}

/** Quantises every linear layer's weight once, in the setup program (weights are shared). */
function quantizeWeights(L: Lowering, pb: ProgramBuilder): void {
  for (const n of L.graph.nodes) {
    if (n.op !== "linear" && n.op !== "linear_cat") continue;
    if (n.id === L.graph.output) continue; // the LM head stays f32
    const parts = n.op === "linear" ? [{ weight: n.attrs.weight! }] : n.attrs.parts!;
    for (const part of parts) {
      const pieces = L.pieces(part.weight);
      if (pieces.length > 1) {
        throw new PlanError(`int8: ${part.weight} is split into buffers; store weights as f16`);
      }
      const w = L.weights.find((x) => x.name === part.weight)!;
      const q = int8Weight(L, part.weight);
      L.dispatch(
        pb,
        0,
        "quantize",
        { input: L.opts.weights, smooth: "none" },
        {
          rows: q.rows,
          cols: q.cols,
          xOffset: 0,
          qStride: packedStride(q.cols),
        },
        { x: w.buffer, q: q.q, scale: q.s },
        `quantize ${part.weight}`,
      );
    }
  }
}

/** A linear node as per-token activation quantisation + one int8 GEMM per part. */
function lowerLinearInt8(
  L: Lowering,
  pb: ProgramBuilder,
  host: number,
  rows: Expr,
  K: number,
  input: string,
  out: { buffer: string; stride: number },
  parts: { weight: string; bias?: string; cols: number }[],
  accumulate: boolean,
  scope: string,
): void {
  const choice = L.opts.int8!;
  const stride = packedStride(K);
  const cap = L.hosts[host].chunkCap;
  const qa = L.buffer(`h${host}.qa${stride}`, host, "i32", cap * stride, "activation");
  const sa = L.buffer(`h${host}.sa`, host, "f32", cap, "activation");
  L.dispatch(
    pb,
    host,
    "quantize",
    { input: "f32", smooth: "none" },
    {
      rows,
      cols: K,
      xOffset: 0,
      qStride: stride,
    },
    { x: input, q: qa, scale: sa },
    `${scope} quantize`,
  );
  let col = 0;
  for (const part of parts) {
    const w = int8Weight(L, part.weight);
    const bias = part.bias !== undefined;
    const spec = {
      matrix: choice.matrix,
      tile: defaultInt8Tile(typeof rows === "number" ? rows : L.opts.extendRows),
      subgroupSize: choice.subgroupSize,
      output: "f32",
      biasType: L.opts.weights,
      bias,
      accumulate,
      activation: "none",
    };
    const bind: Record<string, string> = { a: qa, sa, b: w.q, sw: w.s, c: out.buffer };
    if (bias) bind.bias = L.weights.find((x) => x.name === part.bias)!.buffer;
    const sizes = {
      M: rows,
      N: part.cols,
      K,
      kWords: stride,
      aOffset: 0,
      cStride: out.stride,
      cOffset: col,
    };
    L.dispatch(pb, host, "int8_matmul", spec, sizes, bind, `${scope} ${part.weight} (int8)`);
    col += part.cols;
  }
}

/**
 * The LM head: on each chunk, the rows that want logits go through the head into the host's
 * logits buffer; after the last chunk, their argmax.
 */
class LogitsLowering {
  readonly want: "all" | "last" | "none";
  #outputs = new Map<number, LogitsOutput>();

  constructor(readonly L: Lowering, readonly mode: Mode, readonly node: Node) {
    this.want = mode === "prefill" ? L.opts.prefillLogits : L.opts.extendLogits;
    if (this.want !== "none" && (node.op !== "linear" || node.attrs.accumulate)) {
      throw new PlanError(
        `${node.scope}: the model must end with a linear LM head, not ${node.op}`,
      );
    }
  }

  /** Emits the head for the wanted rows of `chunk` on host `h`. */
  chunk(pb: ProgramBuilder, h: HostInfo, chunk: Chunk): void {
    const rows = this.#rows(h, chunk);
    if (!rows) return;
    const L = this.L;
    const vocab = this.node.cols;
    const out = this.#output(h, rows.total, rows.tokens);
    const x = L.at(this.node.inputs[0], h.index, chunk.index);
    L.matmul(pb, h.index, {
      a: x.buffer,
      c: out.logits,
      weight: this.node.attrs.weight!,
      M: rows.count,
      K: L.graph.node(this.node.inputs[0]).cols,
      aOffset: rows.aOffset,
      cStride: vocab,
      cOffset: rows.outRow * vocab,
    }, "lm_head");
  }

  /** Emits the argmax of every host's logits; returns where the logits are. */
  finish(pb: ProgramBuilder): LogitsOutput[] {
    for (const out of this.#outputs.values()) {
      this.L.dispatch(
        pb,
        out.host,
        "argmax",
        {},
        {
          rows: out.rows,
          cols: this.node.cols,
        },
        { logits: out.logits, out: out.argmax },
        "argmax",
      );
    }
    return [...this.#outputs.values()];
  }

  #output(h: HostInfo, rows: Expr, tokens: LogitsOutput["tokens"]): LogitsOutput {
    let out = this.#outputs.get(h.index);
    if (!out) {
      const host = h.index;
      const L = this.L;
      const maxRows = typeof rows === "number" ? rows : L.opts.extendRows;
      out = {
        host,
        logits: L.buffer(`h${host}.logits`, host, "f32", maxRows * this.node.cols, "output"),
        argmax: L.buffer(`h${host}.argmax`, host, "u32", maxRows, "output"),
        rows,
        tokens,
      };
      this.#outputs.set(host, out);
    }
    return out;
  }

  /** Which rows of `chunk` want logits: count, first row in the chunk, row in the output. */
  #rows(h: HostInfo, chunk: Chunk) {
    if (this.want === "none") return null;
    if (this.mode === "extend") {
      if (!h.appends) return null;
      return this.want === "all"
        ? { count: "t", aOffset: 0, outRow: 0, total: "t", tokens: null }
        : { count: 1, aOffset: "t-1", outRow: 0, total: 1, tokens: null };
    }
    const start = chunk.start;
    const end = start + (chunk.rows as number);
    if (this.want === "last") {
      const last = this.L.opts.contextTokens - 1;
      for (const s of h.segments) {
        if (!s.keep || s.source.kind !== "context") continue;
        const at = last - s.source.start;
        if (at < 0 || at >= s.count) continue;
        const row = h.start.get(s.name)! + at;
        if (row < start || row >= end) return null;
        return {
          count: 1,
          aOffset: row - start,
          outRow: 0,
          total: 1,
          tokens: [{ token: last, count: 1 }],
        };
      }
      return null;
    }
    const [ks, ke] = h.keep;
    const from = Math.max(ks, start);
    const to = Math.min(ke, end);
    if (to <= from) return null;
    const tokens = h.segments
      .filter((s) => s.keep && s.count > 0)
      .map((s) => ({ token: (s.source as { start: number }).start, count: s.count }));
    return { count: to - from, aOffset: from - start, outRow: from - ks, total: ke - ks, tokens };
  }
}

/** WebGPU forbids binding one buffer as writable and as anything else in the same dispatch. */
function checkAliasing(bindings: BindingSpec[], bind: Record<string, string>, label: string): void {
  for (const w of bindings) {
    if (w.access !== "read_write") continue;
    for (const other of bindings) {
      if (other !== w && bind[other.name] !== undefined && bind[other.name] === bind[w.name]) {
        throw new Error(`internal: ${label} binds ${bind[w.name]} as ${w.name} and ${other.name}`);
      }
    }
  }
}

function checkShape(o: Required<LowerOptions>): void {
  const positive = (v: number, what: string, min = 1) => {
    if (!Number.isInteger(v) || v < min) {
      throw new PlanError(`${what} must be an integer ≥ ${min}, got ${v}`);
    }
  };
  positive(o.hosts, "hosts");
  positive(o.contextTokens, "context tokens");
  positive(o.queryTokens, "query tokens", 0);
  positive(o.extendRows, "extend rows");
  positive(o.maxNewTokens, "new-token capacity", 0);
  if (o.contextTokens < o.hosts) {
    throw new PlanError(`${o.hosts} hosts need at least ${o.hosts} tokens, got ${o.contextTokens}`);
  }
}

function checkConservation(name: string, hosts: HostInfo[], n: number): void {
  const owner = new Int32Array(n).fill(-1);
  for (const h of hosts) {
    for (const s of h.segments) {
      if (!s.keep) continue;
      if (s.source.kind !== "context") {
        throw new PlanError(`${name}: host ${h.index} keeps "${s.name}", which is not context`);
      }
      for (let i = s.source.start; i < s.source.start + s.count; i++) {
        if (i < 0 || i >= n) {
          throw new PlanError(`${name}: host ${h.index} keeps token ${i} of ${n}`);
        }
        if (owner[i] >= 0) {
          throw new PlanError(`${name}: token ${i} is kept by hosts ${owner[i]} and ${h.index}`);
        }
        owner[i] = h.index;
      }
    }
  }
  const lost = owner.indexOf(-1);
  if (lost >= 0) throw new PlanError(`${name}: context token ${lost} is kept by no host`);
}
