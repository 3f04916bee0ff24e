// Loads what a user points the command line at: a model file (default export made with the DSL)
// or a strategy file (default export a Strategy or a function returning one).

import { path, pathToFileURL } from "../_deps.ts";
import type { ModelDefinition } from "../dsl.ts";
import { Graph } from "../graph.ts";
import type { Strategy } from "../strategies/strategy.ts";

/** Raised for files the command line cannot use; the message says what to fix. */
export class UsageError extends Error {
  /** The error\'s name. */
  override name = "UsageError";
}

async function importFile(file: string, what: string): Promise<Record<string, unknown>> {
  const resolved = path.resolve(file);
  try {
    await Deno.stat(resolved);
  } catch {
    throw new UsageError(`${what} ${file} does not exist`);
  }
  return await import(pathToFileURL(resolved).href);
}

/** The model defined by `file`'s default export. */
export async function loadModelFile(file: string): Promise<ModelDefinition> {
  const mod = await importFile(file, "model file");
  const model = mod.default as ModelDefinition | undefined;
  if (!model || !(model.graph instanceof Graph) || typeof model.config !== "object") {
    throw new UsageError(
      `${file} must \`export default\` a model made with defineModel() or llama() from mod.ts`,
    );
  }
  return model;
}

/** The strategy `file` exports by default (an object, or a function called with `options`). */
export async function loadStrategyFile(file: string, options: unknown): Promise<Strategy> {
  const mod = await importFile(file, "strategy file");
  const value = mod.default;
  const strategy = typeof value === "function"
    ? (value as (o: unknown) => Strategy)(options)
    : value;
  if (!strategy || typeof (strategy as Strategy).plan !== "function") {
    throw new UsageError(
      `${file} must \`export default\` a Strategy (an object with plan()) or a function returning one`,
    );
  }
  return strategy as Strategy;
}
