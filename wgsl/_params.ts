// The uniform `params` struct at binding 0: its WGSL declaration and its byte packing come from
// one field list, so the two cannot drift apart.

import type { Sizes } from "./kernel.ts";

/** Scalar type of one uniform field. */
export type ParamType = "u32" | "i32" | "f32";

/** Ordered fields of a kernel's `params` struct: name and scalar type. */
export type ParamFields = readonly (readonly [string, ParamType])[];

/** WGSL declaration of `struct Params` and `var<uniform> params` at group 0, binding 0. */
export function paramsWgsl(fields: ParamFields): string {
  const members = fields.map(([name, type]) => `  ${name}: ${type},`).join("\n");
  return `struct Params {\n${members}\n}\n@group(0) @binding(0) var<uniform> params: Params;\n`;
}

/**
 * Packs `values` into the bytes of the struct declared by {@linkcode paramsWgsl}, padded to a
 * multiple of 16 bytes. Throws, naming `family`, when a field is missing or out of its type's
 * range, because a wrong size caught here is far cheaper than a garbled GPU result.
 */
export function packParams(family: string, fields: ParamFields, values: Sizes): ArrayBuffer {
  const bytes = new ArrayBuffer(Math.max(16, Math.ceil((fields.length * 4) / 16) * 16));
  const view = new DataView(bytes);
  fields.forEach(([name, type], i) => {
    const v = values[name];
    if (typeof v !== "number" || Number.isNaN(v)) {
      throw new Error(`${family}: size "${name}" is missing or not a number (got ${v})`);
    }
    if (type === "f32") {
      view.setFloat32(i * 4, v, true);
      return;
    }
    const [lo, hi] = type === "u32" ? [0, 2 ** 32 - 1] : [-(2 ** 31), 2 ** 31 - 1];
    if (!Number.isInteger(v) || v < lo || v > hi) {
      throw new Error(`${family}: size "${name}" = ${v} is not a valid ${type}`);
    }
    if (type === "u32") view.setUint32(i * 4, v, true);
    else view.setInt32(i * 4, v, true);
  });
  return bytes;
}
