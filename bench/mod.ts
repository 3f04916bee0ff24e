// `deno task bench <suite>`: the benchmark suites by name.

import { UsageError } from "../compiler/cli/model_file.ts";
import type { Options } from "../compiler/cli/options.ts";

type Suite = (values: Options) => Promise<number>;

const suites: Record<string, () => Promise<Suite>> = {
  prefill: () => import("./prefill.ts").then((m) => m.prefillSuite),
  quality: () => import("./quality.ts").then((m) => m.qualitySuite),
  kernels: () => import("./kernels.ts").then((m) => m.kernelsSuite),
};

/** Runs the suites named in `names`. */
export async function benchCommand(names: string[], values: Options): Promise<number> {
  if (!names.length) {
    throw new UsageError(
      `usage: deno task bench <suite>; suites: ${Object.keys(suites).join(", ") || "none yet"}`,
    );
  }
  let exit = 0;
  for (const name of names) {
    // --backend dawn: the kernels suite of the int8 tensor-core kernels (bench/kernels_dawn.ts).
    if (name === "kernels" && values.backend === "dawn") {
      const { kernelsDawnSuite } = await import("./kernels_dawn.ts");
      exit = Math.max(exit, await kernelsDawnSuite({ json: values.json, eval: values.eval }));
      continue;
    }
    const load = suites[name];
    if (!load) {
      throw new UsageError(
        `unknown benchmark "${name}"; suites: ${Object.keys(suites).join(", ")}`,
      );
    }
    exit = Math.max(exit, await (await load())(values));
  }
  return exit;
}
