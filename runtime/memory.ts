// The memory plan of a plan: bytes per host by role, checked against device limits before any
// allocation, so a plan that cannot fit fails with a message instead of a driver error.

import type { BufferDecl, Plan } from "../compiler/plan.ts";
import { bytesPer } from "./run_kernel.ts";

/** Raised when a plan does not fit the device; the message names the buffer or total and a fix. */
export class OutOfMemoryError extends Error {
  /** The error\'s name. */
  override name = "OutOfMemoryError";
}

/** Bytes a buffer occupies on the device (rounded up to whole 32-bit words). */
export function bufferBytes(b: BufferDecl): number {
  return Math.max(4, Math.ceil((b.elements * bytesPer(b.elem)) / 4) * 4);
}

/** Bytes per role for one host (shared weights and tables counted on every host). */
export interface HostMemory {
  /** Host index. */
  host: number;
  /** Bytes by buffer role. */
  byRole: Record<string, number>;
  /** Sum. */
  total: number;
}

/**
 * The memory each host needs, and `shared`: the buffers no host owns (weights and tables), of which
 * `weights` are the weights.
 */
export function memoryByHost(plan: Plan): { hosts: HostMemory[]; shared: number; weights: number } {
  let shared = 0;
  let weights = 0;
  const hosts: HostMemory[] = plan.hosts.map((_, host) => ({ host, byRole: {}, total: 0 }));
  for (const b of plan.buffers) {
    const bytes = bufferBytes(b);
    if (b.host === null) {
      shared += bytes;
      if (b.role === "weight") weights += bytes;
      continue;
    }
    const h = hosts[b.host];
    h.byRole[b.role] = (h.byRole[b.role] ?? 0) + bytes;
    h.total += bytes;
  }
  return { hosts, shared, weights };
}

/** A short table of the memory plan. */
export function formatMemory(plan: Plan, devicePerHost: boolean): string {
  const { hosts, shared, weights } = memoryByHost(plan);
  const roles = [...new Set(hosts.flatMap((h) => Object.keys(h.byRole)))].sort();
  const lines = [
    `memory: weights ${fmtBytes(weights)} (${plan.storage.weights}), tables ${
      fmtBytes(shared - weights)
    }${devicePerHost ? ", on every device" : ", shared by all hosts"}`,
    `  host  ${roles.map((r) => r.padStart(11)).join("")}      total`,
  ];
  for (const h of hosts) {
    const cells = roles.map((r) => fmtBytes(h.byRole[r] ?? 0).padStart(11)).join("");
    lines.push(`  ${String(h.host).padStart(4)}  ${cells} ${fmtBytes(h.total).padStart(10)}`);
  }
  const all = hosts.reduce((a, h) => a + h.total, 0) + shared * (devicePerHost ? hosts.length : 1);
  lines.push(`  total ${fmtBytes(all)}`);
  return lines.join("\n");
}

/** Checks every buffer against `limits`; throws {@linkcode OutOfMemoryError} naming the culprit. */
export function checkLimits(plan: Plan, limits: GPUSupportedLimits): void {
  const cap = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  for (const b of plan.buffers) {
    const bytes = bufferBytes(b);
    if (bytes <= cap) continue;
    const weight = plan.weights.find((w) => w.buffer === b.id);
    const what = weight ? `weight ${weight.name}` : `buffer ${b.id} (${b.role})`;
    // Already-f16 weights have no smaller storage to fall back to until weights can be split.
    const fix = !weight
      ? "use fewer tokens per host (more hosts) or f16 KV (--kv f16)"
      : plan.storage.weights === "f32"
      ? "store weights as f16 (--storage f16)"
      : "splitting one weight over several bindings is not supported yet";
    throw new OutOfMemoryError(
      `${what} needs ${fmtBytes(bytes)} but one binding on this device holds at most ` +
        `${fmtBytes(cap)}; ${fix}`,
    );
  }
}

/** Bytes in human units. */
export function fmtBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${n} B`;
}
