// Comparing logits of two runs: the error measure every check and benchmark reports.

import type { LogitsResult, RunResult } from "../../runtime/executor.ts";

/**
 * Max relative error of `got` against `want`: max |got − want| over the largest |want|, so an error
 * is measured against the logits' scale rather than against near-zero entries.
 */
export function maxRelativeError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) {
    throw new Error(`comparing ${got.length} values with ${want.length}`);
  }
  let err = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    err = Number.isNaN(d) ? Infinity : Math.max(err, d);
    scale = Math.max(scale, Math.abs(want[i]));
  }
  return err / Math.max(scale, 1e-30);
}

/** Logits of a run as one [tokens, vocab] array in global token order (prefill with "all"). */
export function logitsByToken(run: RunResult, vocab: number): Map<number, Float64Array> {
  const rows = new Map<number, Float64Array>();
  for (const out of run.logits) collect(out, vocab, rows);
  return rows;
}

function collect(out: LogitsResult, vocab: number, rows: Map<number, Float64Array>): void {
  if (!out.logits) throw new Error("the run did not read logits back");
  let row = 0;
  for (const { token, count } of out.tokens ?? [{ token: 0, count: out.rows }]) {
    for (let i = 0; i < count; i++, row++) {
      rows.set(token + i, Float64Array.from(out.logits.subarray(row * vocab, (row + 1) * vocab)));
    }
  }
}

/** Max relative error over the tokens both runs have logits for. */
export function compareRuns(got: RunResult, want: RunResult, vocab: number): number {
  const a = logitsByToken(got, vocab);
  const b = logitsByToken(want, vocab);
  const flatA: number[] = [];
  const flatB: number[] = [];
  for (const [token, row] of b) {
    const other = a.get(token);
    if (!other) continue;
    flatA.push(...other);
    flatB.push(...row);
  }
  return maxRelativeError(flatA, flatB);
}
