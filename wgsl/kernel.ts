// The contract every kernel family follows: a WGSL generator and, beside it, its float64 reference.

/** Element type of a storage binding as the kernel sees it. */
export type ElementType = "f32" | "f16" | "u32" | "i32";

/** Storage type of weights and caches; activations are always f32. */
export type StorageType = "f32" | "f16";

/** One storage binding of a kernel. Binding 0 is always the uniform `params`; these follow from 1. */
export interface BindingSpec {
  /** Name used by plans and tests to attach a buffer. */
  name: string;
  /** Whether the kernel writes the binding. */
  access: "read" | "read_write";
  /** Element type the kernel reads or writes. */
  elem: ElementType;
}

/** A specialised kernel: WGSL source plus what is needed to create its pipeline. */
export interface KernelCode {
  /** WGSL source. */
  code: string;
  /** Entry point name. */
  entry: string;
  /** Workgroup size, as declared in the source. */
  workgroupSize: [number, number, number];
  /** Storage bindings in binding order (binding i + 1). */
  bindings: BindingSpec[];
  /** Device features the source needs. */
  features: GPUFeatureName[];
  /** Bytes of workgroup memory the kernel declares (checked against device limits). */
  workgroupBytes: number;
}

/**
 * A kernel with entry point `main` and a one-dimensional workgroup of `threads` invocations, as
 * every family here declares them; no workgroup memory and no optional features unless given.
 */
export function computeKernel(k: {
  code: string;
  bindings: BindingSpec[];
  threads: number;
  workgroupBytes?: number;
  features?: GPUFeatureName[];
}): KernelCode {
  return {
    code: k.code,
    entry: "main",
    workgroupSize: [k.threads, 1, 1],
    bindings: k.bindings,
    features: k.features ?? [],
    workgroupBytes: k.workgroupBytes ?? 0,
  };
}

/** Problem sizes and offsets of one dispatch; values are plain numbers (float fields allowed). */
export type Sizes = Record<string, number>;

/** Float64 buffers, by binding name, that a reference reads and writes. */
export type HostBuffers = Record<string, Float64Array>;

/**
 * A kernel family: `spec` fixes what is compiled into the WGSL (dtypes, flags, tile shapes);
 * `sizes` is what varies per dispatch and reaches the kernel through the uniform `params`.
 */
export interface KernelFamily<Spec> {
  /** Family name, used in plan kernel ids. */
  readonly name: string;
  /** A stable, file-name-safe identifier of one specialisation. */
  key(spec: Spec): string;
  /** The WGSL for one specialisation. */
  generate(spec: Spec): KernelCode;
  /** Workgroup counts for a dispatch; each at most 65535. */
  dispatch(spec: Spec, sizes: Sizes): [number, number, number];
  /** Bytes of the uniform `params` struct for a dispatch. */
  params(spec: Spec, sizes: Sizes): ArrayBuffer;
  /** Float64 reference: reads the input bindings and writes exactly what the kernel writes. */
  reference(spec: Spec, sizes: Sizes, buffers: HostBuffers): void;
}
