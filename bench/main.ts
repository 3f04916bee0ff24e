// Benchmarks without the compiler's command line: `deno run -A bench/main.ts prefill ...` is what
// `deno task bench prefill ...` does, minus ts-morph, so a GPU machine with no registry needs only
// the modules the benchmarks import. Every option passes through (--backend dawn, --int8,
// --int8-attention, --int8-reference, ...); errors a user can cause print one line and exit 2.

import { Int8UnavailableError } from "../compiler/int8.ts";
import { UsageError } from "../compiler/cli/model_file.ts";
import { parse } from "../compiler/cli/options.ts";
import { NoAdapterError } from "../runtime/device.ts";
import { OutOfMemoryError } from "../runtime/memory.ts";
import { benchCommand } from "./mod.ts";

const EXPECTED = [UsageError, NoAdapterError, Int8UnavailableError, OutOfMemoryError];

if (import.meta.main) {
  try {
    const { values, positionals } = parse(Deno.args);
    Deno.exit(await benchCommand(positionals, values));
  } catch (e) {
    if (EXPECTED.some((kind) => e instanceof kind)) {
      console.error(`error: ${(e as Error).message}`);
      Deno.exit(2);
    }
    throw e;
  }
}
