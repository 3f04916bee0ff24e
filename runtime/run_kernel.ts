// Runs one kernel on float64 host data: uploads, dispatches, reads back. Used by kernel tests and
// the benchmark's correctness checks, never on the hot path.

import type { ElementType, HostBuffers, KernelFamily, Sizes } from "../wgsl/kernel.ts";
import { compileKernel } from "./pipelines.ts";

/** Converts float64 values to the bytes of a storage buffer of element type `elem`. */
export function encodeElements(elem: ElementType, values: Float64Array): Uint8Array<ArrayBuffer> {
  const padded = Math.max(4, Math.ceil((values.length * bytesPer(elem)) / 4) * 4);
  const bytes = new Uint8Array(padded);
  const view = typedView(elem, bytes.buffer, values.length);
  for (let i = 0; i < values.length; i++) view[i] = values[i];
  return bytes;
}

/** Converts the bytes of a storage buffer back to float64 values. */
export function decodeElements(elem: ElementType, bytes: ArrayBuffer, count: number): Float64Array {
  const view = typedView(elem, bytes, count);
  return Float64Array.from(view as ArrayLike<number>);
}

/** Bytes per element of `elem`. */
export function bytesPer(elem: ElementType): number {
  return elem === "f16" ? 2 : 4;
}

function typedView(elem: ElementType, buffer: ArrayBuffer, count: number) {
  switch (elem) {
    case "f32":
      return new Float32Array(buffer, 0, count);
    case "f16":
      return new Float16Array(buffer, 0, count);
    case "u32":
      return new Uint32Array(buffer, 0, count);
    case "i32":
      return new Int32Array(buffer, 0, count);
  }
}

/**
 * Runs `family` once with `buffers` (every binding must be present, outputs with their size) and
 * returns every read_write binding read back as float64.
 */
export async function runKernel<S>(
  device: GPUDevice,
  family: KernelFamily<S>,
  spec: S,
  sizes: Sizes,
  buffers: HostBuffers,
): Promise<HostBuffers> {
  const kernel = family.generate(spec);
  const { pipeline, layout } = await compileKernel(device, kernel, family.key(spec));
  const params = family.params(spec, sizes);
  const uniform = device.createBuffer({
    size: Math.max(16, Math.ceil(params.byteLength / 16) * 16),
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
  device.queue.writeBuffer(uniform, 0, params);
  const gpuBuffers = kernel.bindings.map((b) => {
    const data = buffers[b.name];
    if (!data) throw new Error(`runKernel: binding "${b.name}" of ${family.name} has no buffer`);
    const bytes = encodeElements(b.elem, data);
    const buffer = device.createBuffer({
      size: bytes.byteLength,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
    });
    device.queue.writeBuffer(buffer, 0, bytes);
    return buffer;
  });
  const bindGroup = device.createBindGroup({
    layout,
    entries: [
      { binding: 0, resource: { buffer: uniform } },
      ...gpuBuffers.map((buffer, i) => ({ binding: i + 1, resource: { buffer } })),
    ],
  });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bindGroup);
  const [x, y, z] = family.dispatch(spec, sizes);
  if (x > 0 && y > 0 && z > 0) pass.dispatchWorkgroups(x, y, z);
  pass.end();
  const outputs = kernel.bindings
    .map((b, i) => ({ b, buffer: gpuBuffers[i] }))
    .filter(({ b }) => b.access === "read_write");
  const staging = outputs.map(({ buffer }) => {
    const s = device.createBuffer({
      size: buffer.size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    encoder.copyBufferToBuffer(buffer, 0, s, 0, buffer.size);
    return s;
  });
  device.queue.submit([encoder.finish()]);
  const result: HostBuffers = {};
  await Promise.all(staging.map((s) => s.mapAsync(GPUMapMode.READ)));
  outputs.forEach(({ b }, i) => {
    result[b.name] = decodeElements(b.elem, staging[i].getMappedRange(), buffers[b.name].length);
    staging[i].unmap();
    staging[i].destroy();
  });
  for (const buffer of gpuBuffers) buffer.destroy();
  uniform.destroy();
  return result;
}
