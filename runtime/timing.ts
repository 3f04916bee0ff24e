// What a run measured, and the parallel critical path it implies: per phase the slowest host's
// GPU time, plus the phase's transfers at a modelled link bandwidth (hidden behind the previous
// phase's compute where the strategy overlaps them, as ring attention does).

import type { Phase, Transfer } from "../compiler/plan.ts";

/** GPU time of one phase on every host, and what its transfers moved. */
export interface PhaseTiming {
  /** Phase name. */
  name: string;
  /** Layer, if the phase belongs to one. */
  layer: number | null;
  /** GPU milliseconds per host (timestamp queries); NaN where unmeasured. */
  hostMs: number[];
  /** Bytes each host receives before the phase. */
  bytesIn: number[];
  /** Bytes each host sends before the phase. */
  bytesOut: number[];
  /** Whether the transfers overlap the previous phase. */
  overlapPrevious: boolean;
}

/** Timing of one program run. */
export interface RunTiming {
  /** Wall-clock milliseconds from submit to results on the host. */
  wallMs: number;
  /** Per-phase GPU times, or null when the device has no timestamp queries. */
  phases: PhaseTiming[] | null;
}

/** A modelled interconnect. */
export interface Link {
  /** Name for tables, e.g. "NVLink". */
  name: string;
  /** Bytes per second each way per host. */
  bytesPerSecond: number;
  /** Fixed latency per transfer phase, seconds. */
  latency: number;
}

/** NVLink 4 (H100 SXM), per direction per GPU, as commonly quoted. */
export const NVLINK: Link = { name: "NVLink 450 GB/s", bytesPerSecond: 450e9, latency: 10e-6 };
/** PCIe 5 x16 in practice. */
export const PCIE: Link = { name: "PCIe 25 GB/s", bytesPerSecond: 25e9, latency: 20e-6 };

/** Bytes in and out of each host for `transfers` of evaluated sizes. */
export function transferBytes(
  hosts: number,
  transfers: { from: number; to: number; bytes: number }[],
): { bytesIn: number[]; bytesOut: number[] } {
  const bytesIn = new Array(hosts).fill(0);
  const bytesOut = new Array(hosts).fill(0);
  for (const t of transfers) {
    if (t.from === t.to) continue;
    bytesIn[t.to] += t.bytes;
    bytesOut[t.from] += t.bytes;
  }
  return { bytesIn, bytesOut };
}

/** Milliseconds a phase's transfers take over `link` (the busiest host's direction bounds it). */
export function transferMs(p: PhaseTiming, link: Link): number {
  const busiest = Math.max(0, ...p.bytesIn, ...p.bytesOut);
  return busiest === 0 ? 0 : (busiest / link.bytesPerSecond + link.latency) * 1e3;
}

/** The critical path in milliseconds over `link`, and its compute and communication shares. */
export function criticalPath(
  phases: PhaseTiming[],
  link: Link,
): { totalMs: number; computeMs: number; transferMs: number } {
  let total = 0;
  let compute = 0;
  let comm = 0;
  let previous = 0;
  for (const p of phases) {
    const c = Math.max(0, ...p.hostMs.filter((x) => Number.isFinite(x)));
    const x = transferMs(p, link);
    // An overlapped transfer only costs what the previous phase's compute could not hide.
    const exposed = p.overlapPrevious ? Math.max(0, x - previous) : x;
    total += exposed + c;
    compute += c;
    comm += exposed;
    previous = c;
  }
  return { totalMs: total, computeMs: compute, transferMs: comm };
}

/** Total GPU milliseconds per host over all phases. */
export function hostTotals(phases: PhaseTiming[], hosts: number): number[] {
  const totals = new Array(hosts).fill(0);
  for (const p of phases) p.hostMs.forEach((ms, h) => totals[h] += Number.isFinite(ms) ? ms : 0);
  return totals;
}

/** Empty timing records for a program's phases. */
export function phaseRecords(
  phases: Phase[],
  hosts: number,
  bytesOf: (t: Transfer) => number,
): PhaseTiming[] {
  return phases.map((p) => {
    const moved = p.transfers.map((t) => ({ from: t.from, to: t.to, bytes: bytesOf(t) }));
    return {
      name: p.name,
      layer: p.layer,
      hostMs: new Array(hosts).fill(NaN),
      ...transferBytes(hosts, moved),
      overlapPrevious: p.overlapPrevious,
    };
  });
}
