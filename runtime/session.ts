// A session: a plan, an executor with its weights, and the cache state between calls. prefill()
// runs the context, extend() runs new tokens over the distributed cache (the query pass and each
// decode step), generate() does both greedily.

import { type Plan, validatePlan } from "../compiler/plan.ts";
import type { Segment } from "../compiler/strategies/strategy.ts";
import { createCpuExecutor } from "./cpu_executor.ts";
import { type Gpu, openGpu } from "./device.ts";
import type { Executor, HostInputs, RunOptions, RunResult, WeightSource } from "./executor.ts";
import { createGpuExecutor } from "./gpu_executor.ts";

/** Raised for inputs that do not fit the plan (lengths, token ids, capacity). */
export class InputError extends Error {
  /** The error\'s name. */
  override name = "InputError";
}

/** Options of {@linkcode Session.open}. */
export interface SessionOptions {
  /** Run on WebGPU (default) or on the float64 CPU reference. */
  backend?: "gpu" | "cpu";
  /** An open device to reuse. */
  gpu?: Gpu;
  /** One GPUDevice per host, transfers staged through the host. */
  devicePerHost?: boolean;
  /** Weights; seeded random (seed 0) by default. */
  weights?: WeightSource;
  /** WGSL by kernel id, replacing generated code. */
  kernelCode?: Record<string, string>;
}

/** Tokens produced by {@linkcode Session.generate}, with the runs that made them. */
export interface Generation {
  /** New token ids. */
  tokens: number[];
  /** The prefill run. */
  prefill: RunResult;
  /** The query pass, when a query was given. */
  query: RunResult | null;
  /** One run per decode step. */
  decode: RunResult[];
}

/** A plan ready to run, with its cache state. */
export class Session {
  #appended = 0;
  #prefilled = false;

  private constructor(readonly plan: Plan, readonly executor: Executor) {}

  /** Opens a session on `plan` (validated first). */
  static async open(plan: Plan, options: SessionOptions = {}): Promise<Session> {
    validatePlan(plan);
    const weights = options.weights ?? { seed: 0 };
    if (options.backend === "cpu") {
      return await Session.#setUp(plan, await createCpuExecutor(plan, weights));
    }
    const gpu = options.gpu ?? await openGpu();
    const executor = await createGpuExecutor(plan, gpu, {
      weights,
      devicePerHost: options.devicePerHost,
      kernelCode: options.kernelCode,
    });
    return await Session.#setUp(plan, executor);
  }

  /** Runs the plan's setup program (if it has steps) once, then wraps the executor. */
  static async #setUp(plan: Plan, executor: Executor): Promise<Session> {
    if (plan.programs.setup?.phases.length) {
      const none = plan.hosts.map(() => ({
        ids: new Uint32Array(0),
        positions: new Uint32Array(0),
      }));
      await executor.run("setup", none, {});
    }
    return new Session(plan, executor);
  }

  /** Tokens appended to the cache since prefill. */
  get appended(): number {
    return this.#appended;
  }

  /** Prefills the context (and the query, where the strategy embeds it); resets the cache. */
  async prefill(
    context: ArrayLike<number>,
    query: ArrayLike<number> = [],
    options: RunOptions = {},
  ): Promise<RunResult> {
    const inputs = prefillInputs(this.plan, context, query);
    const result = await this.executor.run("prefill", inputs, {}, options);
    this.#appended = 0;
    this.#prefilled = true;
    return result;
  }

  /** Runs `tokens` after everything so far, appending their KV; returns their logits. */
  async extend(tokens: ArrayLike<number>, options: RunOptions = {}): Promise<RunResult> {
    if (!this.#prefilled) throw new InputError("extend() needs a prefill() first");
    const { extendRows, maxNewTokens, contextTokens } = this.plan.shape;
    const t = tokens.length;
    if (t === 0 || t > extendRows) {
      throw new InputError(
        `extend takes 1 to ${extendRows} tokens per call (plan limit), got ${t}`,
      );
    }
    if (this.#appended + t > maxNewTokens) {
      throw new InputError(
        `the cache holds ${maxNewTokens} new tokens after the context (plan limit); ` +
          `${this.#appended} are used and ${t} more were asked for. Recompile with a larger --generate.`,
      );
    }
    checkIds(this.plan, tokens, "new tokens");
    const ids = Uint32Array.from(tokens);
    const positions = Uint32Array.from({ length: t }, (_, i) => contextTokens + this.#appended + i);
    const inputs = this.plan.hosts.map((): HostInputs => ({ ids, positions }));
    const result = await this.executor.run("extend", inputs, { t, past: this.#appended }, options);
    this.#appended += t;
    return result;
  }

  /**
   * Greedy generation: prefill the context, run the query (if any) over the cache, then decode
   * `maxNew` tokens one at a time, stopping early at any of `stop`.
   */
  async generate(
    context: ArrayLike<number>,
    options: { query?: ArrayLike<number>; maxNew: number; stop?: number[] },
  ): Promise<Generation> {
    const query = options.query ?? [];
    const prefill = await this.prefill(context, query);
    const queryRun = query.length ? await this.extend(query) : null;
    let next = lastToken(queryRun ?? prefill, this.plan);
    const tokens: number[] = [];
    const decode: RunResult[] = [];
    while (tokens.length < options.maxNew) {
      tokens.push(next);
      if (options.stop?.includes(next) || tokens.length === options.maxNew) break;
      const run = await this.extend([next]);
      decode.push(run);
      next = lastToken(run, this.plan);
    }
    return { tokens, prefill, query: queryRun, decode };
  }

  /** Frees the device memory. */
  destroy(): void {
    this.executor.destroy();
  }
}

/** The argmax of the last row a run produced (the next token). */
export function lastToken(run: RunResult, plan: Plan): number {
  const last = plan.shape.contextTokens - 1;
  for (const out of run.logits) {
    if (!out.tokens) return out.argmax[out.rows - 1];
    let row = 0;
    for (const { token, count } of out.tokens) {
      if (last >= token && last < token + count) return out.argmax[row + last - token];
      row += count;
    }
  }
  throw new InputError("this run produced no logits for its last token");
}

/** Each host's token ids and positions for prefill, assembled from its segments. */
export function prefillInputs(
  plan: Plan,
  context: ArrayLike<number>,
  query: ArrayLike<number>,
): HostInputs[] {
  const { contextTokens, queryTokens } = plan.shape;
  if (context.length !== contextTokens) {
    throw new InputError(
      `this plan was compiled for ${contextTokens} context tokens, got ${context.length}; ` +
        `recompile with --tokens ${context.length}`,
    );
  }
  const usesQuery = plan.hosts.some((h) =>
    h.segments.some((s) => s.source.kind === "query" || s.source.kind === "anchor")
  );
  if (query.length !== queryTokens && (query.length > 0 || usesQuery && queryTokens > 0)) {
    throw new InputError(
      `this plan was compiled for a query of ${queryTokens} tokens, got ${query.length}; ` +
        `recompile with --query ${query.length}`,
    );
  }
  checkIds(plan, context, "context");
  checkIds(plan, query, "query");
  return plan.hosts.map((h) => {
    const ids = new Uint32Array(h.rows);
    const positions = new Uint32Array(h.rows);
    let row = 0;
    for (const s of h.segments) {
      const tokens = segmentTokens(s, context, query);
      for (let i = 0; i < s.count; i++) {
        ids[row + i] = tokens[i];
        positions[row + i] = s.position === "zero" ? 0 : s.position + i;
      }
      row += s.count;
    }
    return { ids, positions };
  });
}

function segmentTokens(s: Segment, context: ArrayLike<number>, query: ArrayLike<number>): number[] {
  const slice = (a: ArrayLike<number>, from: number, to: number) =>
    Array.from({ length: Math.max(0, to - from) }, (_, i) => a[from + i]);
  switch (s.source.kind) {
    case "context":
      return slice(context, s.source.start, s.source.start + s.count);
    case "query":
      return slice(query, 0, s.count);
    case "pad":
      return new Array(s.count).fill(0);
    case "anchor": {
      // The document's start with the query inserted at an offset; the prefix shifts right and
      // its last |query| tokens fall out, so the anchor keeps its length (APB's construction).
      const at = Math.min(s.source.queryOffset, s.count);
      const q = slice(query, 0, Math.min(query.length, s.count - at));
      return [...slice(context, 0, at), ...q, ...slice(context, at, s.count - q.length)];
    }
  }
}

function checkIds(plan: Plan, ids: ArrayLike<number>, what: string): void {
  const vocab = plan.model.config.vocabSize;
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id >= vocab) {
      throw new InputError(`${what} token ${i} is ${id}; ids must be integers in [0, ${vocab})`);
    }
  }
}
