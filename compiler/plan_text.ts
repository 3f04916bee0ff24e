// A plan as text: hosts and their segments, then each program's phases with per-host steps and
// transfers. What `deno task plan` prints and what a person diffs between two plans.

import { memoryByHost } from "../runtime/memory.ts";
import type { Plan, Program } from "./plan.ts";

/** A readable listing of `plan`; `verbose` lists every step, not only counts. */
export function formatPlan(plan: Plan, verbose = false): string {
  const lines: string[] = [];
  const s = plan.shape;
  lines.push(
    `plan ${plan.model.name}: ${plan.strategy.name} on ${plan.strategy.hosts} host(s), ` +
      `${s.contextTokens} context + ${s.queryTokens} query tokens, extend ≤ ${s.extendRows} rows, ` +
      `${s.maxNewTokens} new tokens, weights ${plan.storage.weights}, kv ${plan.storage.kv}`,
  );
  const params = Object.entries(plan.strategy.params).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  if (params.length) lines.push(`  strategy params: ${params.join(" ")}`);
  const mem = memoryByHost(plan);
  plan.hosts.forEach((h, i) => {
    const segs = h.segments.map((seg) => {
      const pos = seg.position === "zero"
        ? "pos 0"
        : `pos ${seg.position}..${seg.position + seg.count - 1}`;
      return `${seg.name}[${seg.count}${seg.keep ? ", kept" : ""}; ${pos}]`;
    });
    lines.push(
      `  host ${i}: ${h.rows} rows = ${segs.join(" | ")}; cache keeps rows ${h.keep[0]}..${
        h.keep[1]
      }` +
        `${h.appends ? ", appends" : ""}; ${(mem.hosts[i].total / 2 ** 20).toFixed(1)} MiB`,
    );
  });
  for (const [name, program] of Object.entries(plan.programs)) {
    lines.push(...formatProgram(name, program, verbose));
  }
  return lines.join("\n");
}

function formatProgram(name: string, program: Program, verbose: boolean): string[] {
  const lines = [`  ${name}: ${program.phases.length} phase(s)`];
  for (const phase of program.phases) {
    const counts = phase.steps.map((s) => s.length).join("/");
    const moved = phase.transfers.length
      ? `, ${phase.transfers.length} transfer(s)${phase.overlapPrevious ? " overlapped" : ""}`
      : "";
    lines.push(`    ${phase.name}: steps per host ${counts}${moved}`);
    if (!verbose) continue;
    for (const t of phase.transfers) {
      lines.push(
        `      transfer ${t.from} → ${t.to}: ${t.label} (${t.rows} × ${t.cols} ${t.elem})`,
      );
    }
    phase.steps.forEach((steps, host) => {
      for (const st of steps) lines.push(`      host ${host}: ${st.kernel} — ${st.label}`);
    });
  }
  const outs = program.logits.map((l) => `host ${l.host} ${l.rows} row(s)`);
  if (outs.length) lines.push(`    logits: ${outs.join(", ")}`);
  return lines;
}
