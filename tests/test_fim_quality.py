"""The HumanEval infilling benchmark: task construction, the sandbox, a tiny run.

Also the golden cases of the completion rules the benchmark showed to hurt (token healing).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ is a folder of scripts

from benchmarks import fim_quality as fq  # noqa: E402
from benchmarks.sandbox import Limits, run_python  # noqa: E402
from lsp_server.completion.prompt import build_prompt, heal_answer  # noqa: E402
from lsp_server.config import Settings  # noqa: E402

QUICK = Limits(timeout_s=4.0, cpu_s=3)


@pytest.fixture(scope="module")
def problems() -> list[fq.Problem]:
    return fq.load_problems()


# ------------------------------------------------------------------------------------------- tasks


def test_single_line_set_is_bavarian_and_rebuilds_each_file(problems) -> None:
    tasks = fq.single_line_tasks(problems)
    assert len(problems) == 164
    assert len(tasks) == 1033  # the single-line set of Bavarian et al. 2022
    assert len({t.task_id for t in tasks}) == len(tasks)
    assert [t.task_id for t in fq.single_line_tasks(fq.load_problems())] == [t.task_id for t in tasks]
    for task in tasks:
        assert task.prefix + task.hole + task.suffix == task.problem.prompt + task.problem.solution
        assert task.hole.strip() and "\n" not in task.hole
        assert task.prefix.endswith("\n")  # the cursor is at the start of an empty line
        assert task.problem.test not in task.suffix
    first = [t.task_id for t in tasks if t.problem.task_id == "HumanEval/0"]
    assert first == sorted(first, key=lambda i: int(i.rsplit("/L", 1)[1]))  # file order: shared prefixes


def test_multi_line_blocks_are_all_spans_and_the_sample_follows_the_seed(problems) -> None:
    assert sum(len(fq.multi_line_blocks(p)) for p in problems) == 5815  # Bavarian's multi-line set
    a = fq.multi_line_tasks(problems, seed=0, per_problem=1)
    assert len(a) == 164
    assert [t.task_id for t in a] == [t.task_id for t in fq.multi_line_tasks(problems, seed=0, per_problem=1)]
    assert [t.task_id for t in a] != [t.task_id for t in fq.multi_line_tasks(problems, seed=1, per_problem=1)]
    for task in a:
        assert task.prefix + task.hole + task.suffix == task.problem.prompt + task.problem.solution
        assert task.hole.split("\n")[0].strip() and task.hole.split("\n")[-1].strip()


def test_limit_is_reproducible_and_keeps_file_order(problems) -> None:
    tasks = fq.single_line_tasks(problems)
    picked = fq.limit_tasks(tasks, 20, seed=3)
    assert [t.task_id for t in picked] == [t.task_id for t in fq.limit_tasks(tasks, 20, seed=3)]
    assert [t.task_id for t in picked] != [t.task_id for t in fq.limit_tasks(tasks, 20, seed=4)]
    order = {t.task_id: i for i, t in enumerate(tasks)}
    assert [order[t.task_id] for t in picked] == sorted(order[t.task_id] for t in picked)


MODULE = '''"""A module."""
import os


def walk(top, skip=()):
    """Docstrings are not holes."""
    found = []  # nor lines with a comment
    for name in os.listdir(top):
        if name in skip:
            continue
        found.append(name)
    x = 1; y = 2
    return sorted(found,
                  key=len)


class Box:
    size = 3

    def grow(self):
        self.size += 1
'''


def test_code_set_masks_one_line_statements_inside_functions(tmp_path: Path) -> None:
    (tmp_path / "walk.py").write_text(MODULE)
    (tmp_path / "broken.py").write_text("def f(:\n")  # not Python: skipped, not an error
    tasks = fq.code_line_tasks(tmp_path)
    assert [t.hole for t in tasks] == ["    for name in os.listdir(top):", "        if name in skip:",
                                       "            continue", "        found.append(name)", "        self.size += 1"]
    assert all(t.prefix + t.hole + t.suffix == MODULE and t.problem is None and t.set == "code" for t in tasks)
    assert tasks[0].task_id == "stdlib/walk.py/L8" and tasks[0].uri == "file:///stdlib/walk.py"
    judge = fq.Judge(QUICK)
    assert judge(tasks[1], "        if name in skip:  ") == (True, "exact")  # exact match, nothing run
    assert judge(tasks[1], "        if name not in skip:") == (False, "differs")


def test_exact_match_ignores_trailing_whitespace_only() -> None:
    assert fq.exact_match("    return x  \n", "    return x")
    assert not fq.exact_match("return x", "    return x")
    assert not fq.exact_match("    return x\n    pass", "    return x")


def test_canonical_fill_passes_and_wrong_fills_fail(problems) -> None:
    task = fq.single_line_tasks(problems[:1])[-1]
    judge = fq.Judge(QUICK)
    assert judge(task, task.hole) == (True, "pass")
    ok, reason = judge(task, "    return True")
    assert not ok and "Assertion" in reason
    assert not judge(task, "")[0]


# ----------------------------------------------------------------------------------------- sandbox


@pytest.mark.parametrize("program, reason", [
    ("while True:\n    pass\n", "timeout|cpu limit"),  # whichever comes first on a busy machine
    ("while True:\n    print('x' * 100000)\n", "File too large"),
    ("import os\nos.fork()\n", "os.fork is not allowed"),
    ("import subprocess\nsubprocess.run(['true'])\n", "subprocess.Popen is not allowed"),
    ("import socket\nsocket.create_connection(('127.0.0.1', 9))\n", "socket"),
    ("x = bytearray(8 << 30)\n", "MemoryError"),
])
def test_sandbox_stops_bad_programs_and_counts_them_as_failures(program: str, reason: str) -> None:
    outcome = run_python(program, QUICK)
    assert not outcome.passed
    assert any(r in outcome.reason for r in reason.split("|")), outcome.reason


def test_sandbox_keeps_writes_inside_its_directory(tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    outcome = run_python(f"open({str(target)!r}, 'w').write('x')\n", QUICK)
    assert not outcome.passed and "outside the sandbox" in outcome.reason
    assert not target.exists()
    inside = run_python("open('here.txt', 'w').write('x')\nassert open('here.txt').read() == 'x'\n", QUICK)
    assert inside.passed


def test_benchmark_keeps_going_after_a_runaway_fill(problems) -> None:
    task = fq.single_line_tasks(problems[:1])[-1]
    judge = fq.Judge(Limits(timeout_s=2.0, cpu_s=1))
    results = [judge(task, fill) for fill in ("    while True: pass", "    print('y' * 10**7)", task.hole)]
    assert [ok for ok, _ in results] == [False, False, True]


def test_summary_counts_what_is_shown_and_how_often_it_is_right() -> None:
    """An empty answer fails pass@1 but shows nothing: "pass if shown" is what a user's attention buys."""
    def answer(fill: str, passed: bool) -> fq.Answer:
        return fq.Answer(fill, passed, False, 10.0, "", "")
    records = [fq.Record("a", "single", "h", answer("x", True), answer("x", True)),
               fq.Record("b", "single", "h", answer("y", False), answer("", False)),
               fq.Record("c", "single", "h", answer("z", False), answer("  \n", False)),
               fq.Record("d", "single", "h", answer("w", False), answer("w", False))]
    single = fq.summarize(records)["single"]
    assert (single["raw_pass1"], single["raw_shown"], single["raw_pass_when_shown"]) == (0.25, 1.0, 0.25)
    assert (single["pipeline_pass1"], single["pipeline_shown"], single["pipeline_pass_when_shown"]) == (0.25, 0.5, 0.5)
    assert "pass if shown" in fq.table(fq.summarize(records)).splitlines()[0]


def test_a_run_without_raw_answers_reports_the_pipeline_only() -> None:
    """`--no-raw` leaves the raw answers unasked: the table and the JSON line must not show them as 0 %."""
    def answer(passed: bool, reason: str = "") -> fq.Answer:
        return fq.Answer("x" if reason != fq.NOT_RUN else "", passed, False, 10.0, reason, "")
    records = [fq.Record("a", "single", "h", answer(False, fq.NOT_RUN), answer(True)),
               fq.Record("b", "single", "h", answer(False, fq.NOT_RUN), answer(False))]
    summary = fq.summarize(records)
    rows = fq.table({"single": summary["single"]}).splitlines()[1:]
    assert [r.split()[:2] for r in rows] == [["single", "pipeline"]]
    args = fq.argparse.Namespace(limit=None, multi_limit=None, seed=0, multi_per_problem=1, settings={}, typed=None,
                                 anchored=False, auto_close=False)
    engine = fq.argparse.Namespace(info=fq.argparse.Namespace(name="m", family="f", device="cpu"), supports_fim=True)
    line = fq.result_line(engine, {"single": summary["single"]}, args, 1.0)
    assert line["single_line_pass1_pipeline"] == 0.5 and not any(k.endswith("_raw") for k in line)


# -------------------------------------------------------------------- token healing (found by the benchmark)


@pytest.mark.parametrize("text, lead, healed", [
    ("\n        return s", "\n", "        return s"),  # the model brings back the line break
    ("\n        return s", "\n        ", "return s"),
    (" # done\n        return s", "\n", "        return s"),  # text for the line before the cursor goes
    (" # done", "\n", ""),
    ("    x", "    ", "x"),
    ("x", "", "x"),
])
def test_heal_golden(text: str, lead: str, healed: str) -> None:
    assert heal_answer(text, lead) == healed


def test_prompt_at_a_line_start_ends_before_the_line_break(llama_engine) -> None:
    """A model without FIM training: its vocabulary spells "\\n" + indentation as one token, so a prompt
    ending in "\\n" would split it; the line break and indentation move into the expected answer."""
    from dataclasses import replace

    from inference import Engine, family_by_name

    engine = Engine(replace(llama_engine.prepared, family=family_by_name("plain")))
    head = "def f(xs):\n    total = 0\n"
    for line_prefix in ("", "    "):
        text = head + line_prefix + "\n    return total\n"
        prompt = build_prompt(engine, Settings(), "file:///t.py", "python", text, len(head + line_prefix))
        assert prompt is not None
        assert prompt.lead == "\n" + line_prefix and prompt.prompt == head.rstrip("\n")


# -------------------------------------------------------------------------------- real model, end to end


@pytest.mark.slow
def test_tiny_run_prints_table_and_json(capsys, tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    assert fq.main(["--limit", "1", "--sets", "single,multi", "--raw-tokens", "8", "--records", str(records)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert result["model"] == "qwen2.5-coder-0.5b"
    assert result["single_line_tasks"] == 1 and result["multi_line_tasks"] == 1
    for key in ("single_line_pass1_raw", "single_line_pass1_pipeline", "multi_line_pass1_raw",
                "multi_line_pass1_pipeline"):
        assert 0.0 <= result[key] <= 1.0
    assert any(line.startswith("single   pipeline") for line in out)
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    assert [r["set"] for r in rows] == ["single", "multi"]
    assert all(r["raw"]["finish"] in ("length", "eos") for r in rows)  # raw is cut only by the model or budget


@pytest.mark.slow
def test_oracle_keeps_perfect_single_line_answers_exact(default_engine, problems) -> None:
    """A model that writes the true rest of the file gets exactly the hole back from the pipeline."""
    tasks = fq.single_line_tasks(problems[:3])
    found = fq.run_oracle(default_engine, tasks, Settings(), fq.Judge(QUICK))
    assert found["single"]["tasks"] == len(tasks)
    assert found["single"]["misses"] == []
    assert found["single"]["exact"] == len(tasks)


def test_tasks_are_picked_by_id_or_problem_in_file_order(problems) -> None:
    tasks = fq.single_line_tasks(problems)
    picked = fq.select_tasks(tasks, ["HumanEval/3/single/L5", "HumanEval/1"])
    ids = [t.task_id for t in picked]
    assert ids[-1] == "HumanEval/3/single/L5" and ids[0].startswith("HumanEval/1/single/")
    assert len(ids) == 1 + sum(t.problem.task_id == "HumanEval/1" for t in tasks)
    assert not any(i.startswith("HumanEval/10/") for i in ids)  # a problem is not a prefix of another's id
    with pytest.raises(ValueError, match="HumanEval/3/single/L99"):
        fq.select_tasks(tasks, ["HumanEval/3/single/L99"])


def test_first_line_summary_judges_the_raw_first_line_against_the_pipeline(problems) -> None:
    """The raw answer cut at its first line break is judged like any fill and crossed with the pipeline."""
    task = fq.single_line_tasks(problems[:1])[-1]  # HumanEval/0's last line: `    return False`
    def answer(fill: str, passed: bool) -> fq.Answer:
        return fq.Answer(fill, passed, False, 1.0, "", "")
    right_then_junk = task.hole + "\n\n# Example usage\nprint(has_close_elements([1.0], 0.5)"
    records = [fq.Record(task.task_id, "single", task.hole, answer(right_then_junk, False), answer("", False)),
               fq.Record(task.task_id, "single", task.hole, answer("    return True", False), answer(task.hole, True))]
    found = fq.first_line_summary(records, {task.task_id: task}, fq.Judge(QUICK))["single"]
    assert (found["tasks"], found["first_pass"], found["pipeline_pass"]) == (2, 1, 1)
    assert found["first_pass_nothing"] == 1 and found["first_fail_pass"] == 1
    assert "raw first line 1/2 = 50.0%, pipeline 1/2 = 50.0%, +0.0 points" in fq.first_line_table({"single": found})


def test_compare_names_the_tasks_two_runs_disagree_on(tmp_path: Path) -> None:
    def record(task_id: str, passed: bool) -> str:
        answer = {"fill": "x", "passed": passed, "exact": False, "latency_ms": 1.0, "reason": "", "finish": ""}
        return json.dumps({"task_id": task_id, "set": "single", "hole": "h", "raw": answer, "pipeline": answer})
    before, after = tmp_path / "before.jsonl", tmp_path / "after.jsonl"
    before.write_text("\n".join([record("a", True), record("b", False), record("c", True), record("only", True)]))
    after.write_text("\n".join([record("a", True), record("b", True), record("c", False)]))
    assert fq.main(["--compare", str(before), str(after)]) == 0
    out = fq.compare(fq.read_records(before, None), fq.read_records(after, None))
    assert out.splitlines() == ["3 tasks in both: pipeline 2 -> 2 pass (66.7% -> 66.7%); 1 gained, 1 lost",
                                "gained: b", "lost: c"]


@pytest.mark.parametrize("how", ["word", "half"])
def test_typed_tasks_put_the_cursor_mid_line(problems, how: str) -> None:
    """The typed part is the start of the hole's first line, past its indentation and short of its end;
    the judged hole is the rest, so the canonical rest still passes."""
    tasks = fq.single_line_tasks(problems[:2])
    typed = fq.typed_tasks(tasks, how)
    assert 0 < len(typed) <= len(tasks)
    whole = {t.task_id: t for t in tasks}
    for task in typed:
        original = whole[task.task_id.removesuffix(f"/typed-{how}")]
        assert task.typed_from == original.start < task.start < original.start + len(original.hole.rstrip())
        assert task.source[task.typed_from:task.start].strip()
        assert task.prefix + task.hole == original.prefix + original.hole
    assert fq.Judge(QUICK)(typed[0], typed[0].hole) == (True, "pass")
    one_word = fq.Task("one", "code", None, "def f():\n    pass\n", 9, 17)
    assert one_word.hole == "    pass" and fq.typed_tasks([one_word], "word") == []  # nothing left to type


def test_auto_closed_tasks_end_where_the_editors_closers_begin(problems) -> None:
    """`--auto-close`: the closers of the typed openers wait after the cursor, the judged hole ends before them,
    and the canonical rest still passes; a line that does not end with them is not a task."""
    tasks = fq.single_line_tasks(problems[:8])
    closed = fq.typed_tasks(tasks, "opener", auto_close=True)
    assert 0 < len(closed) < len(fq.typed_tasks(tasks, "opener"))
    whole = {t.task_id: t for t in tasks}
    for task in closed:
        original = whole[task.task_id.removesuffix("/typed-opener-closed")]
        assert task.closers and task.suffix.startswith(task.closers)
        assert task.prefix + task.hole + task.suffix == original.source
        assert task.source[task.typed_from:task.start][-1] in "([{\"'`" and task.hole.strip()
        assert fq.Judge(QUICK)(task, task.hole) == (True, "pass")
    assert fq.typed_tasks([fq.Task("t", "code", None, "x = f(a)(b)\n", 0, 11)], "opener", auto_close=True) == []


def test_an_anchored_prompt_extends_the_one_warmed_at_the_hole(qwen_engine, problems) -> None:
    """`--anchored` answers from the prompt laid out at the hole's start, with the typed text as the start
    of its middle, while post-processing reads the context at the cursor."""
    task = fq.typed_tasks(fq.single_line_tasks(problems[:1]), "half")[0]
    here = build_prompt(qwen_engine, Settings(), task.uri, "python", task.prefix + task.suffix, task.start)
    assert here is not None
    prompt = fq.anchored_prompt(qwen_engine, Settings(), task, here)
    assert prompt is not None and prompt.ctx is here.ctx
    typed = task.source[task.typed_from:task.start]
    assert prompt.prompt.middle.endswith(typed.rstrip(" "))
    anchored, fresh = prompt.prompt, here.prompt
    assert isinstance(anchored, fq.FimParts) and isinstance(fresh, fq.FimParts)
    assert anchored.prefix + anchored.middle + prompt.lead == fresh.prefix + here.lead  # the same text before
    assert len(anchored.prefix) < len(fresh.prefix) and anchored.suffix == fresh.suffix
