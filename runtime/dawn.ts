// A second WebGPU backend: Dawn's Node-API addon (`dawn.node`, npm package `webgpu` 0.6.2) under
// Deno. It is loaded only when asked for (`openGpu({ backend: "dawn" })`, `--backend dawn`), so the
// default path and CI never touch the 21 MB native addon. What Dawn adds over Deno's built-in wgpu
// is `chromium-experimental-subgroup-matrix`: on NVIDIA that is int8 tensor cores from WGSL.
//
// Where the addon comes from, first match wins:
//   1. DAWN_NODE=/path/to/dawn.node (what ../shared/tools/gpu-prep.sh --dawn exports);
//   2. node_modules/webgpu/dist/<platform>-<arch>/dawn.node under the working directory, e.g. after
//      `npm install --no-save webgpu@0.6.2` in the repository root (a native addon needs a real
//      node_modules folder; Deno's global npm cache cannot load it).
//
// Completion events: dawn.node has no JS-visible tick or processEvents. While a promise of it is
// pending (mapAsync, onSubmittedWorkDone, requestDevice) it calls wgpuInstanceProcessEvents from a
// self-rescheduling `setImmediate` chain (src/dawn/node/binding/AsyncRunner.cpp), so promptness
// depends on the host's setImmediate. Deno's chain runs about a million times a second (measured:
// < 0.1 ms overshoot on a simulated 168 ms wait), so the chain itself is prompt; time GPU work with
// timestamp queries all the same and read back once per batch.

import { createRequire } from "node:module";
import { type Gpu, NoAdapterError, requestedLimits, type SubgroupMatrixConfig } from "./device.ts";
import { SUBGROUP_MATRIX_FEATURE } from "../wgsl/int8_matmul.ts";

/** Options of {@linkcode openDawnGpu}. */
export interface DawnOptions {
  /** Path of dawn.node; default `DAWN_NODE`, then the npm package under the working directory. */
  addon?: string;
  /** Dawn backend: "vulkan" (default on Linux) or "null" (no GPU; compiles WGSL, runs nothing). */
  dawnBackend?: string;
  /** Adapter name as Dawn lists it, to pick one GPU of several. */
  adapter?: string;
  /** Fail unless the adapter offers subgroup matrices (default true except on the null backend). */
  requireSubgroupMatrix?: boolean;
  /** Leave out features even when the adapter has them. */
  without?: GPUFeatureName[];
}

/** The addon's two exports. */
interface DawnModule {
  create(flags: string[]): GPU;
  globals: Record<string, unknown>;
}

/** Raised when dawn.node cannot be found or loaded; the message says how to get it. */
export class DawnUnavailableError extends NoAdapterError {
  override name = "DawnUnavailableError";
}

let loaded: { path: string; module: DawnModule } | undefined;

/** Candidate paths of dawn.node, in the order they are tried. */
export function dawnAddonCandidates(addon?: string): string[] {
  const platform = Deno.build.os === "darwin"
    ? "darwin-universal"
    : `${Deno.build.os === "windows" ? "win32" : Deno.build.os}-${
      Deno.build.arch === "x86_64" ? "x64" : "arm64"
    }`;
  const fromEnv = addon ?? Deno.env.get("DAWN_NODE");
  const local = `${Deno.cwd()}/node_modules/webgpu/dist/${platform}/dawn.node`;
  return fromEnv ? [fromEnv] : [local];
}

/** Loads dawn.node once per process; throws {@linkcode DawnUnavailableError} with the fix. */
export function loadDawn(addon?: string): { path: string; module: DawnModule } {
  if (loaded) return loaded;
  const tried: string[] = [];
  for (const path of dawnAddonCandidates(addon)) {
    try {
      Deno.statSync(path);
    } catch {
      tried.push(`${path} (not found)`);
      continue;
    }
    try {
      const require = createRequire(import.meta.url);
      const module = require(path) as DawnModule;
      if (typeof module.create !== "function") throw new Error("it exports no create()");
      loaded = { path, module };
      return loaded;
    } catch (e) {
      tried.push(`${path} (${String(e).split("\n")[0]})`);
    }
  }
  throw new DawnUnavailableError(
    [
      `--backend dawn needs Dawn's Node-API addon dawn.node, which was not loaded: ${
        tried.join("; ")
      }.`,
      "  Either point DAWN_NODE at it (on a GPU machine: ../shared/tools/gpu-prep.sh --dawn",
      "  carries it and enter.sh exports DAWN_NODE), or install the npm package in the",
      "  repository root: npm install --no-save webgpu@0.6.2 (about 130 MB, every platform).",
      "  Without --backend dawn, Deno's built-in WebGPU is used and nothing of Dawn is needed.",
    ].join("\n"),
  );
}

// Dawn's globals (GPUBufferUsage, GPUMapMode, GPUShaderStage, ...) carry the spec's values, the
// same numbers as Deno's own; only names Deno lacks are added, so Deno's WebGPU keeps working
// beside Dawn in one process.
function installGlobals(globals: Record<string, unknown>): void {
  const g = globalThis as Record<string, unknown>;
  for (const [name, value] of Object.entries(globals)) {
    if (!(name in g)) g[name] = value;
  }
}

const WANTED_FEATURES = [
  "timestamp-query",
  "shader-f16",
  "subgroups",
  SUBGROUP_MATRIX_FEATURE,
] as GPUFeatureName[];

// Toggles: unsafe APIs for the experimental feature; robustness off because clamping every
// subgroup-matrix load costs tensor-core throughput and our kernels guard their own edges;
// timestamps unquantised (Dawn rounds them to 65 µs by default).
// APB_DAWN_FLAGS (flags separated by ";") replaces them, to tell a crashing toggle from a bug.
function dawnFlags(options: DawnOptions): string[] {
  const override = Deno.env.get("APB_DAWN_FLAGS");
  const flags = override !== undefined ? override.split(";").filter(Boolean) : [
    "enable-dawn-features=allow_unsafe_apis,disable_robustness",
    "disable-dawn-features=timestamp_quantization",
  ];
  if (options.dawnBackend) flags.push(`backend=${options.dawnBackend}`);
  if (options.adapter) flags.push(`adapter=${options.adapter}`);
  return flags;
}

const liveInstances: GPU[] = [];

/**
 * Opens a Dawn device with subgroups, subgroup matrices and timestamp queries where the adapter has
 * them, and the adapter's full limits. Returns the same {@linkcode Gpu} shape as Deno's backend;
 * `info.subgroupMatrixConfigs` lists what the tensor-core kernels may use.
 */
export async function openDawnGpu(options: DawnOptions = {}): Promise<Gpu> {
  const { path, module } = loadDawn(options.addon);
  installGlobals(module.globals);
  const gpu = module.create(dawnFlags(options));
  // dawn.node frees its instance when the JS object is collected, even with devices alive, and
  // later calls then crash at random (whenever V8 collected it): keep every instance alive.
  liveInstances.push(gpu);
  let adapter: GPUAdapter | null = null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch (e) {
    throw new NoAdapterError(`Dawn (${path}) found no adapter: ${String(e).split("\n")[0]}`);
  }
  if (!adapter) {
    throw new NoAdapterError(
      `Dawn (${path}) found no adapter. On Linux it needs a Vulkan driver for the GPU ` +
        `(libvulkan1 and the vendor's ICD; software Vulkan from Mesa 22 is refused).`,
    );
  }
  const skip = new Set(options.without ?? []);
  const features = WANTED_FEATURES.filter((f) => adapter.features.has(f) && !skip.has(f));
  const configs = subgroupMatrixConfigs(adapter);
  const nullBackend = options.dawnBackend === "null";
  if ((options.requireSubgroupMatrix ?? !nullBackend) && !configs.length) {
    throw new NoAdapterError(
      `the Dawn adapter "${adapter.info.description || adapter.info.device}" offers no subgroup ` +
        `matrices (feature ${SUBGROUP_MATRIX_FEATURE}${
          adapter.features.has(SUBGROUP_MATRIX_FEATURE)
            ? " listed, but no configuration"
            : " missing"
        }); the int8 tensor-core kernels cannot run on it`,
    );
  }
  const requiredLimits = requestedLimits(adapter);
  const device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits });
  patchAsyncPipelines(device);
  patchShaderDialect(device);
  device.addEventListener("uncapturederror", (e) => {
    console.error(`dawn: ${(e as GPUUncapturedErrorEvent).error.message}`);
  });
  const info = adapter.info as GPUAdapterInfo & { subgroupMinSize?: number };
  return {
    device,
    adapter,
    info: {
      description: info.description || `vendor ${info.vendor} device ${info.device}`,
      backend: `dawn ${options.dawnBackend ?? "default"}`,
      isFallback: info.isFallbackAdapter ?? false,
      features,
      subgroupMinSize: info.subgroupMinSize ?? 0,
      subgroupMaxSize: info.subgroupMaxSize ?? 0,
      subgroupMatrixConfigs: configs,
    },
  };
}

/**
 * dawn.node 0.6.2 under Deno never settles the promise of `createComputePipelineAsync` (measured on
 * the H100 and on Dawn's null backend; `createComputePipeline` and the other promises work), so
 * the device's async form is replaced by the synchronous one; errors still reach error scopes.
 */
function patchAsyncPipelines(device: GPUDevice): void {
  device.createComputePipelineAsync = (descriptor: GPUComputePipelineDescriptor) => {
    try {
      return Promise.resolve(device.createComputePipeline(descriptor));
    } catch (e) {
      return Promise.reject(e);
    }
  };
}

/**
 * Kernels are written for naga (Deno's wgpu), which refuses `enable subgroups;` as not yet
 * implemented, while Tint (Dawn) refuses subgroup built-ins without it: modules created on a Dawn
 * device get the directive when they call subgroup built-ins and lack it.
 */
function patchShaderDialect(device: GPUDevice): void {
  const create = device.createShaderModule.bind(device);
  device.createShaderModule = (descriptor: GPUShaderModuleDescriptor) =>
    create({ ...descriptor, code: tintDialect(descriptor.code) });
}

/** `code` with `enable subgroups;` first when it calls subgroup built-ins without enabling them. */
export function tintDialect(code: string): string {
  const uses = /\bsubgroup[A-Z]\w*\s*\(/.test(code);
  const enabled = /^\s*enable\s+[\w\s,]*\bsubgroups\b[\w\s,]*;/m.test(code);
  return uses && !enabled ? `enable subgroups;\n${code}` : code;
}

/** The adapter's subgroup-matrix configurations as plain objects (empty when it has none). */
export function subgroupMatrixConfigs(adapter: GPUAdapter): SubgroupMatrixConfig[] {
  const list = (adapter.info as unknown as { subgroupMatrixConfigs?: SubgroupMatrixConfig[] })
    .subgroupMatrixConfigs ?? [];
  return [...list].map((c) => ({
    componentType: c.componentType,
    resultComponentType: c.resultComponentType,
    M: c.M,
    N: c.N,
    K: c.K,
  }));
}
