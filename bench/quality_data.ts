// The retrieval eval file of tests/fixtures/retrieval-llama-4l: its samples, how each splits into a
// context and a question part, how a sample is cut shorter for quick runs, the query APB embeds in
// its anchors, and the scoring rule (argmax at i − 1 equals the token at i).

/** Token ids of the task (README of the fixture). */
export const TOKENS = { pad: 0, bos: 1, needle: 2, arrow: 3, query: 4, end: 5 } as const;

/** A needle: `NEEDLE k1 k2 ARROW v1 v2 v3` at `position`. */
export type Needle = [position: number, key: [number, number], values: [number, number, number]];

/** Tokens a needle occupies. */
export const NEEDLE_TOKENS = 7;

/** One line of the eval file. */
export interface EvalSample {
  /** Tokens: BOS, content with needles, then the questions with their answers. */
  tokens: number[];
  /** Positions of the answer tokens (three values and END of every question). */
  answersAt: number[];
  /** The needles the questions ask about. */
  needles: Needle[];
}

/** Reads the eval file's JSON lines, checking the fields the benchmark relies on. */
export function readEval(text: string, file = "eval file"): EvalSample[] {
  return text.split("\n").filter((line) => line.trim()).map((line, i) => {
    const raw = JSON.parse(line) as Record<string, unknown>;
    const tokens = raw.tokens as number[];
    const answersAt = raw.answers_at as number[];
    const needles = raw.needles as Needle[];
    if (!Array.isArray(tokens) || !Array.isArray(answersAt) || !Array.isArray(needles)) {
      throw new Error(`${file} line ${i + 1}: needs "tokens", "answers_at" and "needles"`);
    }
    const sample = { tokens, answersAt, needles };
    // Every answer must lie in the question part, where the extend calls produce logits.
    const start = questionStart(sample, `${file} line ${i + 1}`);
    if (answersAt.some((p) => p <= start || p >= tokens.length)) {
      throw new Error(`${file} line ${i + 1}: an answer lies outside the question part`);
    }
    return sample;
  });
}

/** Position of the first QUERY token: the context is everything before it. */
export function questionStart(sample: EvalSample, where = "sample"): number {
  const start = sample.tokens.indexOf(TOKENS.query);
  if (start <= 0) throw new Error(`${where}: no QUERY token after a context`);
  return start;
}

/** A sample as the benchmark runs it. */
export interface Task {
  /** Tokens prefilled with the strategy under test. */
  context: number[];
  /** The question part (all questions with their answers), teacher forced by extend calls. */
  questions: number[];
  /** Rows of `questions` whose token is an answer; the prediction is the row before. */
  answerRows: number[];
  /** The query APB embeds in its anchors and the query-aware scorer reads. */
  query: number[];
}

/**
 * What APB is told the question is:
 * - "questions" (default): every question without its answer, `QUERY k1 k2 ARROW` eight times.
 *   The prefill happens before any answer exists, so the answers must not be in it: tokens in
 *   the anchor are attended by every block row of hosts ≥ 1, and the query-aware scorer ranks
 *   rows by the query's q, so embedded answers would leak into the cache that later predicts them.
 *   All eight keys are asked, so all eight belong in the query.
 * - "first": the first question without its answer (one key of eight).
 * - "all": the whole question part, answers included: leaks; for measuring that leak only.
 */
export type QueryForm = "questions" | "first" | "all";

/** Splits a sample into context, question part, answer rows and APB's query. */
export function taskOf(sample: EvalSample, form: QueryForm = "questions"): Task {
  const start = questionStart(sample);
  const questions = sample.tokens.slice(start);
  const answers = new Set(sample.answersAt.map((p) => p - start));
  const answerRows = [...answers].sort((a, b) => a - b);
  const asked = questions.filter((_, i) => !answers.has(i));
  let query: number[];
  if (form === "all") query = questions;
  else if (form === "first") {
    const next = asked.indexOf(TOKENS.query, 1);
    query = next < 0 ? asked : asked.slice(0, next);
  } else query = asked;
  return { context: sample.tokens.slice(0, start), questions, answerRows, query };
}

/**
 * `sample` with its context cut to the first `contextTokens` tokens, followed by the questions
 * whose needle lies wholly in that prefix (in their original order, answers included): a shorter
 * sample of the same task for quick runs. Returns null when no question survives.
 */
export function cutSample(sample: EvalSample, contextTokens: number): EvalSample | null {
  const start = questionStart(sample);
  if (contextTokens >= start) return sample;
  const kept = sample.needles.filter(([p]) => p + NEEDLE_TOKENS <= contextTokens);
  const tokens = sample.tokens.slice(0, contextTokens);
  const answersAt: number[] = [];
  // Each question runs from one QUERY token to the next; its first three tokens after QUERY
  // name the needle's key.
  const starts = sample.tokens.flatMap((t, i) => (i >= start && t === TOKENS.query ? [i] : []));
  starts.forEach((q, i) => {
    const end = starts[i + 1] ?? sample.tokens.length;
    const [k1, k2] = sample.tokens.slice(q + 1, q + 3);
    if (!kept.some(([, key]) => key[0] === k1 && key[1] === k2)) return;
    const shift = tokens.length - q;
    for (const p of sample.answersAt) if (p >= q && p < end) answersAt.push(p + shift);
    tokens.push(...sample.tokens.slice(q, end));
  });
  if (!answersAt.length) return null;
  return { tokens, answersAt, needles: kept };
}

/**
 * Correct answers of one run: the answer at question row r is right when the argmax of the
 * logits of row r − 1 is that token. `logits` is [question rows, vocab].
 */
export function scoreAnswers(task: Task, logits: ArrayLike<number>, vocab: number): number {
  let correct = 0;
  for (const r of task.answerRows) {
    const row = r - 1;
    let best = 0;
    for (let j = 1; j < vocab; j++) {
      if (logits[row * vocab + j] > logits[row * vocab + best]) best = j;
    }
    if (best === task.questions[r]) correct++;
  }
  return correct;
}
