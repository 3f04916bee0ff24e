// Benchmarks without the compiler's command line: `deno run -A bench/main.ts prefill ...` is what
// `deno task bench prefill ...` does, minus ts-morph, so a GPU machine with no registry needs only
// the modules the benchmarks import.

import { parse } from "../compiler/cli/options.ts";
import { benchCommand } from "./mod.ts";

if (import.meta.main) {
  const { values, positionals } = parse(Deno.args);
  Deno.exit(await benchCommand(positionals, values));
}
