// SiLU shared by the fused matmul epilogue and silu_mul, in a form that never evaluates exp of a
// large positive number, so it stays finite for any finite input.

/** WGSL `fn silu(a: f32) -> f32`. */
export const SILU_WGSL = `
fn silu(a: f32) -> f32 {
  let e = exp(-abs(a));
  return a * select(e / (1.0 + e), 1.0 / (1.0 + e), a >= 0.0);
}
`;

/** SiLU in float64, `a / (1 + e^(−a))`. */
export function silu(a: number): number {
  return a / (1 + Math.exp(-a));
}
