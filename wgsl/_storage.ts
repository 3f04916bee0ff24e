// Storage-typed buffers (weights, KV caches) on both sides: WGSL reads f16 as packed u32 words
// with unpack2x16float so no kernel needs the shader-f16 feature, and the host reference rounds
// what it reads the way the buffer would have stored it.

import type { BindingSpec, ElementType, StorageType } from "./kernel.ts";

// f16 is addressed as u32 words of two halves.
function wgslElement(elem: ElementType): string {
  return elem === "f16" ? "u32" : elem;
}

/**
 * Declarations of `bindings` at group 0, bindings 1…n, as `array<element>`; `elements` overrides
 * the WGSL element type by binding name (e.g. `vec4<f32>` for vector access).
 */
export function declareBindings(
  bindings: readonly BindingSpec[],
  elements: Record<string, string> = {},
): string {
  return bindings.map((b, i) => {
    const access = b.access === "read" ? "read" : "read_write";
    const element = elements[b.name] ?? wgslElement(b.elem);
    return `@group(0) @binding(${i + 1}) var<storage, ${access}> ${b.name}: array<${element}>;\n`;
  }).join("");
}

/** WGSL `fn load_<name>(i: u32) -> f32` reading element i of a buffer of storage type `type`. */
export function storageLoader(name: string, type: StorageType): string {
  const body = type === "f32"
    ? `return ${name}[i];`
    : `return unpack2x16float(${name}[i >> 1u])[i & 1u];`;
  return `fn load_${name}(i: u32) -> f32 {\n  ${body}\n}\n`;
}

/** WGSL `fn bits_<name>(i: u32) -> u32`: the 16 bits of half i of an f16 buffer, copied exactly. */
export function halfBits(name: string): string {
  return `fn bits_${name}(i: u32) -> u32 {\n` +
    `  return (${name}[i >> 1u] >> ((i & 1u) * 16u)) & 0xffffu;\n}\n`;
}

/** Host side: the value a buffer of storage type `type` holds after storing `x`. */
export function storageRound(type: StorageType): (x: number) => number {
  return type === "f16" ? Math.f16round : (x) => x;
}
