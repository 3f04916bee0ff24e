// What one layer of a plan's prefill does, recovered from the plan alone: each host's query rows,
// the key sources they read and under which mask, and the transfers between hosts. The plan keeps
// kernels and copies, not the strategy's tasks, so a drawing (or a check) reads this value instead
// of decoding segment tables itself. Attention is the same in every layer; layer 0 stands for all.

import type { Expr, Phase, Plan, Step, Transfer } from "./plan.ts";
import type { Segment } from "./strategies/strategy.ts";
import type { ElementType } from "../wgsl/kernel.ts";
import { ATTENTION_FAMILIES } from "../wgsl/mod.ts";

/** A run of query rows that one host computes: one segment (or part of one) of its owner. */
export interface RowGroup {
  /** Host whose rows these are (another host's under Ulysses). */
  owner: number;
  /** Segment of the owner. */
  segment: string;
  /** The segment's role. */
  role: string;
  /** Rows of the group (the whole segment). */
  count: number;
  /** Global position of the first row, or null for padding. */
  position: number | null;
}

/** A source of keys one host reads: a host's cached segment, or the rows a host passes on. */
export interface ColGroup {
  /** "cache": rows of a segment as stored; "passing": rows a compressor picked (top-k). */
  source: "cache" | "passing";
  /** Host the keys come from. */
  host: number;
  /** Segment of that host ("" for passing rows, whose segment the plan does not name). */
  segment: string;
  /** The segment's role, or "passing". */
  role: string;
  /** Keys in the group. */
  count: number;
  /** Global position of the first key; for passing rows, of the source host's kept rows. */
  position: number | null;
  /** Attention steps (ring steps; 0 when there is one) that read the group. */
  steps: number[];
}

/**
 * A rectangle of (row group, column group) cells that attend. With mask "causal", cell (r, c) of
 * the rectangle attends only when c ≤ r + diag (group-local indices).
 */
export interface MaskBlock {
  /** Index into {@linkcode HostAttention.rows}. */
  row: number;
  /** Index into {@linkcode HostAttention.cols}. */
  col: number;
  /** Group-local rows [start, end). */
  rows: [number, number];
  /** Group-local columns [start, end). */
  cols: [number, number];
  /** Mask kind. */
  mask: "full" | "causal";
  /** Causal offset in group-local indices (0 for full). */
  diag: number;
  /** Attention step that computes it. */
  step: number;
}

/** What one host's attention computes in a layer. */
export interface HostAttention {
  /** Host index. */
  host: number;
  /** Query row groups, by global position (padding last). */
  rows: RowGroup[];
  /** Key column groups, by global position. */
  cols: ColGroup[];
  /** The attending cells; everything else is masked out. */
  blocks: MaskBlock[];
  /** Query rows no kernel attends (zero-filled, e.g. padding), as indices into `rows`. */
  empty: number[];
  /** Query heads [start, count] this host computes; all heads unless heads are split. */
  heads: [number, number];
}

/** All transfers of a phase from one host to another. */
export interface Arrow {
  /** Source host. */
  from: number;
  /** Destination host. */
  to: number;
  /** Bytes moved (rows × cols × element size, summed). */
  bytes: number;
  /** The transfers. */
  transfers: Transfer[];
  /**
   * What they carry: "keys" (cached K/V rows), "passing" (rows a compressor picked), "other"
   * (queries, attention results), or "mixed".
   */
  carries: "keys" | "passing" | "other" | "mixed";
}

/** One phase's transfers, grouped by host pair. */
export interface Collective {
  /** Phase name. */
  phase: string;
  /** Whether the transfers overlap the previous phase's compute. */
  overlapPrevious: boolean;
  /** Transfers between different hosts, by (from, to). */
  arrows: Arrow[];
  /** Copies within one host (Ulysses gathers its own head slice too), by host. */
  local: Arrow[];
  /** Bytes of all of them. */
  bytes: number;
}

/** Layer 0 of the prefill program, as a picture needs it. */
export interface LayerView {
  /** Per host, its attention. */
  attention: HostAttention[];
  /** Number of attention steps (ring steps) in the layer. */
  steps: number;
  /** Phases with transfers in the layer. */
  collectives: Collective[];
}

const ELEMENT_BYTES: Record<ElementType, number> = { f32: 4, u32: 4, i32: 4, f16: 2 };

/** Bytes of a transfer: rows × cols × element size (NaN when rows is a run-time expression). */
export function transferBytes(t: Transfer): number {
  return num(t.rows) * t.cols * ELEMENT_BYTES[t.elem];
}

/** Recovers layer 0 of `plan`'s prefill program. */
export function layerView(plan: Plan): LayerView {
  const phases = plan.programs.prefill.phases;
  const found = plan.hosts.map((_, host) => layerZeroAttention(plan, phases, host));
  // Steps are numbered by the phases that run layer-0 attention: each such phase is one ring step.
  const stepPhases = [
    ...new Set(found.flat().filter((a) => !isEmptyFill(a.step)).map((a) => a.phase)),
  ]
    .sort((a, b) => a - b);
  const attention = found.map((list, host) =>
    hostAttention(plan, phases, host, list, (p) => Math.max(0, stepPhases.indexOf(p)))
  );
  const carries = carriesOf(plan);
  const collectives = phases.filter((p) => p.layer === 0 && p.transfers.length > 0)
    .map((p) => collective(p, carries));
  return { attention, steps: Math.max(1, stepPhases.length), collectives };
}

/** An attention dispatch and the index of its phase. */
interface Located {
  step: Step;
  phase: number;
}

/**
 * The host's attention dispatches of layer 0. Phases split only where data crosses hosts, so a
 * phase named for layer 0 may hold layer 1's first dispatches, and layer 0's first ones may sit in
 * an earlier phase; each layer binds its own KV cache, so the cache buffer tells layers apart.
 */
function layerZeroAttention(plan: Plan, phases: Phase[], host: number): Located[] {
  const all: Located[] = [];
  phases.forEach((phase, index) => {
    for (const step of phase.steps[host]) {
      if (ATTENTION_FAMILIES.has(plan.kernels[step.kernel]?.family ?? "")) {
        all.push({ step, phase: index });
      }
    }
  });
  if (all.length === 0) return [];
  const cache = all[0].step.bind.k1;
  if (cache !== undefined) return all.filter((a) => a.step.bind.k1 === cache);
  return all.slice(0, Math.ceil(all.length / Math.max(1, plan.model.config.layers)));
}

function isEmptyFill(step: Step): boolean {
  return num(step.sizes.nseg) === 0;
}

/** A piece of a dispatch's rows or keys that maps onto one group. */
interface Piece {
  /** First index in the dispatch's own numbering (query row i, or key row of its source). */
  at: number;
  count: number;
  group: number;
  /** Group-local index of `at`. */
  offset: number;
}

function hostAttention(
  plan: Plan,
  phases: Phase[],
  host: number,
  list: Located[],
  stepOf: (phase: number) => number,
): HostAttention {
  const rows = new Groups<RowGroup>();
  const cols = new Groups<ColGroup>();
  const raw: MaskBlock[] = [];
  const empty = new Set<number>();
  const c = plan.model.config;
  let heads: [number, number] = [0, c.heads];
  for (const { step, phase } of list) {
    const s = step.sizes;
    const stepNo = stepOf(phase);
    if (isEmptyFill(step)) {
      const pieces = segmentPieces(plan, rows, host, num(s.outOffset), num(s.qRows), 0);
      for (const p of pieces) empty.add(p.group);
      continue;
    }
    const qIn = incoming(phases, phase, step.bind.q);
    const qPieces = qIn.length
      ? qIn.flatMap((t) => segmentPieces(plan, rows, t.from, srcRow(t), num(t.rows), dstRow(t)))
      : segmentPieces(plan, rows, host, num(s.qOffset), num(s.qRows), 0);
    if (num(s.heads) < c.heads) heads = [headStart(plan, qIn[0]), num(s.heads)];
    const nseg = num(s.nseg);
    for (let k = 0; k < nseg; k++) {
      const seg = {
        src: num(s[`src${k}`]),
        kvStart: num(s[`kvStart${k}`]),
        kvCount: num(s[`kvCount${k}`]),
        qStart: num(s[`qStart${k}`]),
        qEnd: num(s[`qEnd${k}`]),
        causal: num(s[`causal${k}`]) !== 0,
        diag: num(s[`diag${k}`]),
      };
      const kPieces = keyPieces(plan, phases, phase, step, host, cols, seg.src);
      for (const q of clip(qPieces, seg.qStart, seg.qEnd)) {
        for (const key of clip(kPieces, seg.kvStart, seg.kvStart + seg.kvCount)) {
          raw.push(block(q, key, seg, stepNo));
        }
      }
    }
  }
  const rowOrder = rows.sorted((a, b) => order(a.position, b.position) || a.owner - b.owner);
  const seen = raw.filter((b) => b.mask === "full" || visible(b));
  for (const b of seen) cols.items[b.col].steps.push(b.step);
  // Own segments nobody reads (padding) are no key source; other hosts' rows that arrived are,
  // even when the mask hides them all (zigzag receives chunks it cannot see).
  const colOrder = cols.sorted((a, b) =>
    order(a.position, b.position) || rank(a, host) - rank(b, host) || a.host - b.host
  ).filter((i) => cols.items[i].steps.length > 0 || cols.items[i].host !== host);
  const blocks = seen.map((b) => ({
    ...b,
    row: rowOrder.indexOf(b.row),
    col: colOrder.indexOf(b.col),
  }));
  return {
    host,
    rows: rowOrder.map((i) => rows.items[i]),
    cols: colOrder.map((i) => ({
      ...cols.items[i],
      steps: [...new Set(cols.items[i].steps)].sort((a, b) => a - b),
    })),
    blocks,
    empty: [...empty].map((i) => rowOrder.indexOf(i)).sort((a, b) => a - b),
    heads,
  };
}

/** A causal block that turns out fully visible becomes full; one with no visible cell goes. */
function visible(b: MaskBlock): boolean {
  if (b.cols[1] - 1 <= b.rows[0] + b.diag) {
    b.mask = "full";
    b.diag = 0;
  }
  return b.cols[0] <= b.rows[1] - 1 + b.diag;
}

function block(
  q: Piece,
  key: Piece,
  seg: { kvStart: number; qStart: number; causal: boolean; diag: number },
  step: number,
): MaskBlock {
  // Kernel rule: key j (from kvStart) is visible to row i (from qStart) iff j ≤ i + diag.
  // In group-local indices r = i − q.at + q.offset and c = j − key.at + key.offset.
  const diag = seg.diag + (key.offset - q.offset) + (q.at - seg.qStart) - (key.at - seg.kvStart);
  return {
    row: q.group,
    col: key.group,
    rows: [q.offset, q.offset + q.count],
    cols: [key.offset, key.offset + key.count],
    mask: seg.causal ? "causal" : "full",
    diag: seg.causal ? diag : 0,
    step,
  };
}

/** Pieces restricted to dispatch indices [start, end). */
function clip(pieces: Piece[], start: number, end: number): Piece[] {
  const out: Piece[] = [];
  for (const p of pieces) {
    const a = Math.max(p.at, start);
    const b = Math.min(p.at + p.count, end);
    if (b > a) out.push({ at: a, count: b - a, group: p.group, offset: p.offset + a - p.at });
  }
  return out;
}

/** Rows [row, row + count) of `host`, split at its segments; dispatch index `at` for the first. */
function segmentPieces(
  plan: Plan,
  rows: Groups<RowGroup>,
  host: number,
  row: number,
  count: number,
  at: number,
): Piece[] {
  return splitRows(plan.hosts[host].segments, row, count).map(({ segment, offset, from, n }) => ({
    at: at + from - row,
    count: n,
    offset,
    group: rows.id(`${host}:${segment.name}`, () => ({
      owner: host,
      segment: segment.name,
      role: segment.role,
      count: segment.count,
      position: segment.position === "zero" ? null : segment.position,
    })),
  }));
}

/** Where the keys of source `src` of a dispatch come from, as pieces in its key-row numbering. */
function keyPieces(
  plan: Plan,
  phases: Phase[],
  phase: number,
  step: Step,
  host: number,
  cols: Groups<ColGroup>,
  src: number,
): Piece[] {
  const cacheGroup = (h: number, segment: Segment) =>
    cols.id(`cache:${h}:${segment.name}`, () => ({
      source: "cache" as const,
      host: h,
      segment: segment.name,
      role: segment.role,
      count: segment.count,
      position: segment.position === "zero" ? null : segment.position,
      steps: [],
    }));
  const cachePieces = (h: number, row: number, count: number, at: number): Piece[] =>
    splitRows(plan.hosts[h].segments, row, count).map(({ segment, offset, from, n }) => ({
      at: at + from - row,
      count: n,
      offset,
      group: cacheGroup(h, segment),
    }));
  if (src === 1) return cachePieces(host, 0, plan.hosts[host].rows, 0);
  const pieces: Piece[] = [];
  for (const t of incoming(phases, phase, step.bind.k0)) {
    const buffer = plan.buffers.find((b) => b.id === t.src);
    if (buffer?.role === "cache") {
      pieces.push(...cachePieces(t.from, srcRow(t), num(t.rows), dstRow(t)));
      continue;
    }
    const group = cols.id(`passing:${t.from}:${t.src}`, () => ({
      source: "passing" as const,
      host: t.from,
      segment: "",
      role: "passing",
      count: buffer ? Math.floor(buffer.elements / t.srcStride) : num(t.rows),
      position: keptPosition(plan.hosts[t.from].segments),
      steps: [],
    }));
    pieces.push({ at: dstRow(t), count: num(t.rows), offset: srcRow(t), group });
  }
  return pieces;
}

/** Position of the rows a host keeps (where its passed rows come from). */
function keptPosition(segments: Segment[]): number | null {
  const kept = segments.filter((s) => s.keep && s.position !== "zero");
  const ps = (kept.length ? kept : segments).map((s) => s.position)
    .filter((p): p is number => p !== "zero");
  return ps.length ? Math.min(...ps) : null;
}

/** Rows [row, row + count) of a host split by its segments. */
function splitRows(segments: Segment[], row: number, count: number) {
  const out: { segment: Segment; offset: number; from: number; n: number }[] = [];
  let start = 0;
  for (const segment of segments) {
    const a = Math.max(row, start);
    const b = Math.min(row + count, start + segment.count);
    if (b > a) out.push({ segment, offset: a - start, from: a, n: b - a });
    start += segment.count;
  }
  return out;
}

/**
 * The transfers that last filled buffer `dst` before the steps of phase `phase` ran: those of the
 * latest phase up to it that writes the buffer (receive buffers are refilled every layer).
 */
function incoming(phases: Phase[], phase: number, dst: string | undefined): Transfer[] {
  if (dst === undefined) return [];
  for (let p = phase; p >= 0; p--) {
    const ts = phases[p].transfers.filter((t) => t.dst === dst);
    if (ts.length) return ts;
  }
  return [];
}

/**
 * First query head of a head-sliced dispatch. The step does not record it; its query transfer
 * starts at that head's column (assuming the query view starts at a multiple of all heads).
 */
function headStart(plan: Plan, qTransfer: Transfer | undefined): number {
  if (!qTransfer) return 0;
  const c = plan.model.config;
  const column = num(qTransfer.srcOffset) % qTransfer.srcStride;
  return Math.floor((column % (c.heads * c.headDim)) / c.headDim);
}

function srcRow(t: Transfer): number {
  return Math.floor(num(t.srcOffset) / t.srcStride);
}

function dstRow(t: Transfer): number {
  return Math.floor(num(t.dstOffset) / t.dstStride);
}

/**
 * Classifies a transfer by its buffers: from a KV cache it carries keys; into a buffer that
 * attention reads keys from (k0/v0) but not from a cache, rows a compressor picked; else other.
 */
function carriesOf(plan: Plan): (t: Transfer) => Arrow["carries"] {
  const caches = new Set(plan.buffers.filter((b) => b.role === "cache").map((b) => b.id));
  const keyInputs = new Set<string>();
  for (const phase of plan.programs.prefill.phases) {
    for (const step of phase.steps.flat()) {
      if (!ATTENTION_FAMILIES.has(plan.kernels[step.kernel]?.family ?? "")) continue;
      for (const name of ["k0", "v0"]) if (step.bind[name]) keyInputs.add(step.bind[name]);
    }
  }
  return (t) => caches.has(t.src) ? "keys" : keyInputs.has(t.dst) ? "passing" : "other";
}

function collective(phase: Phase, carries: (t: Transfer) => Arrow["carries"]): Collective {
  const pairs = new Map<string, Arrow>();
  for (const t of phase.transfers) {
    const key = `${t.from}>${t.to}`;
    const kind = carries(t);
    const arrow = pairs.get(key) ??
      { from: t.from, to: t.to, bytes: 0, transfers: [], carries: kind };
    arrow.bytes += transferBytes(t);
    arrow.transfers.push(t);
    if (arrow.carries !== kind) arrow.carries = "mixed";
    pairs.set(key, arrow);
  }
  const all = [...pairs.values()];
  return {
    phase: phase.name,
    overlapPrevious: phase.overlapPrevious,
    arrows: all.filter((a) => a.from !== a.to),
    local: all.filter((a) => a.from === a.to),
    bytes: all.reduce((s, a) => s + a.bytes, 0),
  };
}

/** Sizes of a prefill plan are numbers; an expression (extend program only) reads as NaN. */
function num(e: Expr | undefined): number {
  return typeof e === "number" ? e : NaN;
}

/** Null positions (padding, unknown) sort last. */
function order(a: number | null, b: number | null): number {
  return (a ?? Infinity) - (b ?? Infinity);
}

/** Among keys at one position, own cache first, then other hosts', then passed rows. */
function rank(g: ColGroup, host: number): number {
  return g.source === "passing" ? 2 : g.host === host ? 0 : 1;
}

/** Groups by identity, in order of first sight. */
class Groups<T> {
  readonly items: T[] = [];
  #index = new Map<string, number>();

  id(key: string, make: () => T): number {
    let i = this.#index.get(key);
    if (i === undefined) {
      i = this.items.length;
      this.items.push(make());
      this.#index.set(key, i);
    }
    return i;
  }

  /** Item indices sorted by `compare`, ties in order of first sight. */
  sorted(compare: (a: T, b: T) => number): number[] {
    return this.items.map((_, i) => i).sort((a, b) =>
      compare(this.items[a], this.items[b]) || a - b
    );
  }
}
