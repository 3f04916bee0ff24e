// Picks the int8 GEMM tiling for a shape by timing the candidates on the device with timestamp
// queries (wall clock is meaningless for Dawn under Deno), and remembers the winner per device and
// shape, in memory and optionally in a JSON file, as an autotuner does.

import { timePasses } from "./gpu_timing.ts";
import { INT8_TILES, int8Matmul, type Int8MatmulSpec, type Int8Tile } from "../wgsl/int8_matmul.ts";
import { packedStride } from "../wgsl/quantize.ts";
import { compileKernel } from "./pipelines.ts";

/** One timed candidate. */
export interface TileTiming {
  /** Tile name (a key of INT8_TILES). */
  tile: string;
  /** Median GPU milliseconds per GEMM. */
  ms: number;
  /** Tera-operations per second (2·M·N·K per GEMM). */
  tops: number;
}

/** Shape of a GEMM to tune. */
export interface GemmShape {
  /** Rows of A and C. */
  M: number;
  /** Rows of B, columns of C. */
  N: number;
  /** Inner dimension. */
  K: number;
}

const memory = new Map<string, string>();

/** Key of a shape in the cache. */
function cacheKey(device: string, s: GemmShape): string {
  return `${device}|${s.M}x${s.N}x${s.K}`;
}

/**
 * Times every candidate tile for `shape` (operands filled with a pattern, `reps` GEMMs per timed
 * pass, median of `rounds` passes) and returns them fastest first. `base` fixes everything but
 * the tile (matrix shape, epilogue).
 */
export async function timeInt8Tiles(
  device: GPUDevice,
  shape: GemmShape,
  base: Omit<Int8MatmulSpec, "tile">,
  options: { tiles?: string[]; reps?: number; rounds?: number } = {},
): Promise<TileTiming[]> {
  const { M, N, K } = shape;
  const kWords = packedStride(K);
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const filled = (words: number, seed: number) => {
    const buffer = device.createBuffer({ size: words * 4, usage });
    const data = new Int32Array(Math.min(words, 1 << 22));
    for (let i = 0; i < data.length; i++) data[i] = Math.imul(i + seed, 0x9e3779b1) & 0x3f3f3f3f;
    for (let at = 0; at < words; at += data.length) {
      device.queue.writeBuffer(buffer, at * 4, data, 0, Math.min(data.length, words - at));
    }
    return buffer;
  };
  const a = filled(M * kWords, 1);
  const b = filled(N * kWords, 2);
  const sa = filled(M, 3);
  const sw = filled(N, 4);
  const c = device.createBuffer({ size: M * N * 4, usage });
  const names = options.tiles ?? Object.keys(INT8_TILES);
  const reps = options.reps ?? Math.max(1, Math.min(50, Math.round(2e12 / (2 * M * N * K))));
  const rounds = options.rounds ?? 5;
  const results: TileTiming[] = [];
  for (const name of names) {
    const spec = { ...base, tile: INT8_TILES[name] } as Int8MatmulSpec;
    let compiled;
    try {
      compiled = await compileKernel(device, int8Matmul.generate(spec), int8Matmul.key(spec));
    } catch (e) {
      console.warn(`int8 tile ${name}: ${String(e).split("\n")[0]}`);
      continue;
    }
    const sizes = { M, N, K, kWords, aOffset: 0, cStride: N, cOffset: 0 };
    const uniform = device.createBuffer({
      size: 256,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    device.queue.writeBuffer(uniform, 0, int8Matmul.params(spec, sizes));
    const bound = spec.output === "i32" ? [a, b, c] : [a, sa, b, sw, c];
    const group = device.createBindGroup({
      layout: compiled.layout,
      entries: [
        { binding: 0, resource: { buffer: uniform } },
        ...bound.map((buffer, i) => ({ binding: i + 1, resource: { buffer } })),
      ],
    });
    const ms = await timePasses(device, rounds + 1, (pass) => {
      pass.setPipeline(compiled.pipeline);
      pass.setBindGroup(0, group);
      for (let r = 0; r < reps; r++) pass.dispatchWorkgroups(...int8Matmul.dispatch(spec, sizes));
    });
    const per = ms.slice(1).map((x) => x / reps).sort((x, y) => x - y);
    const median = per[Math.floor(per.length / 2)];
    results.push({ tile: name, ms: median, tops: (2 * M * N * K) / median / 1e9 });
    uniform.destroy();
  }
  for (const buffer of [a, b, sa, sw, c]) buffer.destroy();
  return results.sort((x, y) => x.ms - y.ms);
}

/** The tile to use for `shape`: the cached winner, else timed now (and cached), else a default. */
export async function bestInt8Tile(
  device: GPUDevice,
  deviceName: string,
  shape: GemmShape,
  base: Omit<Int8MatmulSpec, "tile">,
  cacheFile?: string,
): Promise<Int8Tile> {
  const key = cacheKey(deviceName, shape);
  if (!memory.size && cacheFile) {
    try {
      const saved = JSON.parse(await Deno.readTextFile(cacheFile)) as Record<string, string>;
      for (const [k, v] of Object.entries(saved)) memory.set(k, v);
    } catch {
      // No cache yet.
    }
  }
  let name = memory.get(key);
  if (!name) {
    const timed = await timeInt8Tiles(device, shape, base);
    name = timed[0]?.tile ?? "128x128x64/64x64";
    memory.set(key, name);
    if (cacheFile) await Deno.writeTextFile(cacheFile, JSON.stringify(Object.fromEntries(memory)));
  }
  return INT8_TILES[name];
}
