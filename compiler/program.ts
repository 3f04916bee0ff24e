// Builds one program: steps go into the current phase per host; transfers wait for the next
// synchronisation point, which starts a new phase. Phases split only where data crosses hosts.

import type { Phase, Step, Transfer } from "./plan.ts";

/** Accumulates phases, steps and transfers of a program. */
export class ProgramBuilder {
  readonly phases: Phase[] = [];
  #pending: Transfer[] = [];
  #current: Phase;

  /** @param hosts number of hosts @param name name of the first phase */
  constructor(readonly hosts: number, name: string) {
    this.#current = this.#fresh(name, null, [], false);
  }

  /** Appends a dispatch to `host`'s list in the current phase. */
  step(host: number, step: Step): void {
    this.#current.steps[host].push(step);
  }

  /** Queues a transfer for the next synchronisation point. */
  transfer(t: Transfer): void {
    this.#pending.push(t);
  }

  /** Whether transfers are queued. */
  get hasPending(): boolean {
    return this.#pending.length > 0;
  }

  /**
   * Starts a new phase with the queued transfers; does nothing when none are queued, since hosts
   * need no synchronisation then. `overlap`: the transfers overlap the previous phase's compute.
   */
  sync(name: string, layer: number | null, overlap = false): void {
    if (!this.#pending.length) return;
    this.#close();
    this.#current = this.#fresh(name, layer, this.#pending, overlap);
    this.#pending = [];
  }

  /** Names the current phase (for a phase that began without a sync). */
  rename(name: string, layer: number | null): void {
    if (this.#current.steps.every((s) => s.length === 0)) {
      this.#current.name = name;
      this.#current.layer = layer;
    }
  }

  /** The finished phases. */
  finish(): Phase[] {
    if (this.#pending.length) throw new Error("program ends with transfers nobody waits for");
    this.#close();
    return this.phases;
  }

  #close(): void {
    const c = this.#current;
    if (c.transfers.length || c.steps.some((s) => s.length)) this.phases.push(c);
  }

  #fresh(name: string, layer: number | null, transfers: Transfer[], overlap: boolean): Phase {
    const steps = Array.from({ length: this.hosts }, () => [] as Step[]);
    return { name, layer, transfers, overlapPrevious: overlap, steps };
  }
}
