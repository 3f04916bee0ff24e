// The command line: compile, run, plan, demo and bench. Errors a user can cause print one clear
// message (no stack trace); anything else is a bug and prints everything.

import { ModelError, PlanError } from "../errors.ts";
import { PlanFormatError } from "../plan.ts";
import { Int8UnavailableError } from "../int8.ts";
import { NoAdapterError } from "../../runtime/device.ts";
import { OutOfMemoryError } from "../../runtime/memory.ts";
import { InputError } from "../../runtime/session.ts";
import { CheckpointError } from "../../runtime/safetensors.ts";
import { KernelCompileError } from "../../runtime/pipelines.ts";
import { compileCommand } from "./compile.ts";
import { UsageError } from "./model_file.ts";
import { parse } from "./options.ts";
import { runCommand } from "./run.ts";

const HELP = `usage: deno task <command> ...
  compile <model.ts> [--out DIR]          write plan.json, kernels/*.wgsl and a typed mod.ts
  run <model.ts|DIR> [--check]            prefill + greedy decode on the default adapter
  run --weights CKPT [model.ts|DIR]       the same with a Hugging Face checkpoint's weights (model
                                          from its config.json unless a model file is given)
  plan <model.ts> --svg FILE              draw each host's attention blocks and collectives
  demo                                    the tiny model: dense and APB, checked
  bench kernels|prefill|quality           benchmarks (see docs/PERFORMANCE.md)
options:
  --strategy dense|ring|zigzag|star|ulysses|apb|FILE.ts   --hosts H   --tokens N   --query Q
  --generate K   --seed S   --anchor N   --passing N[,N...]   --scorer retaining|query|random
  --query-offset N   --no-query-in-anchor   --parity   --storage f32|f16   --kv f32|f16
  --device-per-host   --weights DIR   --retaining-heads PATH (APB)
  --prompt-file F (text through the checkpoint's tokenizer; the last --query tokens are the query)
  --backend deno|dawn   WebGPU of Deno (default) or Dawn's dawn.node (runtime/dawn.ts)
  --int8   int8 tensor-core kernels (needs --backend dawn in run and bench; the subgroup-matrix
           shape comes from the adapter). compile opens no GPU: it takes --int8-matrix MxNxK
           (default 16x16x32 on subgroups of 32, NVIDIA's), or the adapter's with --backend dawn
  --int8-attention int8|f32   attention on the int8 tensor cores (default: faster on the H100) or f32
  --no-int8-reference   bench prefill --int8: skip the extra f32 prefill its logit error needs`;

const EXPECTED = [
  UsageError,
  ModelError,
  PlanError,
  PlanFormatError,
  NoAdapterError,
  OutOfMemoryError,
  InputError,
  KernelCompileError,
  CheckpointError,
  Int8UnavailableError,
];

async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  const { values, positionals } = parse(rest);
  if (!command || values.help || command === "help") {
    console.log(HELP);
    return 0;
  }
  switch (command) {
    case "compile":
      return await compileCommand(positionals[0], values);
    case "run":
      return await runCommand(positionals[0], values);
    case "plan":
      return await (await import("./plan.ts")).planCommand(positionals[0], values);
    case "demo":
      return await (await import("./demo.ts")).demoCommand(values);
    case "bench":
      return await (await import("../../bench/mod.ts")).benchCommand(positionals, values);
  }
  throw new UsageError(`unknown command "${command}"\n${HELP}`);
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    if (EXPECTED.some((kind) => e instanceof kind)) {
      console.error(`error: ${(e as Error).message}`);
      Deno.exit(2);
    }
    throw e;
  }
}
