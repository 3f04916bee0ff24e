// Dispatch grids larger than 65535 workgroups in one dimension are spread over x and y; kernels
// recover a flat workgroup index from the builtins below and guard the ragged last row.

/** The most workgroups WebGPU allows in one dispatch dimension. */
export const MAX_GROUPS_PER_DIM = 65535;

/** Entry-point parameters every kernel here declares: workgroup id and count, local index. */
export const ENTRY_BUILTINS: string = "@builtin(workgroup_id) wid: vec3<u32>, " +
  "@builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32";

/** WGSL expression of the flat workgroup index under a {@linkcode grid2d} dispatch. */
export const FLAT_GROUP = "(wid.x + wid.y * nwg.x)";

/** Workgroup counts that cover `groups` workgroups with no dimension above 65535. */
export function grid2d(groups: number): [number, number, number] {
  if (groups <= 0) return [0, 1, 1];
  const x = Math.min(groups, MAX_GROUPS_PER_DIM);
  const y = Math.ceil(groups / x);
  if (y > MAX_GROUPS_PER_DIM) throw new Error(`grid2d: ${groups} workgroups do not fit in 2D`);
  return [x, y, 1];
}

/** {@linkcode grid2d} for one invocation per item, `perGroup` items per workgroup. */
export function gridFor(items: number, perGroup: number): [number, number, number] {
  return grid2d(Math.ceil(items / perGroup));
}
