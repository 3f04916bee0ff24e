// Lowering of attention: the strategy's tasks become attention dispatches with a segment table
// (the mask as data), transfers that bring remote queries and keys, compressor steps for passed
// rows, and the writes or merges that bring results home.

import { PlanError } from "./errors.ts";
import type { Node } from "./graph.ts";
import type { Chunk, HostInfo, Lowering, Mode } from "./lower.ts";
import type { Expr } from "./plan.ts";
import type { ProgramBuilder } from "./program.ts";
import type { KvEntry, KvRef, Scorer } from "./strategies/strategy.ts";
import { hash2 } from "../wgsl/mod.ts";
import { int8Attention } from "./int8.ts";
import { kvTileLengths } from "../wgsl/_kv_tiles.ts";

const MAX_SEGMENTS = 8;

/** A run of a task's query rows that belongs to one host's segment. */
interface QueryPart {
  owner: number;
  row: number;
  count: number;
  position: number | null;
  /** First row of the part within the task's rows. */
  index: number;
}

/** Where a task's keys come from: cache rows of a host, or a host's compressor selection. */
type KvFrom = { kind: "cache"; host: number; row: number } | { kind: "selection"; id: number };

/** Keys of a task: rows of source 0 (received) or source 1 (the local cache). */
interface KvPart {
  src: 0 | 1;
  start: number;
  count: number;
  position: number | null;
  mask: "causal" | "full";
  from: KvFrom;
}

/** One row of the kernel's segment table. */
interface KernelSegment {
  src: number;
  kvStart: Expr;
  kvCount: Expr;
  qStart: number;
  qEnd: Expr;
  causal: number;
  diag: Expr;
}

/** A compressor selection made on one host each layer and read by others. */
export interface Selection {
  id: number;
  host: number;
  ref: Extract<KvRef, { kind: "selected" }>;
}

/** How a task's results reach their owners. */
type Output =
  | { kind: "direct"; accumulate: boolean }
  | { kind: "transfer" };

/** A strategy task with every row resolved. */
export interface ResolvedTask {
  executor: number;
  index: number;
  step: number;
  heads: [number, number];
  kvHeads: [number, number];
  queries: QueryPart[];
  qRows: number;
  direct: boolean;
  kv: KvPart[];
  recvRows: number;
  segments: KernelSegment[];
  output: Output;
  /** Rows of the owner to zero-fill just before this task (first coverage of a mixed range). */
  prefill: [number, number][];
}

/** Every task, selection and zero-fill of a plan (the same in every layer). */
export interface TaskSet {
  tasks: ResolvedTask[];
  selections: Selection[];
  steps: number[];
  /** Per host, rows no task writes: zero-filled each layer. */
  uncovered: [number, number][][];
}

/** Resolves the strategy's tasks against the hosts' layouts. */
export function resolveTasks(L: Lowering): TaskSet {
  const c = L.model.config;
  const group = c.heads / c.kvHeads;
  const plans = L.strategy.plan({
    hosts: L.hosts.length,
    contextTokens: L.opts.contextTokens,
    queryTokens: L.opts.queryTokens,
    model: c,
  });
  const selections: Selection[] = [];
  const tasks: ResolvedTask[] = [];
  plans.forEach((plan, executor) => {
    plan.tasks.forEach((task, index) => {
      const where = `${L.strategy.name}: host ${executor} task ${index}`;
      const heads = task.heads ?? [0, c.heads];
      if (
        heads[0] % group !== 0 || heads[1] % group !== 0 || heads[1] <= 0 ||
        heads[0] + heads[1] > c.heads
      ) {
        throw new PlanError(`${where}: heads ${heads} must be whole GQA groups of ${group}`);
      }
      const allHeads = heads[1] === c.heads;
      const queries = resolveQueries(L, task.queries, where);
      const qRows = queries.reduce((a, q) => a + q.count, 0);
      const contiguous = queries.every((q, i) =>
        q.owner === executor && (i === 0 || q.row === queries[i - 1].row + queries[i - 1].count)
      );
      const direct = allHeads && contiguous && qRows > 0;
      const resolved = task.kv
        .map((entry) => resolveKv(L, entry, executor, allHeads, selections, where))
        .filter((p): p is KvPart => p !== null && p.count > 0);
      // Keys no query row can see (zigzag's later chunks) are neither sent nor read.
      const kv = resolved.filter((p) => maskSegments(queries, [p], where).length > 0);
      let recvRows = 0;
      for (const part of kv) {
        if (part.src !== 0) continue;
        part.start = recvRows;
        recvRows += part.count;
      }
      const segments = coalesce(maskSegments(queries, kv, where));
      if (segments.length > MAX_SEGMENTS) {
        throw new PlanError(
          `${where}: needs ${segments.length} key segments; one attention dispatch takes ` +
            `${MAX_SEGMENTS}. Split the task or make its key ranges adjacent.`,
        );
      }
      tasks.push({
        executor,
        index,
        step: task.step ?? 0,
        heads: heads as [number, number],
        kvHeads: [heads[0] / group, heads[1] / group],
        queries,
        qRows,
        direct,
        kv,
        recvRows,
        segments,
        output: { kind: "transfer" },
        prefill: [],
      });
    });
  });
  tasks.sort((a, b) => a.step - b.step || a.executor - b.executor || a.index - b.index);
  const uncovered = planOutputs(L, tasks);
  const steps = [...new Set(tasks.map((t) => t.step))].sort((a, b) => a - b);
  return { tasks, selections, steps, uncovered };
}

function resolveQueries(
  L: Lowering,
  refs: { host: number; segment: string }[],
  where: string,
): QueryPart[] {
  let index = 0;
  return refs.map(({ host, segment }) => {
    const h = L.hosts[host];
    const s = h?.segments.find((x) => x.name === segment);
    if (!h || !s) throw new PlanError(`${where}: queries name host ${host} segment "${segment}"`);
    const part: QueryPart = {
      owner: host,
      row: h.start.get(segment)!,
      count: s.count,
      position: s.position === "zero" ? null : s.position,
      index,
    };
    index += s.count;
    return part;
  });
}

function resolveKv(
  L: Lowering,
  entry: KvEntry,
  executor: number,
  allHeads: boolean,
  selections: Selection[],
  where: string,
): KvPart | null {
  const ref = entry.kv;
  const h = L.hosts[ref.host];
  const s = h?.segments.find((x) => x.name === ref.segment);
  if (!h || !s) {
    throw new PlanError(`${where}: keys name host ${ref.host} segment "${ref.segment}"`);
  }
  if (ref.kind === "segment") {
    if (s.position === "zero") throw new PlanError(`${where}: padding cannot be attended to`);
    const [sub, count] = ref.rows ?? [0, s.count];
    if (sub < 0 || count < 0 || sub + count > s.count) {
      throw new PlanError(
        `${where}: rows ${sub}+${count} outside segment "${s.name}" (${s.count})`,
      );
    }
    const row = h.start.get(s.name)! + sub;
    const local = ref.host === executor && allHeads;
    return {
      src: local ? 1 : 0,
      start: local ? row : 0,
      count,
      position: s.position + sub,
      mask: entry.mask,
      from: { kind: "cache", host: ref.host, row },
    };
  }
  if (entry.mask !== "full") {
    throw new PlanError(
      `${where}: selected rows have scattered positions; their mask must be full`,
    );
  }
  const candidates = s.count - ref.exclude;
  if (ref.count > candidates || ref.exclude < 0) {
    throw new PlanError(
      `${where}: host ${ref.host} cannot pass ${ref.count} of its ${candidates} candidate rows`,
    );
  }
  if (ref.count === 0) return null;
  const key = JSON.stringify(ref);
  let sel = selections.find((x) => JSON.stringify(x.ref) === key);
  if (!sel) selections.push(sel = { id: selections.length, host: ref.host, ref });
  return {
    src: 0,
    start: 0,
    count: ref.count,
    position: null,
    mask: "full",
    from: { kind: "selection", id: sel.id },
  };
}

/** Segment-table rows for each (query run, key part): causal masks resolved from positions. */
type Positioned = KernelSegment & { position: number | null };

function maskSegments(queries: QueryPart[], kv: KvPart[], where: string): Positioned[] {
  const runs: { qStart: number; qEnd: number; position: number }[] = [];
  for (const q of queries) {
    if (q.position === null || q.count === 0) continue;
    const last = runs[runs.length - 1];
    if (last && last.qEnd === q.index && last.position + (last.qEnd - last.qStart) === q.position) {
      last.qEnd += q.count;
    } else runs.push({ qStart: q.index, qEnd: q.index + q.count, position: q.position });
  }
  const out: Positioned[] = [];
  for (const run of runs) {
    for (const part of kv) {
      const base = {
        src: part.src,
        kvStart: part.start,
        kvCount: part.count,
        qStart: run.qStart,
        qEnd: run.qEnd,
        position: part.position,
      };
      if (part.mask === "full") {
        out.push({ ...base, causal: 0, diag: 0 });
        continue;
      }
      if (part.position === null) throw new PlanError(`${where}: causal mask needs positions`);
      const lastQ = run.position + run.qEnd - run.qStart - 1;
      const lastK = part.position + part.count - 1;
      if (lastK <= run.position) out.push({ ...base, causal: 0, diag: 0 });
      else if (part.position <= lastQ) {
        out.push({ ...base, causal: 1, diag: run.position - part.position });
      }
    }
  }
  return out;
}

/** Merges adjacent key ranges with contiguous positions into one segment. */
function coalesce(segments: Positioned[]): KernelSegment[] {
  const out: Positioned[] = [];
  for (const s of segments) {
    const p = out[out.length - 1];
    const sameRows = p && p.qStart === s.qStart && p.qEnd === s.qEnd && p.src === s.src &&
      (p.kvStart as number) + (p.kvCount as number) === s.kvStart;
    // Two full ranges always merge (passing rows of several hosts have no positions); a causal
    // range merges only when positions continue, so one diagonal describes both.
    const bothFull = p?.causal === 0 && s.causal === 0;
    const contiguous = p?.position !== null && s.position !== null &&
      p?.position + (p?.kvCount as number) === s.position && !(p?.causal === 1 && s.causal === 0);
    if (!sameRows || !(bothFull || contiguous)) {
      out.push({ ...s });
      continue;
    }
    if (p.causal === 0 && s.causal === 1) {
      p.causal = 1;
      p.diag = (s.diag as number) + (p.kvCount as number);
    }
    if (bothFull && !contiguous) p.position = null;
    p.kvCount = (p.kvCount as number) + (s.kvCount as number);
  }
  return out.map(({ position: _, ...s }) => s);
}

/**
 * Decides how each task's rows reach their owner: tasks run on the owner with all heads write in
 * place (later ones merging into earlier ones); other tasks write a buffer that is copied home, and
 * then each (row, head) must come from exactly one task. Returns each host's unwritten rows.
 */
function planOutputs(L: Lowering, tasks: ResolvedTask[]): [number, number][][] {
  const c = L.model.config;
  const written = L.hosts.map((h) => new Uint8Array(h.rows));
  const headsCovered = L.hosts.map((h) => new Int32Array(h.rows));
  for (const t of tasks) {
    if (t.direct) {
      const q = t.queries;
      const [start, end] = [q[0].row, q[q.length - 1].row + q[q.length - 1].count];
      const w = written[t.executor];
      const fresh = ranges(w, start, end, 0);
      const all = fresh.length === 1 && fresh[0][0] === start && fresh[0][1] === end;
      t.output = { kind: "direct", accumulate: !all };
      if (!all) t.prefill = fresh;
      w.fill(1, start, end);
      continue;
    }
    t.output = { kind: "transfer" };
    for (const q of t.queries) {
      for (let r = q.row; r < q.row + q.count; r++) {
        if (written[q.owner][r]) {
          throw new PlanError(
            `${L.strategy.name}: row ${r} of host ${q.owner} gets results from several tasks, ` +
              `one of them on another host or for some heads only; that merge is not supported`,
          );
        }
        headsCovered[q.owner][r] += t.heads[1];
      }
    }
  }
  return L.hosts.map((h, i) => {
    for (let r = 0; r < h.rows; r++) {
      const heads = headsCovered[i][r];
      if (heads > c.heads || (heads > 0 && heads < c.heads)) {
        throw new PlanError(
          `${L.strategy.name}: row ${r} of host ${i} gets ${heads} of ${c.heads} heads from its tasks`,
        );
      }
      if (heads === c.heads) written[i][r] = 1;
    }
    return ranges(written[i], 0, h.rows, 0);
  });
}

/** Maximal runs in [start, end) where `flags` equals `value`. */
function ranges(flags: Uint8Array, start: number, end: number, value: number): [number, number][] {
  const out: [number, number][] = [];
  for (let r = start; r < end; r++) {
    if (flags[r] !== value) continue;
    const last = out[out.length - 1];
    if (last && last[1] === r) last[1] = r + 1;
    else out.push([r, r + 1]);
  }
  return out;
}

/**
 * What each host does per chunk before an attention, while the chunk's projections are at hand:
 * K (after RoPE) and V into the layer's cache, and the retaining heads' scores of its rows.
 */
export function attentionPrologue(
  L: Lowering,
  pb: ProgramBuilder,
  node: Node,
  h: HostInfo,
  chunk: Chunk,
  mode: Mode,
): void {
  if (mode === "extend") {
    if (h.appends) storeKv(L, pb, node, h, chunk, `${h.keep[1]}+past`);
    return;
  }
  storeKv(L, pb, node, h, chunk, chunk.start);
  for (const sel of L.tasks.selections) {
    if (sel.host === h.index && sel.ref.scorer.kind === "retaining") {
      retainingScores(L, pb, node, h, chunk, sel);
    }
  }
}

/** Lowers one attention node of the prefill program. */
export function lowerAttentionPrefill(
  L: Lowering,
  pb: ProgramBuilder,
  node: Node,
  set: TaskSet,
): void {
  const layer = node.attrs.attention!.layer;
  for (const sel of set.selections) select(L, pb, node, sel);
  for (const [i, step] of set.steps.entries()) {
    const tasks = set.tasks.filter((t) => t.step === step);
    for (const t of tasks) gatherInputs(L, pb, node, t, set);
    pb.sync(
      `layer ${layer} attention step ${step}`,
      layer,
      L.strategy.communication.overlapSteps && i > 0,
    );
    if (i === 0) {
      set.uncovered.forEach((list, host) => {
        for (const [start, end] of list) emptyFill(L, pb, node, host, start, end - start);
      });
    }
    for (const t of tasks) runTask(L, pb, node, t);
  }
  for (const t of set.tasks) if (t.output.kind === "transfer") sendHome(L, pb, node, t);
  pb.sync(`layer ${layer} attention output`, layer);
}

/** Writes a chunk's K (after RoPE) and V into the layer's cache from row `rowOffset` on. */
function storeKv(
  L: Lowering,
  pb: ProgramBuilder,
  node: Node,
  h: HostInfo,
  chunk: Chunk,
  rowOffset: Expr,
): void {
  const g = L.graph;
  const c = L.model.config;
  const layer = node.attrs.attention!.layer;
  const [, kId, vId] = node.inputs;
  const k = g.node(kId);
  const kRope = k.op === "rope";
  const kSrc = L.at(kRope ? k.inputs[0] : kId, h.index, chunk.index);
  const vSrc = L.at(vId, h.index, chunk.index);
  const base = { rows: chunk.rows, heads: c.kvHeads, headDim: c.headDim, outRowOffset: rowOffset };
  L.dispatch(pb, h.index, "rope", { rotate: kRope, out: L.opts.kv }, {
    ...base,
    inStride: kSrc.stride,
    inOffset: kSrc.offset,
    ...(kRope ? { posOffset: chunk.start } : {}),
  }, {
    x: kSrc.buffer,
    ...(kRope ? { positions: `h${h.index}.pos`, table: L.ropeTable(k) } : {}),
    out: L.cache("k", layer, h.index),
  }, `${node.scope} store k`);
  L.dispatch(
    pb,
    h.index,
    "rope",
    { rotate: false, out: L.opts.kv },
    {
      ...base,
      inStride: vSrc.stride,
      inOffset: vSrc.offset,
    },
    { x: vSrc.buffer, out: L.cache("v", layer, h.index) },
    `${node.scope} store v`,
  );
}

/** Scores of a selection's host, [rows, KV heads]. */
function scoresOf(L: Lowering, sel: Selection): string {
  const h = L.hosts[sel.host];
  const c = L.model.config;
  return L.buffer(`h${h.index}.scores${sel.id}`, h.index, "f32", h.rows * c.kvHeads, "exchange");
}

/** Rows [0, end) of a selection's segment, where its scores and pooling run. */
function selectionEnd(L: Lowering, sel: Selection): number {
  const h = L.hosts[sel.host];
  return h.start.get(sel.ref.segment)! + h.segments.find((s) => s.name === sel.ref.segment)!.count;
}

/** The compressor on the selection's host: score, pool, top-k per KV head, gather K and V. */
function select(L: Lowering, pb: ProgramBuilder, node: Node, sel: Selection): void {
  const c = L.model.config;
  const layer = node.attrs.attention!.layer;
  const h = L.hosts[sel.host];
  const host = h.index;
  const ref = sel.ref;
  const segStart = h.start.get(ref.segment)!;
  const segEnd = selectionEnd(L, sel);
  const scores = scoresOf(L, sel);
  const pooled = L.buffer(`h${host}.pooled`, host, "f32", h.rows * c.kvHeads, "exchange");
  if (ref.scorer.kind !== "retaining") {
    trainingFreeScores(L, pb, node, h, ref.scorer, segEnd, scores);
  }
  L.dispatch(pb, host, "maxpool", {}, { rows: segEnd, cols: c.kvHeads, width: ref.pool }, {
    x: scores,
    out: pooled,
  }, `${node.scope} pool scores`);
  const idx = L.buffer(`h${host}.idx${sel.id}`, host, "u32", ref.count * c.kvHeads, "exchange");
  L.dispatch(
    pb,
    host,
    "topk",
    {},
    {
      rows: segEnd,
      heads: c.kvHeads,
      k: ref.count,
      exclude: segStart + ref.exclude,
    },
    { scores: pooled, idx },
    `${node.scope} top-${ref.count}`,
  );
  for (const kind of ["k", "v"] as const) {
    const elements = ref.count * c.kvHeads * c.headDim;
    const out = L.buffer(`h${host}.send${kind}${sel.id}`, host, L.opts.kv, elements, "exchange");
    L.dispatch(
      pb,
      host,
      "gather",
      { elem: L.opts.kv },
      {
        k: ref.count,
        heads: c.kvHeads,
        headDim: c.headDim,
        srcRowOffset: 0,
      },
      { idx, src: L.cache(kind, layer, host), out },
      `${node.scope} gather ${kind}`,
    );
  }
}

/** Random or query-aware scores of rows [0, rows). */
function trainingFreeScores(
  L: Lowering,
  pb: ProgramBuilder,
  node: Node,
  h: HostInfo,
  scorer: Scorer,
  rows: number,
  scores: string,
): void {
  const c = L.model.config;
  const layer = node.attrs.attention!.layer;
  const host = h.index;
  const label = `${node.scope} ${scorer.kind} scores`;
  if (scorer.kind === "random") {
    const seed = hash2(scorer.seed >>> 0, layer, host);
    L.dispatch(
      pb,
      host,
      "random_score",
      {},
      { rows, heads: c.kvHeads, seed },
      { out: scores },
      label,
    );
    return;
  }
  const q = h.segments.find((s) => s.role === "query");
  if (!q || q.count === 0) {
    throw new PlanError(`the query-aware scorer needs a query segment on host ${host}`);
  }
  // The query's rows may straddle chunks: gather them into one buffer first.
  const width = c.heads * c.headDim;
  const qq = L.buffer(`h${host}.qq`, host, "f32", q.count * width, "exchange");
  const first = h.start.get(q.name)!;
  forEachChunk(L, first, q.count, (chunk, row, count, at) => {
    L.dispatch(
      pb,
      host,
      "copy2d",
      { elem: "f32" },
      {
        rows: count,
        cols: width,
        srcStride: width,
        srcOffset: row * width,
        dstStride: width,
        dstOffset: at * width,
      },
      { src: L.at(node.inputs[0], host, chunk).buffer, dst: qq },
      `${node.scope} query rows`,
    );
  });
  L.dispatch(
    pb,
    host,
    "query_score",
    { kv: L.opts.kv },
    {
      rows,
      kvHeads: c.kvHeads,
      heads: c.heads,
      headDim: c.headDim,
      qRows: q.count,
      kOffset: 0,
      qOffset: 0,
    },
    { k: L.cache("k", layer, host), q: qq, out: scores },
    label,
  );
}

/** Retaining heads on one chunk: W2·SiLU(W1·[q, k, v]) of its rows into the scores. */
function retainingScores(
  L: Lowering,
  pb: ProgramBuilder,
  node: Node,
  h: HostInfo,
  chunk: Chunk,
  sel: Selection,
): void {
  if (sel.ref.scorer.kind !== "retaining") return;
  const hidden = sel.ref.scorer.hidden;
  const c = L.model.config;
  const g = L.graph;
  const layer = node.attrs.attention!.layer;
  const host = h.index;
  const start = chunk.start;
  const rows = Math.min(chunk.rows as number, selectionEnd(L, sel) - start);
  if (rows <= 0) return;
  // The pre-RoPE [q | k | v] of each row is the fused projection's output, as it is in Llama.
  const [qn, kn, vn] = node.inputs.map((i) => g.node(i));
  const pre = (n: Node) => (n.op === "rope" ? g.node(n.inputs[0]) : n);
  const [qs, ks, vs] = [pre(qn), pre(kn), pre(vn)];
  const cat = qs.op === "slice" ? g.node(qs.inputs[0]) : undefined;
  const width = (c.heads + 2 * c.kvHeads) * c.headDim;
  if (
    !cat || cat.op !== "linear_cat" || cat.cols !== width || ks.inputs[0] !== cat.id ||
    vs.inputs[0] !== cat.id || qs.attrs.start !== 0 || ks.attrs.start !== c.heads * c.headDim
  ) {
    throw new PlanError(
      `${node.scope}: retaining heads need q, k, v projected together from one input ` +
        `(as Llama layers do); use --scorer query or random for this model`,
    );
  }
  const p = `model.layers.${layer}.self_attn`;
  const fc1 = `${p}.fc1.weight`;
  const fc2 = `${p}.fc2.weight`;
  L.weight(fc1, [hidden, width], 1 / Math.sqrt(width), "retaining");
  L.weight(fc2, [c.kvHeads, hidden], 1 / Math.sqrt(hidden), "retaining");
  const act = L.buffer(`h${host}.fc1`, host, "f32", h.chunkCap * hidden, "exchange");
  L.matmul(pb, host, {
    a: L.at(cat.id, host, chunk.index).buffer,
    c: act,
    weight: fc1,
    M: rows,
    K: width,
    cStride: hidden,
    cOffset: 0,
    activation: "silu",
  }, `${node.scope} retaining fc1`);
  L.matmul(pb, host, {
    a: act,
    c: scoresOf(L, sel),
    weight: fc2,
    M: rows,
    K: hidden,
    cStride: c.kvHeads,
    cOffset: start * c.kvHeads,
  }, `${node.scope} retaining scores`);
}

/**
 * Calls `fn(chunk, rowInChunk, count, at)` for each chunk piece of local rows
 * [first, first + count); `at` counts rows from `first`.
 */
function forEachChunk(
  L: Lowering,
  first: number,
  count: number,
  fn: (chunk: number, row: number, count: number, at: number) => void,
): void {
  let r = first;
  while (r < first + count) {
    const { chunk, row } = L.chunkOf(r);
    const n = Math.min(L.chunkRows - row, first + count - r);
    fn(chunk, row, n, r - first);
    r += n;
  }
}

/** Queues the transfers that bring a task's remote (or head-sliced) queries and keys. */
function gatherInputs(
  L: Lowering,
  pb: ProgramBuilder,
  node: Node,
  t: ResolvedTask,
  set: TaskSet,
) {
  const c = L.model.config;
  const d = c.headDim;
  const layer = node.attrs.attention!.layer;
  const X = t.executor;
  if (!t.direct) {
    const hc = t.heads[1];
    const tq = L.buffer(`h${X}.tq${t.index}`, X, "f32", t.qRows * hc * d, "exchange");
    for (const q of t.queries) {
      forEachChunk(L, q.row, q.count, (chunk, row, count, at) => {
        const src = L.at(node.inputs[0], q.owner, chunk);
        pb.transfer({
          from: q.owner,
          to: X,
          src: src.buffer,
          dst: tq,
          elem: "f32",
          rows: count,
          cols: hc * d,
          srcStride: src.stride,
          srcOffset: row * src.stride + src.offset + t.heads[0] * d,
          dstStride: hc * d,
          dstOffset: (q.index + at) * hc * d,
          label: `q rows of host ${q.owner}`,
        });
      });
    }
  }
  const [kh0, khc] = t.kvHeads;
  for (const part of t.kv) {
    if (part.src !== 0) continue;
    for (const kind of ["k", "v"] as const) {
      const recv = L.buffer(
        `h${X}.r${kind}${t.index}`,
        X,
        L.opts.kv,
        t.recvRows * khc * d,
        "exchange",
      );
      const from = part.from;
      const sel = from.kind === "selection" ? set.selections[from.id] : undefined;
      const srcHost = from.kind === "cache" ? from.host : sel!.host;
      const src = from.kind === "cache"
        ? L.cache(kind, layer, from.host)
        : `h${sel!.host}.send${kind}${sel!.id}`;
      const row = from.kind === "cache" ? from.row : 0;
      pb.transfer({
        from: srcHost,
        to: X,
        src,
        dst: recv,
        elem: L.opts.kv,
        rows: part.count,
        cols: khc * d,
        srcStride: c.kvHeads * d,
        srcOffset: (row * c.kvHeads + kh0) * d,
        dstStride: khc * d,
        dstOffset: part.start * khc * d,
        label: `${kind} ${
          from.kind === "cache" ? `rows ${row}+${part.count}` : "passing"
        } of host ${srcHost}`,
      });
    }
  }
}

/** Dispatches one task's attention (a direct task once per chunk its queries touch). */
function runTask(L: Lowering, pb: ProgramBuilder, node: Node, t: ResolvedTask): void {
  const c = L.model.config;
  const layer = node.attrs.attention!.layer;
  const X = t.executor;
  for (const [start, end] of t.prefill) emptyFill(L, pb, node, X, start, end - start);
  const cache = { k: L.cache("k", layer, X), v: L.cache("v", layer, X) };
  const recv = t.recvRows > 0 ? { k: `h${X}.rk${t.index}`, v: `h${X}.rv${t.index}` } : cache;
  const [family, spec] = taskKernel(L, t.output.kind === "direct" && t.output.accumulate);
  const label = `${node.scope} attention task ${t.index}`;
  const kv = { k0: recv.k, v0: recv.v, k1: cache.k, v1: cache.v };
  // int8 attention reads K and V quantised for its dispatch by kv_quantize, just before it.
  const kvFor = (sizes: Record<string, Expr>): Record<string, string> =>
    family === "int8_attention" ? quantizeKv(L, pb, X, sizes, kv, label) : kv;
  if (t.output.kind === "direct") {
    const first = t.queries[0].row;
    forEachChunk(L, first, t.qRows, (chunk, row, count, at) => {
      const segments = shiftSegments(t.segments, at, count);
      const sizes = attentionSizes(L, segments, {
        qRows: count,
        heads: t.heads[1],
        kvHeads: t.kvHeads[1],
        qOffset: row,
        outOffset: row,
      });
      L.dispatch(pb, X, family, spec, sizes, {
        ...kvFor(sizes),
        q: L.at(node.inputs[0], X, chunk).buffer,
        out: L.at(node.id, X, chunk).buffer,
        lse: L.lseScratch(X, chunk),
      }, label);
    });
    return;
  }
  const hc = t.heads[1];
  const sizes = attentionSizes(L, t.segments, {
    qRows: t.qRows,
    heads: hc,
    kvHeads: t.kvHeads[1],
    qOffset: 0,
    outOffset: 0,
  });
  const rows = t.qRows;
  L.dispatch(pb, X, family, spec, sizes, {
    ...kvFor(sizes),
    q: `h${X}.tq${t.index}`,
    out: L.buffer(`h${X}.to${t.index}`, X, "f32", rows * hc * c.headDim, "exchange"),
    lse: L.buffer(`h${X}.tl${t.index}`, X, "f32", rows * hc, "exchange"),
  }, label);
}

/**
 * Dispatches kv_quantize for an int8 attention dispatch of these sizes on `host`; returns the
 * bindings of the codes and scales it writes (host scratch, sized for the host's largest dispatch).
 */
function quantizeKv(
  L: Lowering,
  pb: ProgramBuilder,
  host: number,
  sizes: Record<string, Expr>,
  kv: Record<string, string>,
  label: string,
): Record<string, string> {
  const numeric: Record<string, number> = {};
  for (const [k, v] of Object.entries(sizes)) {
    if (typeof v !== "number") throw new Error(`int8 attention: size ${k} = ${v} is not static`);
    numeric[k] = v;
  }
  const d = L.model.config.headDim;
  const lengths = kvTileLengths(numeric, d);
  const codes = L.buffer(`h${host}.kvcodes`, host, "i32", lengths.codes, "activation");
  const scales = L.buffer(`h${host}.kvscales`, host, "f32", lengths.scales, "activation");
  L.dispatch(pb, host, "kv_quantize", { headDim: d, kv: L.opts.kv }, sizes, {
    ...kv,
    codes,
    scales,
  }, `${label} K/V to int8`);
  return { codes, scales };
}

/**
 * The kernel of a prefill attention task: int8_attention (same sizes, K/V through kv_quantize)
 * in int8 plans whose head size it takes, else the f32 family. Extend steps keep the f32 kernel: their few
 * query rows would leave the int8 kernel's 64-pair workgroups mostly empty.
 */
function taskKernel(L: Lowering, accumulate: boolean): [string, Record<string, unknown>] {
  const c = L.model.config;
  const int8 = L.opts.int8;
  if (int8 && int8Attention(c.headDim, int8)) {
    return ["int8_attention", {
      headDim: c.headDim,
      accumulate,
      matrixN: int8.matrix.n,
      subgroupSize: int8.subgroupSize,
    }];
  }
  return ["attention", { headDim: c.headDim, kv: L.opts.kv, accumulate }];
}

/** A task's segment table for its query rows [at, at + count), renumbered from 0. */
function shiftSegments(segments: KernelSegment[], at: number, count: number): KernelSegment[] {
  const out: KernelSegment[] = [];
  for (const s of segments) {
    const qStart = Math.max(s.qStart - at, 0);
    const qEnd = Math.min((s.qEnd as number) - at, count);
    if (qEnd <= qStart) continue;
    // Keep each row's visible keys: row i (task numbering) = row i − at here.
    const diag = (s.diag as number) + at + qStart - s.qStart;
    out.push({ ...s, qStart, qEnd, diag });
  }
  return out;
}

function attentionSizes(
  L: Lowering,
  segments: KernelSegment[],
  base: Record<string, Expr>,
): Record<string, Expr> {
  const c = L.model.config;
  const sizes: Record<string, Expr> = {
    ...base,
    scale: 1 / Math.sqrt(c.headDim),
    nseg: segments.length,
  };
  segments.forEach((s, i) => {
    for (const [k, v] of Object.entries(s)) sizes[`${k}${i}`] = v;
  });
  return sizes;
}

/** Writes zeros (and −inf log-sum-exp) to attention output rows no task covers. */
function emptyFill(
  L: Lowering,
  pb: ProgramBuilder,
  node: Node,
  host: number,
  first: number,
  count: number,
) {
  const c = L.model.config;
  const layer = node.attrs.attention!.layer;
  const cache = { k: L.cache("k", layer, host), v: L.cache("v", layer, host) };
  forEachChunk(L, first, count, (chunk, row, n) => {
    const sizes = attentionSizes(L, [], {
      qRows: n,
      heads: c.heads,
      kvHeads: c.kvHeads,
      qOffset: 0,
      outOffset: row,
    });
    const spec = { headDim: c.headDim, kv: L.opts.kv, accumulate: false };
    L.dispatch(pb, host, "attention", spec, sizes, {
      // Never read (no segments), but it must be another buffer than out to be bound.
      q: L.at(node.inputs[0], host, chunk).buffer,
      k0: cache.k,
      v0: cache.v,
      k1: cache.k,
      v1: cache.v,
      out: L.at(node.id, host, chunk).buffer,
      lse: L.lseScratch(host, chunk),
    }, `${node.scope} zero rows ${first}+${count}`);
  });
}

/** Copies a task's results to their owners' attention output (head columns of their rows). */
function sendHome(L: Lowering, pb: ProgramBuilder, node: Node, t: ResolvedTask): void {
  const d = L.model.config.headDim;
  const hc = t.heads[1];
  for (const q of t.queries) {
    forEachChunk(L, q.row, q.count, (chunk, row, count, at) => {
      const dst = L.at(node.id, q.owner, chunk);
      pb.transfer({
        from: t.executor,
        to: q.owner,
        src: `h${t.executor}.to${t.index}`,
        dst: dst.buffer,
        elem: "f32",
        rows: count,
        cols: hc * d,
        srcStride: hc * d,
        srcOffset: (q.index + at) * hc * d,
        dstStride: dst.stride,
        dstOffset: row * dst.stride + t.heads[0] * d,
        label: `attention rows for host ${q.owner}`,
      });
    });
  }
}

/**
 * Lowers one attention node of the extend program (Star Attention phase 2): every host attends
 * its kept cache, the appending host also its appended rows; partial results are all-gathered
 * and merged by log-sum-exp on every host.
 */
export function lowerAttentionExtend(L: Lowering, pb: ProgramBuilder, node: Node): void {
  const c = L.model.config;
  const d = c.headDim;
  const layer = node.attrs.attention!.layer;
  const H = L.hosts.length;
  const E = L.opts.extendRows;
  const parity = L.strategy.parity ?? false;
  const partial = (h: number) => ({
    o: L.buffer(`h${h}.po`, h, "f32", H * E * c.heads * d, "exchange"),
    l: L.buffer(`h${h}.pl`, h, "f32", H * E * c.heads, "exchange"),
  });
  for (const h of L.hosts) {
    const [ks, ke] = h.keep;
    const segments: KernelSegment[] = [];
    if (ke > ks) {
      const bottomRight = parity && !h.appends;
      segments.push({
        src: 1,
        kvStart: ks,
        kvCount: ke - ks,
        qStart: 0,
        qEnd: "t",
        causal: bottomRight ? 1 : 0,
        diag: bottomRight ? `${ke - ks}-t` : 0,
      });
    }
    if (h.appends) {
      segments.push({
        src: 1,
        kvStart: ke,
        kvCount: "past+t",
        qStart: 0,
        qEnd: "t",
        causal: 1,
        diag: "past",
      });
    }
    const cache = { k: L.cache("k", layer, h.index), v: L.cache("v", layer, h.index) };
    const out = H === 1 ? L.at(node.id, h.index, 0).buffer : partial(h.index).o;
    const lse = H === 1 ? L.lseScratch(h.index, 0) : partial(h.index).l;
    const sizes = attentionSizes(L, segments, {
      qRows: "t",
      heads: c.heads,
      kvHeads: c.kvHeads,
      qOffset: 0,
      outOffset: H === 1 ? 0 : h.index * E,
    });
    L.dispatch(pb, h.index, "attention", { headDim: d, kv: L.opts.kv, accumulate: false }, sizes, {
      q: L.at(node.inputs[0], h.index, 0).buffer,
      k0: cache.k,
      v0: cache.v,
      k1: cache.k,
      v1: cache.v,
      out,
      lse,
    }, `${node.scope} attention (local cache)`);
  }
  if (H === 1) return;
  for (let from = 0; from < H; from++) {
    for (let to = 0; to < H; to++) {
      if (from === to) continue;
      for (const [kind, width] of [["o", c.heads * d], ["l", c.heads]] as const) {
        pb.transfer({
          from,
          to,
          src: partial(from)[kind],
          dst: partial(to)[kind],
          elem: "f32",
          rows: "t",
          cols: width,
          srcStride: width,
          srcOffset: from * E * width,
          dstStride: width,
          dstOffset: from * E * width,
          label: `partial ${kind === "o" ? "output" : "lse"} of host ${from}`,
        });
      }
    }
  }
  pb.sync(`layer ${layer} merge`, layer);
  for (const h of L.hosts) {
    L.dispatch(pb, h.index, "lse_merge", {}, {
      parts: H,
      rows: "t",
      heads: c.heads,
      headDim: d,
      partStride: E,
    }, {
      o: partial(h.index).o,
      lse: partial(h.index).l,
      out: L.at(node.id, h.index, 0).buffer,
      outLse: L.lseScratch(h.index, 0),
    }, `${node.scope} merge ${H} partials`);
  }
}
