// Timing GPU work by timestamp queries: one pass per measurement, one submit, one readback.

/**
 * GPU milliseconds of `count` compute passes, each encoded by `encode`, all in one submit with
 * one readback (dawn.node's completion promises are late under Deno; timestamps are not).
 */
export async function timePasses(
  device: GPUDevice,
  count: number,
  encode: (pass: GPUComputePassEncoder, index: number) => void,
): Promise<number[]> {
  const set = device.createQuerySet({ type: "timestamp", count: 2 * count });
  const resolve = device.createBuffer({
    size: 16 * count,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  });
  const read = device.createBuffer({
    size: 16 * count,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const encoder = device.createCommandEncoder();
  for (let i = 0; i < count; i++) {
    const pass = encoder.beginComputePass({
      timestampWrites: {
        querySet: set,
        beginningOfPassWriteIndex: 2 * i,
        endOfPassWriteIndex: 2 * i + 1,
      },
    });
    encode(pass, i);
    pass.end();
  }
  encoder.resolveQuerySet(set, 0, 2 * count, resolve, 0);
  encoder.copyBufferToBuffer(resolve, 0, read, 0, 16 * count);
  device.queue.submit([encoder.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const t = new BigUint64Array(read.getMappedRange().slice(0));
  read.unmap();
  for (const x of [resolve, read]) x.destroy();
  set.destroy();
  return Array.from({ length: count }, (_, i) => Number(t[2 * i + 1] - t[2 * i]) / 1e6);
}
