// The float64 reference executor: interprets the same plan as the GPU, calling each kernel's
// float64 reference instead of dispatching it. Weights are the GPU's bit for bit (the seeded
// values are reproduced on the host; f16 storage is rounded as on the device).

import { evalExpr, type Plan, type ProgramName, type Transfer } from "../compiler/plan.ts";
import { fillRandomHost, kernelFamily, ropeTable } from "../wgsl/mod.ts";
import { hash2 } from "../wgsl/_hash.ts";
import type { HostBuffers, Sizes } from "../wgsl/kernel.ts";
import type { Executor, HostInputs, RunOptions, RunResult, WeightSource } from "./executor.ts";
import { decodeElements } from "./run_kernel.ts";
import { weightOffset } from "./weights_init.ts";

/** Creates the float64 reference executor of `plan`. */
export async function createCpuExecutor(plan: Plan, weights: WeightSource): Promise<Executor> {
  const buffers = new Map<string, Float64Array>();
  for (const b of plan.buffers) buffers.set(b.id, new Float64Array(b.elements));
  for (const w of plan.weights) {
    const target = buffers.get(w.buffer)!;
    const bytes = await weights.load?.(w, plan.storage.weights);
    if (bytes) {
      target.set(decodeElements(plan.storage.weights, bytes.buffer, target.length));
      continue;
    }
    const seed = hash2(weights.seed >>> 0, w.seed, 0);
    // A piece of a split tensor continues the whole tensor's stream, so splitting changes nothing.
    const offset = weightOffset(w);
    target.set(
      fillRandomHost(plan.storage.weights, target.length, seed, w.init.scale, w.init.bias, offset),
    );
  }
  for (const b of plan.buffers) {
    if (b.fill?.kind === "rope") {
      buffers.get(b.id)!.set(ropeTable(b.fill.rope, b.fill.headDim, b.fill.positions));
    }
  }
  return new CpuExecutor(plan, buffers);
}

class CpuExecutor implements Executor {
  readonly description = "float64 CPU reference";

  constructor(readonly plan: Plan, readonly buffers: Map<string, Float64Array>) {}

  run(
    name: ProgramName,
    inputs: HostInputs[],
    vars: Record<string, number>,
    options: RunOptions = {},
  ): Promise<RunResult> {
    const started = performance.now();
    const program = this.plan.programs[name];
    inputs.forEach((input, h) => {
      this.buffers.get(this.plan.hosts[h].ids)!.set(input.ids);
      this.buffers.get(this.plan.hosts[h].positions)!.set(input.positions);
    });
    for (const phase of program.phases) {
      for (const t of phase.transfers) this.#transfer(t, vars);
      for (const steps of phase.steps) {
        for (const step of steps) {
          const decl = this.plan.kernels[step.kernel];
          const sizes: Sizes = {};
          for (const [k, v] of Object.entries(step.sizes)) sizes[k] = evalExpr(v, vars);
          const bound: HostBuffers = {};
          for (const [binding, id] of Object.entries(step.bind)) {
            bound[binding] = this.buffers.get(id)!;
          }
          kernelFamily(decl.family).reference(decl.spec, sizes, bound);
        }
      }
    }
    const vocab = this.plan.model.config.vocabSize;
    const logits = program.logits.map((out) => {
      const rows = evalExpr(out.rows, vars);
      return {
        host: out.host,
        rows,
        tokens: out.tokens,
        argmax: Uint32Array.from(this.buffers.get(out.argmax)!.subarray(0, rows)),
        logits: options.readLogits ? this.buffers.get(out.logits)!.slice(0, rows * vocab) : null,
      };
    });
    return Promise.resolve({
      logits,
      timing: { wallMs: performance.now() - started, phases: null },
    });
  }

  #transfer(t: Transfer, vars: Record<string, number>): void {
    const src = this.buffers.get(t.src)!;
    const dst = this.buffers.get(t.dst)!;
    const rows = evalExpr(t.rows, vars);
    const so = evalExpr(t.srcOffset, vars);
    const dO = evalExpr(t.dstOffset, vars);
    for (let r = 0; r < rows; r++) {
      dst.set(
        src.subarray(so + r * t.srcStride, so + r * t.srcStride + t.cols),
        dO + r * t.dstStride,
      );
    }
  }

  read(id: string): Promise<Float64Array> {
    const b = this.buffers.get(id);
    if (!b) throw new Error(`no buffer ${id}`);
    return Promise.resolve(b.slice());
  }

  destroy(): void {
    this.buffers.clear();
  }
}
