// The real checkpoint tests/fixtures/retrieval-llama-4l (4 layers, hidden 256, vocab 512, trained
// on multi-key associative recall): our dense logits on an eval sample's first 128 tokens against the
// independent float64 forward, and the retrieval itself on a sample cut to a few hundred tokens:
// the answers must be the needles' values, also after those values are changed in the context.

import { assert } from "../../compiler/_deps.ts";
import { maxRelativeError } from "../../compiler/cli/compare.ts";
import { llamaFromHuggingFace } from "../../compiler/models/llama.ts";
import { lower } from "../../compiler/lower.ts";
import { dense } from "../../compiler/strategies/dense.ts";
import { openCheckpoint } from "../../runtime/checkpoint.ts";
import { Session } from "../../runtime/session.ts";
import { checkpointWeights } from "../../runtime/weights.ts";
import { testGpu } from "../_gpu.ts";
import { llamaForward, readF32Safetensors } from "../reference/llama_f64.ts";

const FIXTURE = new URL("../fixtures/retrieval-llama-4l", import.meta.url).pathname;
const QUERY = 4;
/** A question is QUERY k1 k2 ARROW v1 v2 v3 END; the last four are the answers. */
const QUESTION = 8;

interface Sample {
  tokens: number[];
  needles: [position: number, key: [number, number], values: [number, number, number]][];
}

async function samples(): Promise<Sample[]> {
  const text = await Deno.readTextFile(`${FIXTURE}/eval_retrieval_4k.jsonl`);
  return text.trim().split("\n").map((line) => JSON.parse(line));
}

/** Logits and argmax of `tokens` by dense prefill of the fixture on `backend`. */
async function denseRun(tokens: number[], backend: "gpu" | "cpu") {
  const checkpoint = await openCheckpoint(FIXTURE);
  try {
    const model = llamaFromHuggingFace(checkpoint.config);
    const plan = lower(model, dense(), {
      contextTokens: tokens.length,
      prefillLogits: "all",
      maxNewTokens: 1,
    });
    const gpu = backend === "gpu" ? (await testGpu())! : undefined;
    const session = await Session.open(plan, {
      backend,
      gpu,
      weights: checkpointWeights(checkpoint),
    });
    try {
      return (await session.prefill(tokens, [], { readLogits: true })).logits[0];
    } finally {
      session.destroy();
    }
  } finally {
    checkpoint.close();
  }
}

Deno.test("retrieval-llama-4l: dense logits of 128 eval tokens match the f64 reference", async () => {
  const tokens = (await samples())[0].tokens.slice(0, 128);
  const config = JSON.parse(await Deno.readTextFile(`${FIXTURE}/config.json`));
  const tensors = await readF32Safetensors(`${FIXTURE}/model.safetensors`);
  const want = llamaForward(config, (name) => tensors.get(name)!, tokens);
  const cpu = maxRelativeError((await denseRun(tokens, "cpu")).logits!, want);
  assert.ok(cpu <= 1e-4, `CPU executor: max relative error ${cpu}`);
  if (!(await testGpu())) return;
  const gpu = maxRelativeError((await denseRun(tokens, "gpu")).logits!, want);
  assert.ok(gpu <= 1e-4, `GPU: max relative error ${gpu}`);
});

/**
 * `sample` cut right after its needle at `lastNeedle`, followed by the questions about the needles
 * that lie wholly before the cut; with the positions of their answer tokens.
 */
function cut(sample: Sample, lastNeedle: number) {
  const end = lastNeedle + 7;
  const start = sample.tokens.indexOf(QUERY);
  const questions: number[][] = [];
  for (let q = start; q < sample.tokens.length; q += QUESTION) {
    const question = sample.tokens.slice(q, q + QUESTION);
    const needle = sample.needles.find(([, key]) =>
      key[0] === question[1] && key[1] === question[2]
    );
    if (needle && needle[0] + 7 <= end) questions.push(question);
  }
  const tokens = [...sample.tokens.slice(0, end), ...questions.flat()];
  const answersAt = questions.flatMap((_, i) => [4, 5, 6, 7].map((j) => end + i * QUESTION + j));
  return { tokens, answersAt, questions: questions.length };
}

/** The sample with every needle's values changed, in the context and in the questions alike. */
function withOtherValues(sample: Sample): Sample {
  const tokens = [...sample.tokens];
  const other = (v: number) => ((v - 16 + 101) % 496) + 16;
  for (const [position] of sample.needles) {
    for (let j = 4; j < 7; j++) tokens[position + j] = other(tokens[position + j]);
  }
  for (let q = tokens.indexOf(QUERY); q < tokens.length; q += QUESTION) {
    for (let j = 4; j < 7; j++) tokens[q + j] = other(tokens[q + j]);
  }
  return { tokens, needles: sample.needles };
}

Deno.test("retrieval-llama-4l retrieves: answers of a 446-token cut of sample 7", async () => {
  // Sample 7 asks about four needles in its first 414 tokens (at 1, 330, 393, 407).
  const sample = (await samples())[7];
  for (const variant of [sample, withOtherValues(sample)]) {
    const { tokens, answersAt, questions } = cut(variant, 407);
    assert.equal(questions, 4);
    assert.equal(tokens.length, 446);
    // Without an adapter the float64 executor answers (slower, same check).
    const { argmax } = await denseRun(tokens, (await testGpu()) ? "gpu" : "cpu");
    const got = answersAt.map((p) => argmax[p - 1]);
    const want = answersAt.map((p) => tokens[p]);
    assert.deepEqual(got, want, "the argmax before each answer token is that token");
  }
});
