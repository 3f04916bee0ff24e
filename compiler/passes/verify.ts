// Pass 1: checks what the IR builder cannot check node by node, and drops dead nodes.

import { ModelError } from "../errors.ts";
import { Graph } from "../graph.ts";

/** Returns `g` without dead nodes, after checking it has one f32 output and a single T. */
export function verify(g: Graph): Graph {
  if (g.output < 0) throw new ModelError(g.name, "forward", "returned no tensor");
  const out = g.node(g.output);
  if (out.dtype !== "f32" || out.cols === 0) {
    throw new ModelError(g.name, "forward", `must return f32 logits, returned ${out.op}`);
  }
  const live = new Set<number>([g.output]);
  for (let i = g.nodes.length - 1; i >= 0; i--) {
    if (live.has(i)) { for (const j of g.nodes[i].inputs) live.add(j); }
  }
  const layers = g.nodes.filter((n) => n.op === "attention").map((n) => n.attrs.attention!.layer);
  layers.forEach((layer, i) => {
    if (layer !== i) throw new ModelError(g.name, "attention", "layers must be numbered in order");
  });
  return rebuild(g, (id) => live.has(id));
}

/** Copies the nodes of `g` kept by `keep` into a new graph with compact ids. */
export function rebuild(g: Graph, keep: (id: number) => boolean): Graph {
  const out = new Graph(g.name);
  for (const [name, p] of g.params) out.params.set(name, p);
  const map = new Map<number, number>();
  for (const n of g.nodes) {
    if (!keep(n.id)) continue;
    const node = out.add(n.op, n.inputs.map((i) => map.get(i)!), n.attrs, n.scope);
    map.set(n.id, node.id);
  }
  out.output = map.get(g.output)!;
  pruneParams(out);
  return out;
}

function pruneParams(g: Graph): void {
  const used = new Set<string>();
  for (const n of g.nodes) {
    const a = n.attrs;
    if (a.weight) used.add(a.weight);
    if (a.bias) used.add(a.bias);
    for (const p of a.parts ?? []) {
      used.add(p.weight);
      if (p.bias) used.add(p.bias);
    }
  }
  for (const name of [...g.params.keys()]) if (!used.has(name)) g.params.delete(name);
}
