// Public API: the model DSL, built-in models and strategies, the compiler and the runtime.

export { configFromHuggingFace, validateConfig } from "./compiler/config.ts";
export type { Llama3RopeScaling, ModelConfig, RopeConfig } from "./compiler/config.ts";
export { defineModel, ModelBuilder, Tensor } from "./compiler/dsl.ts";
export type {
  AttentionOptions,
  LinearOptions,
  ModelDefinition,
  RopeOptions,
} from "./compiler/dsl.ts";
export { Graph } from "./compiler/graph.ts";
export type {
  AttentionAttrs,
  Attrs,
  DType,
  LinearPart,
  Node,
  Op,
  Param,
  ParamInit,
} from "./compiler/graph.ts";
export type { ElementType, StorageType } from "./wgsl/kernel.ts";
export { ModelError, PlanError } from "./compiler/errors.ts";
export { llama, llamaFromHuggingFace, llamaLayer } from "./compiler/models/llama.ts";
export { lower } from "./compiler/lower.ts";
export type { Int8Choice, LowerOptions } from "./compiler/lower.ts";
export { PLAN_FORMAT, PLAN_VERSION, PlanFormatError, validatePlan } from "./compiler/plan.ts";
export type * from "./compiler/plan.ts";
export * from "./compiler/strategies/strategy.ts";
export { apb, apbDefaults } from "./compiler/strategies/apb.ts";
export type { ApbOptions } from "./compiler/strategies/apb.ts";
export { dense } from "./compiler/strategies/dense.ts";
export { ring } from "./compiler/strategies/ring.ts";
export { zigzag } from "./compiler/strategies/zigzag.ts";
export { star } from "./compiler/strategies/star.ts";
export type { StarOptions } from "./compiler/strategies/star.ts";
export { ulysses } from "./compiler/strategies/ulysses.ts";
export { builtinStrategies, strategyByName } from "./compiler/strategies/mod.ts";
export type { BuiltinOptions } from "./compiler/strategies/mod.ts";
export { type Gpu, NoAdapterError, openGpu } from "./runtime/device.ts";
export type { DeviceInfo, OpenGpuOptions, SubgroupMatrixConfig } from "./runtime/device.ts";
export type {
  Executor,
  HostInputs,
  LogitsResult,
  RunOptions,
  RunResult,
  WeightSource,
} from "./runtime/executor.ts";
export { type Generation, InputError, Session, type SessionOptions } from "./runtime/session.ts";
export { openPlanSession, type PlanDir, readPlanDir } from "./runtime/load.ts";
export { criticalPath, NVLINK, PCIE } from "./runtime/timing.ts";
export type { Link, PhaseTiming, RunTiming } from "./runtime/timing.ts";
export {
  Checkpoint,
  CheckpointError,
  openCheckpoint,
  openRetainingHeads,
  RetainingHeads,
  TensorStore,
} from "./runtime/checkpoint.ts";
export type {
  CheckpointTensorInfo,
  NonFiniteReport,
  ReadOptions,
  RetainingHeadShapes,
  SafetensorsDtype,
} from "./runtime/checkpoint.ts";
export { checkpointWeights } from "./runtime/weights.ts";
export type { CheckpointWeightsOptions, CheckpointWeightSource } from "./runtime/weights.ts";
