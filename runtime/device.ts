// Finds a WebGPU adapter and opens a device with the features and limits this project needs,
// asked for explicitly because Deno grants only the spec defaults otherwise.

/** What a device offers that kernels and plans choose between. */
export interface DeviceInfo {
  /** Human-readable adapter description. */
  description: string;
  /** Backend in use, as far as Deno tells: "vulkan", "gl" or "unknown". */
  backend: string;
  /** Whether the adapter is a software fallback (llvmpipe, lavapipe). */
  isFallback: boolean;
  /** Features granted to the device. */
  features: GPUFeatureName[];
  /** Subgroup size range reported by the adapter. */
  subgroupMinSize: number;
  /** Largest subgroup size reported by the adapter. */
  subgroupMaxSize: number;
  /** Subgroup-matrix shapes and types the adapter offers (Dawn only; absent or empty elsewhere). */
  subgroupMatrixConfigs?: SubgroupMatrixConfig[];
}

/** One subgroup-matrix configuration: `left` M×K and `right` K×N of `componentType`. */
export interface SubgroupMatrixConfig {
  /** Element type of the operands ("i8", "u8", "f16", "f32", ...). */
  componentType: string;
  /** Element type of the result ("i32", "u32", "f16", "f32", ...). */
  resultComponentType: string;
  /** Rows of the left matrix and the result. */
  M: number;
  /** Columns of the right matrix and the result. */
  N: number;
  /** Columns of the left, rows of the right matrix. */
  K: number;
}

/** An open device with what it was granted. */
export interface Gpu {
  /** The device. */
  device: GPUDevice;
  /** The adapter it came from. */
  adapter: GPUAdapter;
  /** Summary of the adapter and granted features. */
  info: DeviceInfo;
}

/** Raised when no usable WebGPU adapter exists; the message says how to get one. */
export class NoAdapterError extends Error {
  /** The error\'s name. */
  override name = "NoAdapterError";
}

const WANTED_FEATURES: GPUFeatureName[] = ["shader-f16", "timestamp-query"];
const WANTED_LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxComputeWorkgroupStorageSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupsPerDimension",
] as const;

/**
 * The limits every device is opened with, each at what `source` (an adapter or another device)
 * offers: WebGPU grants only the spec defaults otherwise.
 */
export function requestedLimits(source: { limits: GPUSupportedLimits }): Record<string, number> {
  return Object.fromEntries(WANTED_LIMITS.map((name) => [name, source.limits[name]]));
}

/** Options for {@linkcode openGpu}. */
export interface OpenGpuOptions {
  /** Leave out features even when the adapter has them (to test fallbacks). */
  without?: GPUFeatureName[];
  /**
   * WebGPU implementation: Deno's built-in wgpu (default) or Dawn's dawn.node (runtime/dawn.ts,
   * loaded only when chosen), which adds int8 subgroup matrices.
   */
  backend?: "deno" | "dawn";
}

/** Opens the default adapter's device with every useful feature and the adapter's full limits. */
export async function openGpu(options: OpenGpuOptions = {}): Promise<Gpu> {
  if (options.backend === "dawn") {
    // Imported here so that the default path never loads the native addon's loader.
    const { openDawnGpu } = await import("./dawn.ts");
    return await openDawnGpu({ without: options.without });
  }
  const gpu = (globalThis.navigator as { gpu?: GPU } | undefined)?.gpu;
  if (!gpu) throw new NoAdapterError(noAdapterMessage("navigator.gpu is missing"));
  let adapter: GPUAdapter | null = null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch (e) {
    throw new NoAdapterError(noAdapterMessage(String(e)));
  }
  if (!adapter) throw new NoAdapterError(noAdapterMessage("requestAdapter() returned null"));
  const skip = new Set(options.without ?? []);
  const features = WANTED_FEATURES.filter((f) => adapter.features.has(f) && !skip.has(f));
  const requiredLimits = requestedLimits(adapter);
  // `subgroups` is requestable on Vulkan though Deno does not list it; try it first.
  let device: GPUDevice | null = null;
  let granted = features;
  if (!skip.has("subgroups")) {
    try {
      granted = [...features, "subgroups" as GPUFeatureName];
      device = await adapter.requestDevice({ requiredFeatures: granted, requiredLimits });
    } catch {
      device = null;
    }
  }
  if (!device) {
    granted = features;
    device = await adapter.requestDevice({ requiredFeatures: granted, requiredLimits });
  }
  const info = adapter.info;
  return {
    device,
    adapter,
    info: {
      description: info.description || `vendor ${info.vendor} device ${info.device}`,
      backend: Deno.env.get("DENO_WEBGPU_BACKEND") ?? "default",
      isFallback: info.isFallbackAdapter,
      features: granted,
      subgroupMinSize: info.subgroupMinSize ?? 0,
      subgroupMaxSize: info.subgroupMaxSize ?? 0,
    },
  };
}

function noAdapterMessage(cause: string): string {
  return [
    `no WebGPU adapter is available (${cause}).`,
    "  On a machine without a GPU install a software adapter:",
    "    sudo apt-get install mesa-vulkan-drivers libvulkan1   (Vulkan lavapipe, with f16)",
    "  or make sure Mesa's GL driver is present (libgl1-mesa-dri, libegl-mesa0) for GL llvmpipe.",
    "  On a GPU machine, install the Vulkan loader (libvulkan1) and the vendor's Vulkan driver;",
    "  DENO_WEBGPU_BACKEND=vulkan or =gl picks a backend.",
  ].join("\n");
}
