// Errors a user can cause, each one line that names where, what and the rule broken.

/** A model definition or config that breaks a rule: names the layer, the field and the rule. */
export class ModelError extends Error {
  /** The error\'s name. */
  override name = "ModelError";
  /** An error at `where` (a layer or scope) about `field`, breaking `rule`. */
  constructor(readonly where: string, readonly field: string, readonly rule: string) {
    super(`${where}: ${field}: ${rule}`);
  }
}

/** A strategy or shape the plan cannot be built for (bad host count, anchor, passing length…). */
export class PlanError extends Error {
  /** The error\'s name. */
  override name = "PlanError";
}
