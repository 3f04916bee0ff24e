// Families whose WGSL never varies still take a spec argument, so every family has one shape.

/** The spec of a family that compiles to a single kernel: always `{}`. */
export type NoSpec = Record<string, never>;
