// Shared GPU access for tests: one device per test process, or a visible skip when there is none.

import { type Gpu, openGpu } from "../runtime/device.ts";

let opened: Promise<Gpu | null> | undefined;

/** The test process's device, or null (after printing why) when no adapter exists. */
export function testGpu(): Promise<Gpu | null> {
  opened ??= openGpu().catch((e) => {
    console.warn(`SKIP GPU tests: ${String(e).split("\n")[0]}`);
    return null;
  });
  return opened;
}

/** Whether the test device has `feature`. */
export async function gpuHas(feature: GPUFeatureName): Promise<boolean> {
  return (await testGpu())?.device.features.has(feature) ?? false;
}
