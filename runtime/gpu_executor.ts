// Runs a plan on WebGPU. Virtual hosts share one device: their buffers are separate, a transfer is
// a GPU copy, and a whole program is one command buffer with one readback. With one device per
// host, transfers are staged through the host between phases. Each (phase, host) is its own
// compute pass so timestamp queries give every host's GPU time per phase.

import {
  evalExpr,
  type Plan,
  type Program,
  type ProgramName,
  type Step,
  type Transfer,
} from "../compiler/plan.ts";
import { kernelFamily, ropeTable } from "../wgsl/mod.ts";
import { hash2 } from "../wgsl/_hash.ts";
import type { KernelFamily, Sizes } from "../wgsl/kernel.ts";
import { type Gpu, requestedLimits } from "./device.ts";
import type { Executor, HostInputs, RunOptions, RunResult, WeightSource } from "./executor.ts";
import { bufferBytes, checkLimits, fmtBytes, OutOfMemoryError } from "./memory.ts";
import { type CompiledKernel, compileKernel } from "./pipelines.ts";
import { bytesPer, decodeElements } from "./run_kernel.ts";
import { tunedSpec } from "./autotune.ts";
import { phaseRecords } from "./timing.ts";
import { weightElements, weightOffset } from "./weights_init.ts";
import { encodeFill } from "./fill.ts";

/** Options of {@linkcode createGpuExecutor}. */
export interface GpuExecutorOptions {
  /** Where weights come from. */
  weights: WeightSource;
  /** Give every host its own GPUDevice (transfers staged through the host). */
  devicePerHost?: boolean;
  /** WGSL by kernel id, replacing generated code (a compiled plan's kernels/ files). */
  kernelCode?: Record<string, string>;
}

interface Op {
  host: number;
  compiled: CompiledKernel;
  family: KernelFamily<unknown>;
  spec: unknown;
  sizes: Step["sizes"];
  bindGroup: GPUBindGroup;
  slot: number;
  label: string;
}

interface Prepared {
  program: Program;
  /** Per phase: per host ops; transfers as copy ops where they are strided. */
  phases: { ops: Op[][]; transfers: (Op | Transfer)[] }[];
  /** Per device: uniform buffer and how many 256-byte slots it holds. */
  uniforms: { buffer: GPUBuffer; slots: number; data: ArrayBuffer }[];
  /** The run-time variables the uniforms hold params for (prefill's never change). */
  paramsFor?: string;
}

/** Opens devices, allocates and fills buffers, and compiles every kernel of `plan`. */
export async function createGpuExecutor(
  plan: Plan,
  gpu: Gpu,
  options: GpuExecutorOptions,
): Promise<Executor> {
  const devices = [gpu.device];
  const hostDevice = plan.hosts.map(() => 0);
  if (options.devicePerHost && plan.hosts.length > 1) {
    for (let h = 1; h < plan.hosts.length; h++) {
      devices.push(
        await gpu.adapter.requestDevice({
          requiredFeatures: [...gpu.device.features] as GPUFeatureName[],
          requiredLimits: requestedLimits(gpu.device),
        }),
      );
      hostDevice[h] = h;
    }
  }
  for (const d of devices) checkLimits(plan, d.limits);
  const ex = new GpuExecutor(plan, gpu, devices, hostDevice, options);
  await ex.allocate();
  await ex.compileAll();
  return ex;
}

class GpuExecutor implements Executor {
  readonly description: string;
  #buffers: Map<string, GPUBuffer>[];
  #kernels: Map<string, CompiledKernel>[];
  /** Per device: the pipeline id and spec each plan step runs (see compileAll). */
  #tuned: WeakMap<object, { id: string; spec: unknown }>[];
  #prepared = new Map<string, Prepared>();
  #align: number;

  constructor(
    readonly plan: Plan,
    readonly gpu: Gpu,
    readonly devices: GPUDevice[],
    readonly hostDevice: number[],
    readonly options: GpuExecutorOptions,
  ) {
    const mode = devices.length > 1 ? `${devices.length} devices` : "one device";
    this.description = `${gpu.info.description} (${mode})`;
    this.#buffers = devices.map(() => new Map());
    this.#kernels = devices.map(() => new Map());
    this.#tuned = devices.map(() => new WeakMap());
    this.#align = Math.max(256, gpu.device.limits.minUniformBufferOffsetAlignment);
  }

  async allocate(): Promise<void> {
    for (const [d, device] of this.devices.entries()) {
      device.pushErrorScope("out-of-memory");
      for (const b of this.plan.buffers) {
        if (b.host !== null && this.hostDevice[b.host] !== d) continue;
        const buffer = device.createBuffer({
          label: b.id,
          size: bufferBytes(b),
          usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
        });
        this.#buffers[d].set(b.id, buffer);
      }
      const oom = await device.popErrorScope();
      if (oom) {
        const total = this.plan.buffers.reduce((a, b) => a + bufferBytes(b), 0);
        throw new OutOfMemoryError(
          `the device ran out of memory allocating this plan (${fmtBytes(total)} in all): ` +
            `use fewer tokens, f16 storage (--storage f16 --kv f16), or fewer layers`,
        );
      }
    }
    await this.#fill();
  }

  async compileAll(): Promise<void> {
    for (const [d, device] of this.devices.entries()) {
      // Plans record each kernel's family and base spec; its tile (or vector width) is chosen
      // per device and shape by runtime/autotune.ts, and one pipeline is compiled per distinct
      // tuned spec. A kernel with user-supplied WGSL keeps its plan spec.
      const wanted = new Map<string, { family: string; spec: unknown; code?: string }>();
      for (const program of Object.values(this.plan.programs)) {
        for (const step of program.phases.flatMap((p) => p.steps.flat())) {
          const decl = this.plan.kernels[step.kernel];
          const code = this.options.kernelCode?.[step.kernel];
          const spec = code === undefined
            ? tunedSpec(device, decl.family, decl.spec, step.sizes)
            : decl.spec;
          const id = code === undefined ? kernelFamily(decl.family).key(spec) : step.kernel;
          this.#tuned[d].set(step, { id, spec });
          wanted.set(id, { family: decl.family, spec, code });
        }
      }
      for (const [id, w] of wanted) {
        const kernel = kernelFamily(w.family).generate(w.spec);
        const code = w.code ?? kernel.code;
        this.#kernels[d].set(id, await compileKernel(device, { ...kernel, code }, id));
      }
    }
  }

  /** Weights (loaded or seeded) and tables, one command buffer per device. */
  async #fill(): Promise<void> {
    for (const [d, device] of this.devices.entries()) {
      const buffers = this.#buffers[d];
      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      const temporaries: GPUBuffer[] = [];
      for (const w of this.plan.weights) {
        const buffer = buffers.get(w.buffer)!;
        const bytes = await this.options.weights.load?.(w, this.plan.storage.weights);
        if (bytes) {
          writeLarge(device, buffer, bytes);
          continue;
        }
        const spec = { elem: this.plan.storage.weights };
        const sizes = {
          count: weightElements(w),
          seed: hash2(this.options.weights.seed >>> 0, w.seed, 0),
          scale: w.init.scale,
          bias: w.init.bias,
          offset: weightOffset(w),
        };
        temporaries.push(await encodeFill(device, pass, buffer, spec, sizes));
      }
      pass.end();
      for (const b of this.plan.buffers) {
        if (b.fill?.kind !== "rope") continue;
        const table = ropeTable(b.fill.rope, b.fill.headDim, b.fill.positions);
        device.queue.writeBuffer(buffers.get(b.id)!, 0, new Float32Array(table));
      }
      device.queue.submit([encoder.finish()]);
      await device.queue.onSubmittedWorkDone();
      for (const t of temporaries) t.destroy();
    }
  }

  #prepare(name: ProgramName): Prepared {
    const hit = this.#prepared.get(name);
    if (hit) return hit;
    const program = this.plan.programs[name];
    const counts = this.devices.map(() => 0);
    const pending: { d: number; make: (uniform: GPUBuffer) => Op }[] = [];
    const newOp = (host: number, kernelId: string, step: Omit<Step, "kernel">) => {
      const d = this.hostDevice[host];
      const slot = counts[d]++;
      const holder = { op: undefined as Op | undefined };
      pending.push({
        d,
        make: (uniform) => holder.op = this.#op(d, host, kernelId, step, uniform, slot),
      });
      return holder;
    };
    const phases = program.phases.map((phase) => {
      const transfers = phase.transfers.map((t) => {
        if (this.hostDevice[t.from] !== this.hostDevice[t.to] || contiguousCopy(t)) return t;
        return newOp(t.to, `copy2d_${t.elem}`, transferStep(t));
      });
      const ops = phase.steps.map((steps, host) => steps.map((s) => newOp(host, s.kernel, s)));
      return { transfers, ops };
    });
    const uniforms = this.devices.map((device, d) => {
      const slots = Math.max(1, counts[d]);
      const buffer = device.createBuffer({
        size: slots * this.#align,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      });
      return { buffer, slots, data: new ArrayBuffer(slots * this.#align) };
    });
    for (const p of pending) p.make(uniforms[p.d].buffer);
    const prepared: Prepared = {
      program,
      phases: phases.map((p) => ({
        transfers: p.transfers.map((t) => ("op" in t ? t.op! : t)),
        ops: p.ops.map((list) => list.map((h) => h.op!)),
      })),
      uniforms,
    };
    this.#prepared.set(name, prepared);
    return prepared;
  }

  #op(
    d: number,
    host: number,
    kernelId: string,
    step: Omit<Step, "kernel">,
    uniform: GPUBuffer,
    slot: number,
  ): Op {
    const device = this.devices[d];
    const tuned = this.#tuned[d].get(step);
    const compiled = this.#kernels[d].get(tuned?.id ?? kernelId);
    if (!compiled) throw new Error(`internal: kernel ${kernelId} not compiled`);
    // Transfers that are strided run as copy2d kernels the plan need not list.
    const decl = this.plan.kernels[kernelId] ??
      { family: "copy2d", spec: { elem: kernelId.slice("copy2d_".length) } };
    const family = kernelFamily(decl.family);
    const spec = tuned?.spec ?? decl.spec;
    const entries: GPUBindGroupEntry[] = [
      { binding: 0, resource: { buffer: uniform, offset: slot * this.#align, size: 256 } },
    ];
    compiled.kernel.bindings.forEach((b, i) => {
      const id = step.bind[b.name];
      const buffer = id === undefined ? undefined : this.#buffers[d].get(id);
      if (!buffer) {
        throw new Error(
          `internal: ${step.label}: binding ${b.name} → ${id} missing on host ${host}`,
        );
      }
      entries.push({ binding: i + 1, resource: { buffer } });
    });
    const bindGroup = device.createBindGroup({
      label: step.label,
      layout: compiled.layout,
      entries,
    });
    return { host, compiled, family, spec, sizes: step.sizes, bindGroup, slot, label: step.label };
  }

  async run(
    name: ProgramName,
    inputs: HostInputs[],
    vars: Record<string, number>,
    options: RunOptions = {},
  ): Promise<RunResult> {
    await this.#ensureCopyKernels();
    const prepared = this.#prepare(name);
    const program = prepared.program;
    const started = performance.now();
    this.#writeInputs(inputs);
    this.#writeParams(prepared, vars);
    const timing = phaseRecords(
      program.phases,
      this.plan.hosts.length,
      (t) => evalExpr(t.rows, vars) * t.cols * bytesPer(t.elem),
    );
    const timestamps = new TimestampSets(this.devices, this.hostDevice, prepared);
    for (const d of this.devices) d.pushErrorScope("validation");
    if (this.devices.length === 1) {
      const encoder = this.devices[0].createCommandEncoder();
      prepared.phases.forEach((phase, p) => {
        this.#encodeTransfers(encoder, phase.transfers, vars);
        phase.ops.forEach((ops, host) => this.#encodePass(encoder, ops, vars, timestamps, p, host));
      });
      this.devices[0].queue.submit([encoder.finish()]);
    } else {
      for (const [p, phase] of prepared.phases.entries()) {
        await this.#stagedTransfers(phase.transfers, vars);
        phase.ops.forEach((ops, host) => {
          const device = this.devices[this.hostDevice[host]];
          const encoder = device.createCommandEncoder();
          this.#encodePass(encoder, ops, vars, timestamps, p, host);
          device.queue.submit([encoder.finish()]);
        });
      }
    }
    for (const d of this.devices) {
      const error = await d.popErrorScope();
      if (error) {
        throw new Error(`internal: the device rejected the ${name} program: ${error.message}`);
      }
    }
    const [logits, times] = await Promise.all([
      this.#readLogits(program, vars, options),
      timestamps.read(),
    ]);
    const wallMs = performance.now() - started;
    if (times) {
      for (const [key, ms] of times) timing[key >> 16].hostMs[key & 0xffff] = ms;
    }
    return { logits, timing: { wallMs, phases: times ? timing : null } };
  }

  async #ensureCopyKernels(): Promise<void> {
    for (const [d, device] of this.devices.entries()) {
      for (const elem of ["f32", "f16", "u32"] as const) {
        const id = `copy2d_${elem}`;
        if (this.#kernels[d].has(id)) continue;
        const family = kernelFamily("copy2d");
        this.#kernels[d].set(id, await compileKernel(device, family.generate({ elem }), id));
      }
    }
  }

  #writeInputs(inputs: HostInputs[]): void {
    inputs.forEach((input, h) => {
      const d = this.hostDevice[h];
      const device = this.devices[d];
      const host = this.plan.hosts[h];
      device.queue.writeBuffer(this.#buffers[d].get(host.ids)!, 0, input.ids);
      device.queue.writeBuffer(this.#buffers[d].get(host.positions)!, 0, input.positions);
    });
  }

  #writeParams(prepared: Prepared, vars: Record<string, number>): void {
    const key = JSON.stringify(vars);
    if (prepared.paramsFor === key) return;
    prepared.paramsFor = key;
    const fill = (op: Op) => {
      const u = prepared.uniforms[this.hostDevice[op.host]];
      const bytes = op.family.params(op.spec, evalSizes(op.sizes, vars));
      new Uint8Array(u.data, op.slot * this.#align, bytes.byteLength).set(new Uint8Array(bytes));
    };
    for (const phase of prepared.phases) {
      for (const t of phase.transfers) if ("bindGroup" in t) fill(t);
      for (const ops of phase.ops) ops.forEach(fill);
    }
    prepared.uniforms.forEach((u, d) => this.devices[d].queue.writeBuffer(u.buffer, 0, u.data));
  }

  #encodePass(
    encoder: GPUCommandEncoder,
    ops: Op[],
    vars: Record<string, number>,
    timestamps: TimestampSets,
    phase: number,
    host: number,
  ): void {
    if (ops.length === 0) return;
    const writes = timestamps.writes(this.hostDevice[host], phase, host);
    const pass = encoder.beginComputePass(writes ? { timestampWrites: writes } : {});
    for (const op of ops) dispatch(pass, op, vars);
    pass.end();
  }

  #encodeTransfers(
    encoder: GPUCommandEncoder,
    transfers: (Op | Transfer)[],
    vars: Record<string, number>,
  ) {
    const strided = transfers.filter((t): t is Op => "bindGroup" in t);
    for (const t of transfers) {
      if ("bindGroup" in t) continue;
      const b = bytesPer(t.elem);
      const rows = evalExpr(t.rows, vars);
      if (rows === 0) continue;
      const buffers = this.#buffers[0];
      encoder.copyBufferToBuffer(
        buffers.get(t.src)!,
        evalExpr(t.srcOffset, vars) * b,
        buffers.get(t.dst)!,
        evalExpr(t.dstOffset, vars) * b,
        rows * t.cols * b,
      );
    }
    if (strided.length) {
      const pass = encoder.beginComputePass();
      for (const op of strided) dispatch(pass, op, vars);
      pass.end();
    }
  }

  /** Device-per-host transfers: read the source rows back, write them to the destination. */
  async #stagedTransfers(
    transfers: (Op | Transfer)[],
    vars: Record<string, number>,
  ): Promise<void> {
    await Promise.all(transfers.map(async (t) => {
      if ("bindGroup" in t) {
        const device = this.devices[this.hostDevice[t.host]];
        const encoder = device.createCommandEncoder();
        const pass = encoder.beginComputePass();
        dispatch(pass, t, vars);
        pass.end();
        device.queue.submit([encoder.finish()]);
        return;
      }
      const rows = evalExpr(t.rows, vars);
      if (rows === 0) return;
      const b = bytesPer(t.elem);
      const srcOffset = evalExpr(t.srcOffset, vars);
      const dstOffset = evalExpr(t.dstOffset, vars);
      const span = (rows - 1) * t.srcStride + t.cols;
      const from = this.hostDevice[t.from];
      const start = Math.floor((srcOffset * b) / 4) * 4;
      const bytes = Math.ceil((srcOffset * b + span * b - start) / 4) * 4;
      const staging = this.devices[from].createBuffer({
        size: bytes,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      const encoder = this.devices[from].createCommandEncoder();
      encoder.copyBufferToBuffer(this.#buffers[from].get(t.src)!, start, staging, 0, bytes);
      this.devices[from].queue.submit([encoder.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      const data = new Uint8Array(staging.getMappedRange().slice(0));
      staging.unmap();
      staging.destroy();
      const to = this.hostDevice[t.to];
      const dst = this.#buffers[to].get(t.dst)!;
      const skew = srcOffset * b - start;
      for (let r = 0; r < rows; r++) {
        const at = skew + r * t.srcStride * b;
        const row = data.subarray(at, at + t.cols * b);
        writeUnaligned(this.devices[to], dst, (dstOffset + r * t.dstStride) * b, row);
      }
    }));
  }

  async #readLogits(program: Program, vars: Record<string, number>, options: RunOptions) {
    const vocab = this.plan.model.config.vocabSize;
    return await Promise.all(program.logits.map(async (out) => {
      const rows = evalExpr(out.rows, vars);
      const d = this.hostDevice[out.host];
      const argmax = await this.#readRange(d, out.argmax, "u32", 0, rows);
      const logits = options.readLogits
        ? new Float32Array(await this.#readRange(d, out.logits, "f32", 0, rows * vocab))
        : null;
      return {
        host: out.host,
        rows,
        tokens: out.tokens,
        argmax: Uint32Array.from(argmax),
        logits,
      };
    }));
  }

  async #readRange(
    d: number,
    id: string,
    elem: "f32" | "u32" | "f16",
    start: number,
    count: number,
  ) {
    const device = this.devices[d];
    const b = bytesPer(elem);
    const bytes = Math.max(4, Math.ceil((count * b) / 4) * 4);
    const staging = device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const encoder = device.createCommandEncoder();
    encoder.copyBufferToBuffer(this.#buffers[d].get(id)!, start * b, staging, 0, bytes);
    device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const values = decodeElements(elem, staging.getMappedRange().slice(0), count);
    staging.unmap();
    staging.destroy();
    return values;
  }

  async read(id: string): Promise<Float64Array> {
    const decl = this.plan.buffers.find((b) => b.id === id);
    if (!decl) throw new Error(`no buffer ${id}`);
    const d = decl.host === null ? 0 : this.hostDevice[decl.host];
    return await this.#readRange(d, id, decl.elem === "i32" ? "u32" : decl.elem, 0, decl.elements);
  }

  destroy(): void {
    for (const map of this.#buffers) for (const b of map.values()) b.destroy();
    for (const p of this.#prepared.values()) for (const u of p.uniforms) u.buffer.destroy();
    for (const d of this.devices.slice(1)) d.destroy();
  }
}

/** Timestamp query sets for every (phase, host) pass of one run, per device. */
class TimestampSets {
  #sets: { device: GPUDevice; sets: GPUQuerySet[]; index: Map<number, number> }[] = [];

  constructor(devices: GPUDevice[], hostDevice: number[], prepared: Prepared) {
    devices.forEach((device, d) => {
      const index = new Map<number, number>();
      if (!device.features.has("timestamp-query")) {
        this.#sets.push({ device, sets: [], index });
        return;
      }
      prepared.phases.forEach((phase, p) => {
        phase.ops.forEach((ops, host) => {
          if (ops.length && hostDevice[host] === d) index.set((p << 16) | host, index.size);
        });
      });
      const sets: GPUQuerySet[] = [];
      for (let i = 0; i < index.size; i += 2048) {
        sets.push(
          device.createQuerySet({ type: "timestamp", count: 2 * Math.min(2048, index.size - i) }),
        );
      }
      this.#sets.push({ device, sets, index });
    });
  }

  writes(d: number, phase: number, host: number): GPUComputePassTimestampWrites | undefined {
    const s = this.#sets[d];
    const i = s.index.get((phase << 16) | host);
    if (i === undefined) return undefined;
    return {
      querySet: s.sets[Math.floor(i / 2048)],
      beginningOfPassWriteIndex: 2 * (i % 2048),
      endOfPassWriteIndex: 2 * (i % 2048) + 1,
    };
  }

  async read(): Promise<Map<number, number> | null> {
    const out = new Map<number, number>();
    let any = false;
    for (const s of this.#sets) {
      if (!s.sets.length) continue;
      any = true;
      const encoder = s.device.createCommandEncoder();
      const readbacks = s.sets.map((set) => {
        const bytes = set.count * 8;
        const resolve = s.device.createBuffer({
          size: bytes,
          usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
        });
        const read = s.device.createBuffer({
          size: bytes,
          usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
        });
        encoder.resolveQuerySet(set, 0, set.count, resolve, 0);
        encoder.copyBufferToBuffer(resolve, 0, read, 0, bytes);
        return { resolve, read };
      });
      s.device.queue.submit([encoder.finish()]);
      const stamps: BigUint64Array[] = [];
      for (const r of readbacks) {
        await r.read.mapAsync(GPUMapMode.READ);
        stamps.push(new BigUint64Array(r.read.getMappedRange().slice(0)));
        r.read.unmap();
        r.read.destroy();
        r.resolve.destroy();
      }
      for (const [key, i] of s.index) {
        const t = stamps[Math.floor(i / 2048)];
        const j = 2 * (i % 2048);
        out.set(key, Number(t[j + 1] - t[j]) / 1e6);
      }
      for (const set of s.sets) set.destroy();
    }
    return any ? out : null;
  }
}

function dispatch(pass: GPUComputePassEncoder, op: Op, vars: Record<string, number>): void {
  const [x, y, z] = op.family.dispatch(op.spec, evalSizes(op.sizes, vars));
  if (x === 0 || y === 0 || z === 0) return;
  pass.setPipeline(op.compiled.pipeline);
  pass.setBindGroup(0, op.bindGroup);
  pass.dispatchWorkgroups(x, y, z);
}

function evalSizes(sizes: Step["sizes"], vars: Record<string, number>): Sizes {
  const out: Sizes = {};
  for (const [k, v] of Object.entries(sizes)) out[k] = evalExpr(v, vars);
  return out;
}

function contiguousCopy(t: Transfer): boolean {
  const b = bytesPer(t.elem);
  const dense = t.rows === 1 || (t.srcStride === t.cols && t.dstStride === t.cols);
  const aligned = typeof t.srcOffset === "number" && typeof t.dstOffset === "number"
    ? (t.srcOffset * b) % 4 === 0 && (t.dstOffset * b) % 4 === 0 && (t.cols * b) % 4 === 0
    : b === 4;
  return dense && aligned;
}

function transferStep(t: Transfer): Omit<Step, "kernel"> {
  return {
    sizes: {
      rows: t.rows,
      cols: t.cols,
      srcStride: t.srcStride,
      srcOffset: t.srcOffset,
      dstStride: t.dstStride,
      dstOffset: t.dstOffset,
    },
    bind: { src: t.src, dst: t.dst },
    label: t.label,
  };
}

/** writeBuffer in chunks (Deno copies the data; keep each copy moderate). */
function writeLarge(device: GPUDevice, buffer: GPUBuffer, bytes: Uint8Array<ArrayBuffer>): void {
  const chunk = 64 << 20;
  for (let at = 0; at < bytes.byteLength; at += chunk) {
    const end = Math.min(bytes.byteLength, at + chunk);
    const part = bytes.subarray(at, end);
    const padded = part.byteLength % 4 ? padTo4(part) : part;
    device.queue.writeBuffer(buffer, at, padded);
  }
}

function padTo4(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
  out.set(bytes);
  return out;
}

/** Writes `bytes` at a byte offset that may not be 4-aligned (f16 rows): only whole rows of f16 pairs are supported. */
function writeUnaligned(
  device: GPUDevice,
  buffer: GPUBuffer,
  offset: number,
  bytes: Uint8Array,
): void {
  if (offset % 4 !== 0 || bytes.byteLength % 4 !== 0) {
    throw new Error(
      `device-per-host transfer of ${bytes.byteLength} bytes at offset ${offset} is not 4-byte aligned`,
    );
  }
  device.queue.writeBuffer(buffer, offset, bytes.slice());
}
