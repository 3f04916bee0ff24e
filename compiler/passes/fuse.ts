// Pass 2: rewrites patterns into the fused ops the kernels offer.
//   mul(silu(a), b)          → silu_mul(a, b)
//   add(r, linear(x))        → linear(x) accumulating into r, when r dies there (in place)
//   q, k, v = linear(x) ×3   → one linear_cat(x) and three column slices, so the projections
//                              land side by side: [q | k | v] is exactly what APB's compressor reads.

import { type Attrs, Graph, type LinearPart, type Node, type Op } from "../graph.ts";

type Replacement = { op: Op; inputs: number[]; attrs: Attrs } | "drop";
type Slice = { cat: number; start: number; count: number };

interface Rewrites {
  replace: Map<number, Replacement>;
  slices: Map<number, Slice>;
}

/** Returns a fused copy of `g` (which must be verified). */
export function fuse(g: Graph): Graph {
  const users = g.consumers();
  const single = (id: number) => users[id].length === 1;
  const lastUse = users.map((u) => (u.length ? Math.max(...u) : -1));
  const rw: Rewrites = { replace: new Map(), slices: new Map() };
  const isPlainLinear = (n: Node) => n.op === "linear" && !n.attrs.accumulate;

  for (const n of g.nodes) {
    if (n.op === "mul") {
      const [a, b] = n.inputs.map((i) => g.node(i));
      const [s, other] = a.op === "silu" ? [a, b] : b.op === "silu" ? [b, a] : [];
      if (s && other && single(s.id)) {
        rw.replace.set(s.id, "drop");
        rw.replace.set(n.id, { op: "silu_mul", inputs: [s.inputs[0], other.id], attrs: {} });
      }
    } else if (n.op === "add") {
      const [a, b] = n.inputs.map((i) => g.node(i));
      const [lin, res] = isPlainLinear(b) ? [b, a] : isPlainLinear(a) ? [a, b] : [];
      if (lin && res && single(lin.id) && lastUse[res.id] === n.id && res.op !== "slice") {
        rw.replace.set(lin.id, "drop");
        rw.replace.set(n.id, {
          op: "linear",
          inputs: [lin.inputs[0], res.id],
          attrs: { ...lin.attrs, accumulate: true },
        });
      }
    } else if (n.op === "attention") {
      groupProjections(g, n, single, rw);
    }
  }
  return apply(g, rw);
}

function groupProjections(
  g: Graph,
  attention: Node,
  single: (id: number) => boolean,
  rw: Rewrites,
): void {
  // Each of q, k, v is linear(x), possibly through one rope; all three read the same x.
  const linears = attention.inputs.map((id) => {
    const n = g.node(id);
    const lin = n.op === "rope" && single(n.id) ? g.node(n.inputs[0]) : n;
    return lin.op === "linear" && !lin.attrs.accumulate && single(lin.id) ? lin : undefined;
  });
  if (linears.some((l) => !l)) return;
  const [q, k, v] = linears as Node[];
  if (new Set([q.inputs[0], k.inputs[0], v.inputs[0]]).size !== 1) return;
  if (!(q.id < k.id && k.id < v.id)) return;
  const parts: LinearPart[] = [q, k, v].map((l) => ({
    weight: l.attrs.weight!,
    ...(l.attrs.bias ? { bias: l.attrs.bias } : {}),
    cols: l.cols,
  }));
  // The cat is emitted where q was; q, k and v become slices of it.
  rw.replace.set(q.id, { op: "linear_cat", inputs: [q.inputs[0]], attrs: { parts } });
  let start = 0;
  for (const l of [q, k, v]) {
    rw.slices.set(l.id, { cat: q.id, start, count: l.cols });
    start += l.cols;
  }
}

function apply(g: Graph, rw: Rewrites): Graph {
  const out = new Graph(g.name);
  for (const [name, p] of g.params) out.params.set(name, p);
  const map = new Map<number, number>();
  const emit = (op: Op, inputs: number[], attrs: Attrs, scope: string) =>
    out.add(op, inputs.map((i) => map.get(i)!), attrs, scope).id;
  const cats = new Map<number, number>();
  for (const n of g.nodes) {
    const slice = rw.slices.get(n.id);
    const r = rw.replace.get(n.id);
    if (slice) {
      if (slice.cat === n.id && r && r !== "drop") {
        cats.set(n.id, emit(r.op, r.inputs, r.attrs, n.scope));
      }
      const attrs = { start: slice.start, count: slice.count };
      map.set(n.id, out.add("slice", [cats.get(slice.cat)!], attrs, n.scope).id);
    } else if (r === undefined) {
      map.set(n.id, emit(n.op, [...n.inputs], n.attrs, n.scope));
    } else if (r !== "drop") {
      map.set(n.id, emit(r.op, r.inputs, r.attrs, n.scope));
    }
  }
  out.output = map.get(g.output)!;
  return out;
}
