// Seeded fills on the GPU: one fill_random dispatch into a compute pass, used for model weights
// and for benchmark inputs alike.

import { fillRandom } from "../wgsl/mod.ts";
import type { FillRandomSpec } from "../wgsl/fill_random.ts";
import type { Sizes } from "../wgsl/kernel.ts";
import { compileKernel } from "./pipelines.ts";

/**
 * Encodes into `pass` a fill of `buffer` with `fill_random` (`sizes`: count, seed, scale, bias,
 * offset). Returns the uniform buffer it made, to destroy once the pass has been submitted.
 */
export async function encodeFill(
  device: GPUDevice,
  pass: GPUComputePassEncoder,
  buffer: GPUBuffer,
  spec: FillRandomSpec,
  sizes: Sizes,
): Promise<GPUBuffer> {
  const compiled = await compileKernel(device, fillRandom.generate(spec), "fill_random");
  const uniform = device.createBuffer({
    size: 256,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
  device.queue.writeBuffer(uniform, 0, fillRandom.params(spec, sizes));
  pass.setPipeline(compiled.pipeline);
  pass.setBindGroup(
    0,
    device.createBindGroup({
      layout: compiled.layout,
      entries: [
        { binding: 0, resource: { buffer: uniform } },
        { binding: 1, resource: { buffer } },
      ],
    }),
  );
  pass.dispatchWorkgroups(...fillRandom.dispatch(spec, sizes));
  return uniform;
}
