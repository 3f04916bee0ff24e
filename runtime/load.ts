// Reading a compiled plan directory: plan.json (validated) and the WGSL it names.

import { type Plan, PlanFormatError, validatePlan } from "../compiler/plan.ts";
import { Session, type SessionOptions } from "./session.ts";

/** A plan read from disk with its kernels' WGSL by id. */
export interface PlanDir {
  /** The validated plan. */
  plan: Plan;
  /** WGSL by kernel id, as written by the compiler (and perhaps edited since). */
  kernelCode: Record<string, string>;
}

/** Reads `dir/plan.json` and `dir/kernels/*.wgsl`. */
export async function readPlanDir(dir: string | URL): Promise<PlanDir> {
  const base = typeof dir === "string" ? dir.replace(/\/?$/, "/") : dir;
  const at = (name: string) =>
    typeof base === "string" ? `${base}${name}` : new URL(name, base.href.replace(/\/?$/, "/"));
  let text: string;
  try {
    text = await Deno.readTextFile(at("plan.json"));
  } catch (e) {
    throw new PlanFormatError(
      `cannot read ${at("plan.json")}: ${(e as Error).message}; ` +
        "compile a model first: deno task compile <model.ts> --out DIR",
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new PlanFormatError(`${at("plan.json")} is not valid JSON: ${(e as Error).message}`);
  }
  const plan = validatePlan(json, String(at("plan.json")));
  const kernelCode: Record<string, string> = {};
  for (const [id, k] of Object.entries(plan.kernels)) {
    try {
      kernelCode[id] = await Deno.readTextFile(at(k.file));
    } catch {
      throw new PlanFormatError(`the plan names ${k.file}, which is missing; recompile the model`);
    }
  }
  return { plan, kernelCode };
}

/** Opens a session on a compiled plan directory (what generated bindings call). */
export async function openPlanSession(
  dir: string | URL,
  options: SessionOptions = {},
): Promise<Session> {
  const { plan, kernelCode } = await readPlanDir(dir);
  return await Session.open(plan, { kernelCode, ...options });
}
