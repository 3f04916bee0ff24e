// Built-in strategies by name, as the command line picks them.

import { PlanError } from "../errors.ts";
import { apb, type ApbOptions } from "./apb.ts";
import { dense } from "./dense.ts";
import { ring } from "./ring.ts";
import { star } from "./star.ts";
import type { Strategy } from "./strategy.ts";
import { ulysses } from "./ulysses.ts";
import { zigzag } from "./zigzag.ts";

/** Options a command line can pass to any built-in strategy (each reads what it knows). */
export type BuiltinOptions = ApbOptions;

/** Names of the built-in strategies. */
export const builtinStrategies = ["dense", "ring", "zigzag", "star", "ulysses", "apb"] as const;

/** A built-in strategy by name. */
export function strategyByName(name: string, options: BuiltinOptions = {}): Strategy {
  switch (name) {
    case "dense":
      return dense();
    case "ring":
      return ring();
    case "zigzag":
      return zigzag();
    case "star":
      return star(options.anchor === undefined ? {} : { anchor: options.anchor });
    case "ulysses":
      return ulysses();
    case "apb":
      return apb(options);
  }
  throw new PlanError(
    `unknown strategy "${name}"; built in: ${builtinStrategies.join(", ")}, ` +
      `or pass a file that exports a strategy`,
  );
}
