// Pass 3: gives every materialised tensor a slot (a [rows, cols] f32 buffer per host), reusing
// slots whose tensors are dead, so a 32-layer model needs a handful of activation buffers.

import type { Graph, Node } from "../graph.ts";

/**
 * Where a node's value lives. A tensor in a slot is stored [rows, stride] from the slot's start;
 * stride equals its width except for slices, which keep their base's stride and add an offset.
 */
export type Placement =
  | { kind: "slot"; slot: number; offset: number; stride: number }
  | { kind: "input" }
  | { kind: "cache" }
  | { kind: "output" };

/** Slots and the placement of every node. */
export interface MemoryPlan {
  /** Width (f32 columns) of each slot. */
  slots: number[];
  /** Placement by node id. */
  placements: Placement[];
}

/** Assigns slots to `g`'s nodes by liveness (best fit by width). */
export function planMemory(g: Graph): MemoryPlan {
  const users = g.consumers();
  const placements: Placement[] = [];
  const slots: number[] = [];
  const free: number[] = [];
  const base = (n: Node): number => (n.op === "slice" ? base(g.node(n.inputs[0])) : n.id);
  // A slot stays alive until the last read of any view of it (or forever for the output).
  const lastRead = new Map<number, number>();
  for (const n of g.nodes) {
    for (const i of n.inputs) {
      const b = base(g.node(i));
      lastRead.set(b, Math.max(lastRead.get(b) ?? -1, n.id));
    }
  }
  const release = new Map<number, number[]>();
  for (const n of g.nodes) {
    placements[n.id] = place(n);
    for (const slot of release.get(n.id) ?? []) free.push(slot);
  }
  return { slots, placements };

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
      if (p.kind === "slot") extend(p.slot, n.id);
      return p;
    }
    const slot = allocate(n.cols);
    extend(slot, n.id);
    return { kind: "slot", slot, offset: 0, stride: n.cols };
  }

  function isCacheOnly(n: Node): boolean {
    const u = users[n.id];
    return n.op === "rope" && u.length > 0 &&
      u.every((id) => g.node(id).op === "attention" && g.node(id).inputs.indexOf(n.id) === 1);
  }

  function allocate(cols: number): number {
    // Best fit: the narrowest free slot at least `cols` wide, else widen the widest, else new.
    let best = -1;
    for (const s of free) {
      if (slots[s] >= cols && (best < 0 || slots[s] < slots[best])) best = s;
    }
    if (best < 0 && free.length) best = free.reduce((a, b) => (slots[a] >= slots[b] ? a : b));
    if (best < 0) {
      slots.push(cols);
      return slots.length - 1;
    }
    free.splice(free.indexOf(best), 1);
    slots[best] = Math.max(slots[best], cols);
    return best;
  }

  function extend(slot: number, id: number): void {
    const until = lastRead.get(id) ?? id;
    for (const list of release.values()) {
      const i = list.indexOf(slot);
      if (i >= 0) list.splice(i, 1);
    }
    const list = release.get(until) ?? [];
    list.push(slot);
    release.set(until, list);
  }
}
