// Turns generated kernels into compute pipelines, once per device and kernel, with explicit
// layouts: binding 0 is the uniform params, storage bindings follow in the kernel's order.

import type { KernelCode } from "../wgsl/kernel.ts";

/** A pipeline with the layout its bind groups must follow. */
export interface CompiledKernel {
  /** The kernel it was built from. */
  kernel: KernelCode;
  /** The compute pipeline. */
  pipeline: GPUComputePipeline;
  /** Layout of group 0. */
  layout: GPUBindGroupLayout;
}

/** Raised when a device rejects a kernel; carries the compiler's messages. */
export class KernelCompileError extends Error {
  /** The error\'s name. */
  override name = "KernelCompileError";
}

const cache = new WeakMap<GPUDevice, Map<string, CompiledKernel>>();

/** Compiles (or returns the cached) pipeline of `kernel` on `device`. */
export async function compileKernel(
  device: GPUDevice,
  kernel: KernelCode,
  label = kernel.entry,
): Promise<CompiledKernel> {
  let perDevice = cache.get(device);
  if (!perDevice) cache.set(device, perDevice = new Map());
  const hit = perDevice.get(kernel.code);
  if (hit) return hit;
  for (const feature of kernel.features) {
    if (!device.features.has(feature)) {
      throw new KernelCompileError(
        `kernel ${label} needs the device feature "${feature}", which this adapter lacks`,
      );
    }
  }
  if (kernel.workgroupBytes > device.limits.maxComputeWorkgroupStorageSize) {
    throw new KernelCompileError(
      `kernel ${label} needs ${kernel.workgroupBytes} bytes of workgroup memory; ` +
        `the device allows ${device.limits.maxComputeWorkgroupStorageSize}`,
    );
  }
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ label, code: kernel.code });
  const entries: GPUBindGroupLayoutEntry[] = [
    { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: "uniform" } },
    ...kernel.bindings.map((b, i): GPUBindGroupLayoutEntry => ({
      binding: i + 1,
      visibility: GPUShaderStage.COMPUTE,
      buffer: { type: b.access === "read" ? "read-only-storage" : "storage" },
    })),
  ];
  const layout = device.createBindGroupLayout({ label, entries });
  let pipeline: GPUComputePipeline | undefined;
  let failure = "";
  try {
    pipeline = await device.createComputePipelineAsync({
      label,
      layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: kernel.entry },
    });
  } catch (e) {
    failure = String(e);
  }
  const error = await device.popErrorScope();
  if (error || !pipeline) {
    const info = await module.getCompilationInfo();
    const messages = info.messages.map((m) => `  ${m.lineNum}:${m.linePos} ${m.message}`);
    throw new KernelCompileError(
      [`kernel ${label} failed to compile: ${error?.message ?? failure}`, ...messages].join("\n"),
    );
  }
  const compiled = { kernel, pipeline, layout };
  perDevice.set(kernel.code, compiled);
  return compiled;
}
