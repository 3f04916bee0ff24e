// −∞ is the log-sum-exp of no keys and the identity of a merge. WGSL has no infinity literal and
// lets compilers assume finite math, so it is made and recognised through its bit pattern.

/** WGSL: the −∞ constant and `fn is_neg_inf(x: f32) -> bool`. */
export const NEG_INF_WGSL = `
// A private variable, not a const: Tint (Dawn) rejects a constant expression that evaluates to ∞.
var<private> NEG_INF_BITS: u32 = 0xff800000u;
fn is_neg_inf(x: f32) -> bool {
  return bitcast<u32>(x) == NEG_INF_BITS;
}
`;
