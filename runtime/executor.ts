// What every executor of a plan offers: the GPU one, the float64 CPU reference, and later others.

import type { Plan, ProgramName, WeightDecl } from "../compiler/plan.ts";
import type { StorageType } from "../wgsl/kernel.ts";
import type { RunTiming } from "./timing.ts";

/** Token ids and positions a host processes in one run (its rows, in order). */
export interface HostInputs {
  /** Token ids. */
  ids: Uint32Array<ArrayBuffer>;
  /** Absolute positions. */
  positions: Uint32Array<ArrayBuffer>;
}

/** Logits one host produced. */
export interface LogitsResult {
  /** Host. */
  host: number;
  /** Rows. */
  rows: number;
  /** For prefill: global token index runs of the rows. */
  tokens: { token: number; count: number }[] | null;
  /** Argmax id of each row. */
  argmax: Uint32Array;
  /** Logits, [rows, vocab], when asked for. */
  logits: Float32Array | Float64Array | null;
}

/** What a run returns. */
export interface RunResult {
  /** Logits by host. */
  logits: LogitsResult[];
  /** Timing. */
  timing: RunTiming;
}

/** Options of {@linkcode Executor.run}. */
export interface RunOptions {
  /** Read full logits back, not just argmax ids (default false). */
  readLogits?: boolean;
}

/** Where weights come from: a checkpoint, or seeded values for what it lacks. */
export interface WeightSource {
  /** Seed of the generated weights. */
  seed: number;
  /** The weight's values in `storage` bytes, or null to use the seeded values. */
  load?(weight: WeightDecl, storage: StorageType): Promise<Uint8Array<ArrayBuffer> | null>;
}

/** Runs a plan's programs. */
export interface Executor {
  /** The plan. */
  readonly plan: Plan;
  /** What executes it, for reports. */
  readonly description: string;
  /** Runs `program` with per-host inputs and run-time variables (t, past). */
  run(
    program: ProgramName,
    inputs: HostInputs[],
    vars: Record<string, number>,
    options?: RunOptions,
  ): Promise<RunResult>;
  /** Reads buffer `id` (as float64 values), for tests and debugging. */
  read(id: string): Promise<Float64Array>;
  /** Frees device memory. */
  destroy(): void;
}
