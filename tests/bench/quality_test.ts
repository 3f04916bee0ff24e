// `deno task bench quality`, reduced: an eval sample of the retrieval fixture cut to 420 context
// tokens (it keeps the four questions whose needles lie in that prefix), every strategy on 4 hosts
// (Ulysses on 2), on the test adapter or the float64 CPU executor. Exact strategies match dense,
// dense answers what the model really answers on the cut, and the table is well-formed. The data
// helpers (cutting, the query APB is told, scoring) are checked on their own first.

import { assert } from "../../compiler/_deps.ts";
import { UsageError } from "../../compiler/cli/model_file.ts";
import { INT8_NEEDS_DAWN, parse } from "../../compiler/cli/options.ts";
import { int8Without } from "../../compiler/int8.ts";
import { llamaFromHuggingFace } from "../../compiler/models/llama.ts";
import { openCheckpoint } from "../../runtime/checkpoint.ts";
import { checkpointWeights } from "../../runtime/weights.ts";
import {
  defaultLengths,
  EXACT_TOLERANCE,
  exactFailures,
  formatTable,
  qualitySuite,
  rowName,
  runQuality,
  ulyssesHosts,
  variantsFor,
} from "../../bench/quality.ts";
import {
  cutSample,
  type EvalSample,
  NEEDLE_TOKENS,
  readEval,
  scoreAnswers,
  taskOf,
  TOKENS,
} from "../../bench/quality_data.ts";
import { testGpu } from "../_gpu.ts";

const FIXTURE = new URL("../fixtures/retrieval-llama-4l", import.meta.url).pathname;
const EVAL = `${FIXTURE}/eval_retrieval_4k.jsonl`;

async function samples(): Promise<EvalSample[]> {
  return readEval(await Deno.readTextFile(EVAL), EVAL);
}

Deno.test("quality data: 24 samples of 4032 context and 64 question tokens, 768 answers", async () => {
  const all = await samples();
  assert.equal(all.length, 24);
  const tasks = all.map((s) => taskOf(s));
  assert.equal(tasks.reduce((a, t) => a + t.answerRows.length, 0), 768);
  for (const t of tasks) {
    assert.equal(t.context.length, 4032);
    assert.equal(t.questions.length, 64);
    // APB's query is every question without its answer: QUERY k1 k2 ARROW, eight times.
    assert.equal(t.query.length, 32);
    for (let q = 0; q < 32; q += 4) {
      assert.equal(t.query[q], TOKENS.query);
      assert.equal(t.query[q + 3], TOKENS.arrow);
    }
  }
  const t = tasks[0];
  assert.deepEqual(taskOf(all[0], "first").query, t.query.slice(0, 4));
  assert.deepEqual(taskOf(all[0], "all").query, t.questions);
});

Deno.test("quality data: a cut keeps the questions whose needles lie in the prefix", async () => {
  const all = await samples();
  // Sample 7 asks about four needles in its first 414 tokens (at 1, 330, 393, 407).
  const cut = cutSample(all[7], 420)!;
  const t = taskOf(cut);
  assert.equal(t.context.length, 420);
  assert.equal(t.questions.length, 4 * 8);
  assert.equal(cut.needles.length, 4);
  assert.ok(cut.needles.every(([p]) => p + NEEDLE_TOKENS <= 420));
  // Every kept answer is its needle's value (or END), read from the cut context itself.
  for (let q = 0; q < t.questions.length; q += 8) {
    const [k1, k2] = t.questions.slice(q + 1, q + 3);
    const needle = cut.needles.find(([, key]) => key[0] === k1 && key[1] === k2)!;
    const [p] = needle;
    assert.deepEqual(t.context.slice(p, p + 4), [TOKENS.needle, k1, k2, TOKENS.arrow]);
    assert.deepEqual(t.questions.slice(q + 4, q + 8), [
      ...t.context.slice(p + 4, p + 7),
      TOKENS.end,
    ]);
    assert.deepEqual(
      t.answerRows.filter((r) => r >= q && r < q + 8),
      [4, 5, 6, 7].map((j) => q + j),
    );
  }
  assert.equal(cutSample(all[7], 5000), all[7], "a cut beyond the context is the sample");
  assert.equal(cutSample(all[7], 1), null, "no needle, no question, no sample");
});

Deno.test("quality data: an answer counts when the row before predicts it", () => {
  const vocab = 8;
  const task = { context: [1], questions: [4, 6, 7, 5], answerRows: [2, 3], query: [] };
  const logits = new Float32Array(4 * vocab);
  logits[1 * vocab + 7] = 1; // row 1 predicts 7: right for row 2
  logits[2 * vocab + 4] = 1; // row 2 predicts 4: wrong for row 3 (END = 5)
  assert.equal(scoreAnswers(task, logits, vocab), 1);
});

Deno.test("quality variants: lengths, Ulysses hosts, Table 3 rows", () => {
  assert.deepEqual(defaultLengths(1008), { anchor: 256, passing: 128 }); // 4032 tokens, H = 4
  assert.deepEqual(defaultLengths(504), { anchor: 128, passing: 64 }); // H = 8
  assert.equal(ulyssesHosts(8, 8, 2), 2);
  assert.equal(ulyssesHosts(4, 32, 8), 4);
  assert.equal(ulyssesHosts(3, 8, 2), 2);
  const rows = variantsFor([4, 8], { heads: 8, kvHeads: 2 });
  // dense, Ulysses once (on 2 hosts), and per host count ring, zigzag, star and 9 APB rows.
  assert.equal(rows.length, 2 + 2 * 12);
  const table3 = rows.filter((r) => r.hosts === 4 && r.apb).map((r) => r.apb!.table3);
  assert.deepEqual(table3, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  const withHeads = variantsFor([4], { heads: 8, kvHeads: 2 }, true);
  assert.deepEqual(
    withHeads.filter((r) => r.apb?.scorer === "retaining").map((r) => r.apb!.table3),
    [0, 1, 6],
  );
});

Deno.test("bench quality without --weights says how to call it", async () => {
  const { values } = parse(["quality"]);
  await assert.rejects(() => qualitySuite(values), UsageError);
});

Deno.test("bench quality, reduced: exact strategies match dense, dense answers, table", async () => {
  const all = await samples();
  // Sample 7 cut to 420 tokens keeps four questions: 16 answers.
  const cut = [cutSample(all[7], 420)!];
  const checkpoint = await openCheckpoint(FIXTURE);
  try {
    const model = llamaFromHuggingFace(checkpoint.config);
    const gpu = await testGpu();
    const report = await runQuality({
      model,
      weights: checkpointWeights(checkpoint),
      samples: cut,
      variants: variantsFor([4], model.config),
      ...(gpu ? { gpu } : { backend: "cpu" as const }),
    });
    assert.equal(report.samples, 1);
    assert.equal(report.contextTokens, 420);
    assert.equal(report.queryTokens, 16);
    for (const r of report.rows) assert.equal(r.total, 16, rowName(r));
    assert.deepEqual(exactFailures(report), [], `exact within ${EXACT_TOLERANCE}`);
    const exact = report.rows.filter((r) => r.exact && r.strategy !== "dense");
    assert.deepEqual(exact.map((r) => `${r.strategy}/${r.hosts}`), [
      "ring/4",
      "zigzag/4",
      "ulysses/2",
    ]);
    // What the model really answers on this cut: every answer.
    const dense = report.rows[0];
    assert.equal(dense.strategy, "dense");
    assert.equal(dense.correct, 16);
    for (const r of exact) assert.equal(r.correct, dense.correct, rowName(r));
    // Approximate strategies really differ from dense (so the error column measures something).
    const star = report.rows.find((r) => r.strategy === "star")!;
    assert.ok(star.maxError > EXACT_TOLERANCE);
    assert.equal(star.anchor, 105);
    const apbRows = report.rows.filter((r) => r.apb);
    assert.equal(apbRows.length, 9);
    // Block 105: l_a = 105/4 rounded to a power of two, l_p = l_a/2.
    assert.ok(apbRows.every((r) => r.anchor === (r.apb!.anchor ? 32 : 0)));
    assert.ok(apbRows.every((r) => r.passingLength === (r.apb!.passing ? 16 : 0)));

    const lines = formatTable(report).split("\n");
    assert.equal(lines.length, 2 + report.rows.length);
    const cells = (line: string) => line.split("|").slice(1, -1).map((c) => c.trim());
    const width = cells(lines[0]).length;
    assert.equal(width, 12);
    for (const line of lines) assert.equal(cells(line).length, width, line);
    assert.match(lines[2], /^\| dense \| 1 \|.*\| 100\.0% \| 16\/16 \| \(reference\) \| – \|/);
    assert.match(lines[3], /^\| ring \| 4 \|.* \(exact\) \|/);
    const row0 = lines.find((l) => l.startsWith("| apb A+P(query)+Q |"))!;
    assert.match(row0, /^\| apb A\+P\(query\)\+Q \| 4 \| 32 \| 16 \| query \| yes \| 0 \|/);
  } finally {
    checkpoint.close();
  }
});

Deno.test("bench quality --int8 on the CPU executor: int8 rows report accuracy and the choice", async () => {
  const all = await samples();
  const cut = [cutSample(all[7], 420)!];
  const checkpoint = await openCheckpoint(FIXTURE);
  try {
    const model = llamaFromHuggingFace(checkpoint.config);
    const variants = variantsFor([4], model.config)
      .filter((v) => v.strategy === "dense" || v.apb?.table3 === 0);
    const int8 = int8Without();
    const report = await runQuality({
      model,
      weights: checkpointWeights(checkpoint),
      samples: cut,
      variants,
      backend: "cpu",
      int8,
    });
    assert.deepEqual(report.int8, int8);
    assert.equal(report.backend, "cpu");
    assert.deepEqual(report.rows.map(rowName), ["dense", "apb A+P(query)+Q"]);
    for (const r of report.rows) {
      assert.equal(r.total, 16, rowName(r));
      assert.ok(r.accuracy >= 0 && r.accuracy <= 1);
    }
  } finally {
    checkpoint.close();
  }
});

Deno.test("bench quality: --int8 on Deno's WebGPU is refused, --backend is checked", async () => {
  const call = (args: string[]) =>
    qualitySuite(parse(["quality", "--weights", FIXTURE, ...args]).values);
  await assert.rejects(() => call(["--int8"]), (e: Error) => e.message === INT8_NEEDS_DAWN);
  await assert.rejects(() => call(["--backend", "metal"]), UsageError);
});
