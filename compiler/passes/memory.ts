// Pass 3: gives every materialised tensor a slot, reusing slots whose tensors are dead. Prefill
// runs each host's rows in chunks, so a slot is a [chunk rows, width] f32 buffer. Tensors that
// live across an attention (the residual stream, attention's q and output) need every row at
// once: they go to persistent slots, stored as one buffer per chunk; all others are chunk-local
// and one buffer serves every chunk in turn. That keeps long contexts inside binding limits.

import type { Graph, Node } from "../graph.ts";

/**
 * Where a node's value lives. A tensor in a slot is stored [rows, stride] from the slot's start;
 * stride equals its width except for slices, which keep their base's stride and add an offset.
 */
export type Placement =
  | { kind: "slot"; slot: number; persistent: boolean; offset: number; stride: number }
  | { kind: "input" }
  | { kind: "cache" }
  | { kind: "output" };

/** Slots and the placement of every node. */
export interface MemoryPlan {
  /** Width (f32 columns) of each chunk-local slot. */
  local: number[];
  /** Width of each persistent slot. */
  persistent: number[];
  /** Placement by node id. */
  placements: Placement[];
}

/** Assigns slots to `g`'s nodes by liveness (best fit by width), in two pools. */
export function planMemory(g: Graph): MemoryPlan {
  const users = g.consumers();
  const run: number[] = [];
  let attentions = 0;
  for (const n of g.nodes) {
    run[n.id] = attentions;
    if (n.op === "attention") attentions++;
  }
  const base = (n: Node): Node => (n.op === "slice" ? base(g.node(n.inputs[0])) : n);
  // A slot stays alive until the last read of any view of it.
  const lastRead = new Map<number, number>();
  for (const n of g.nodes) {
    for (const i of n.inputs) {
      const b = base(g.node(i)).id;
      lastRead.set(b, Math.max(lastRead.get(b) ?? -1, n.id));
    }
  }
  const persistent = (n: Node) =>
    n.op === "attention" ||
    users[n.id].some((u) => g.node(u).op === "attention" || run[u] > run[n.id]);
  const pools = { local: new Pool(), persistent: new Pool() };
  const placements: Placement[] = [];
  const release = new Map<number, { pool: Pool; slot: number }[]>();
  const extend = (pool: Pool, slot: number, id: number) => {
    for (const list of release.values()) {
      const i = list.findIndex((r) => r.pool === pool && r.slot === slot);
      if (i >= 0) list.splice(i, 1);
    }
    const until = lastRead.get(id) ?? id;
    release.set(until, [...(release.get(until) ?? []), { pool, slot }]);
  };
  for (const n of g.nodes) {
    placements[n.id] = place(n);
    for (const { pool, slot } of release.get(n.id) ?? []) pool.free.push(slot);
  }
  return { local: pools.local.widths, persistent: pools.persistent.widths, placements };

  function place(n: Node): Placement {
    if (n.op === "tokens" || n.op === "positions") return { kind: "input" };
    if (n.op === "slice") {
      const p = placements[n.inputs[0]];
      if (p.kind !== "slot") return p;
      return { ...p, offset: p.offset + n.attrs.start! };
    }
    if (isCacheOnly(n)) return { kind: "cache" };
    // Logits get their own buffer, sized by the rows that want them, not by every token.
    if (n.id === g.output) return { kind: "output" };
    if (n.op === "linear" && n.attrs.accumulate) {
      const p = placements[n.inputs[1]];
      if (p.kind === "slot") extend(p.persistent ? pools.persistent : pools.local, p.slot, n.id);
      return p;
    }
    const kind = persistent(base(n)) ? "persistent" : "local";
    const slot = pools[kind].allocate(n.cols);
    extend(pools[kind], slot, n.id);
    return { kind: "slot", slot, persistent: kind === "persistent", offset: 0, stride: n.cols };
  }

  function isCacheOnly(n: Node): boolean {
    const u = users[n.id];
    return n.op === "rope" && u.length > 0 &&
      u.every((id) => g.node(id).op === "attention" && g.node(id).inputs.indexOf(n.id) === 1);
  }
}

/** Slots of one kind: their widths and which are free. */
class Pool {
  readonly widths: number[] = [];
  readonly free: number[] = [];

  /** Best fit: the narrowest free slot at least `cols` wide, else widen the widest, else new. */
  allocate(cols: number): number {
    let best = -1;
    for (const s of this.free) {
      if (this.widths[s] >= cols && (best < 0 || this.widths[s] < this.widths[best])) best = s;
    }
    if (best < 0 && this.free.length) {
      best = this.free.reduce((a, b) => (this.widths[a] >= this.widths[b] ? a : b));
    }
    if (best < 0) {
      this.widths.push(cols);
      return this.widths.length - 1;
    }
    this.free.splice(this.free.indexOf(best), 1);
    this.widths[best] = Math.max(this.widths[best], cols);
    return best;
  }
}
