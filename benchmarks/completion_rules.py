"""Completion context and post-processing on real code nobody here wrote, against an oracle model.

The "model" is the file itself: a block body (or the rest of a line) is deleted, the cursor put where
it was, and the rules get the true text as the suggestion — the deleted text *followed by the rest of
the file*, as a model that does not know where to stop would write it. A rule set that stops in the
right place gives back exactly the deleted text. Cases:

- block: cursor at the end of a line that opens a block (`def f(...):`, `... {`), the body deleted.
- line: cursor after a `(`, `,`, `=`, `.` or space in a line, the rest of that line deleted.
- def: a whole top-level definition deleted, the cursor on the empty line left behind.

Counts per language: exact (the deleted text), short (a prefix of it), long (it, plus more), none
(discarded) and other; plus build_context / postprocess latency (deterministic len/3 token counter, so
this measures our code, not a tokenizer). Default corpus: the running interpreter's standard library;
add others with `--glob LANGUAGE=PATTERN` (e.g. `--glob "javascript=node_modules/**/*.js"`).

    python benchmarks/completion_rules.py [--files 60] [--glob LANG=GLOB ...] [--show 3]

Prints a human table, then one JSON line with `cases`, `exact_rate`, `discard_rate`, `context_p50_ms`,
`context_p95_ms`, `postprocess_p50_ms`, `postprocess_p95_ms`.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import random
import statistics
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lsp_server import languages  # noqa: E402
from lsp_server.completion.context import build_context  # noqa: E402
from lsp_server.completion.postprocess import postprocess  # noqa: E402

BLOCK_TYPES = {"python": "block", "c": "compound_statement", "cpp": "compound_statement",
               "javascript": "statement_block", "typescript": "statement_block", "go": "block",
               "rust": "block", "java": "block"}
FOLLOWING_CHARS = 400  # how much of the file after the deleted text the oracle "model" goes on writing
Case = tuple[str, str, int, str, str]  # kind, document, cursor offset, suggestion, expected


def count_tokens(text: str) -> int:
    return len(text) // 3


def block_cases(text: str, language: str, rng: random.Random, per_file: int) -> Iterator[Case]:
    """Delete a block's body; the cursor ends the line that opens it."""
    tree = languages.parse(text, language)
    if tree is None or tree.root_node.has_error:
        return
    data = text.encode("utf-8")
    blocks, stack = [], [tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.type == BLOCK_TYPES[language] and node.named_child_count and node.end_point[0] > node.start_point[0]:
            blocks.append(node)
    rng.shuffle(blocks)
    for node in blocks[:per_file]:
        start = len(data[:node.start_byte].decode("utf-8"))
        end = len(data[:node.end_byte].decode("utf-8"))
        if language == "python":
            cursor = text.rfind("\n", 0, start)
            if cursor < 0 or not text[:cursor].rstrip().endswith(":") or text[cursor - 1] != ":":
                continue
        else:
            if text[start] != "{" or text[start + 1:start + 2] != "\n":
                continue
            cursor, end = start + 1, text.rfind("\n", 0, end)
        body = text[cursor:end]
        if body.strip() and end > cursor:
            yield "block", text[:cursor] + text[end:], cursor, body + text[end:end + FOLLOWING_CHARS], body.rstrip()


DEFINITIONS = {"function_definition", "class_definition", "decorated_definition", "function_declaration",
               "class_declaration", "function_item", "impl_item", "method_declaration", "struct_specifier"}


def definition_cases(text: str, language: str, rng: random.Random, per_file: int) -> Iterator[Case]:
    """Delete a whole top-level definition; the cursor is on the empty line left behind."""
    tree = languages.parse(text, language)
    if tree is None or tree.root_node.has_error:
        return
    data = text.encode("utf-8")
    nodes = [n for n in tree.root_node.named_children if n.type in DEFINITIONS and n.start_point[1] == 0]
    for node in rng.sample(nodes, min(per_file, len(nodes))):
        start = len(data[:node.start_byte].decode("utf-8"))
        end = len(data[:node.end_byte].decode("utf-8"))
        if text[end:end + 1] == "\n":
            yield "def", text[:start] + text[end:], start, text[start:end + FOLLOWING_CHARS], text[start:end]


def line_cases(text: str, rng: random.Random, per_file: int) -> Iterator[Case]:
    """Delete the rest of a line after a token boundary."""
    starts = [0]
    for line in text.split("\n"):
        starts.append(starts[-1] + len(line) + 1)
    candidates = [i for i in range(len(starts) - 1) if len(text[starts[i]:starts[i + 1]].strip()) > 10]
    for i in rng.sample(candidates, min(per_file, len(candidates))):
        line = text[starts[i]:starts[i + 1] - 1]
        code = len(line) - len(line.lstrip())
        cuts = [j for j in range(code + 2, len(line) - 1) if line[j - 1] in " (,=." and line[j] != " "]
        if cuts:
            j = rng.choice(cuts)
            cursor, end = starts[i] + j, starts[i + 1] - 1
            yield ("line", text[:cursor] + text[end:], cursor, text[cursor:end] + text[end:end + FOLLOWING_CHARS],
                   text[cursor:end].rstrip())


def corpus(files: int, globs: list[str], rng: random.Random) -> list[tuple[str, Path]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    python = sorted(p for p in stdlib.glob("*.py") if p.stat().st_size < 300_000)
    chosen = [("python", p) for p in rng.sample(python, min(files, len(python)))]
    for spec in globs:
        language, _, pattern = spec.partition("=")
        paths = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
        chosen += [(language, p) for p in rng.sample(paths, min(files, len(paths)))]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=60, help="files per language")
    parser.add_argument("--per-file", type=int, default=6, help="cases of each kind per file")
    parser.add_argument("--glob", action="append", default=[], help="LANGUAGE=PATTERN, more code to test on")
    parser.add_argument("--show", type=int, default=0, help="print this many misses per language and kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    outcomes: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    misses: dict[tuple[str, str], list[tuple[str, str, str | None]]] = collections.defaultdict(list)
    context_ms: list[float] = []
    post_ms: list[float] = []
    for language, path in corpus(args.files, args.glob, rng):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        cases = (list(block_cases(text, language, rng, args.per_file)) + list(line_cases(text, rng, args.per_file))
                 + list(definition_cases(text, language, rng, args.per_file // 2)))
        for kind, doc, cursor, suggestion, expected in cases:
            start = time.perf_counter()
            ctx = build_context(doc, cursor, language, count_tokens=count_tokens, path=str(path))
            middle = time.perf_counter()
            got = postprocess(suggestion, ctx)
            post_ms.append((time.perf_counter() - middle) * 1000)
            context_ms.append((middle - start) * 1000)
            # on an empty line the code is placed on that line, not below a blank one
            if got is not None and kind == "block" and not ctx.line_prefix.strip():
                expected = expected.lstrip("\n")
                expected = expected[len(ctx.line_prefix):] if expected.startswith(ctx.line_prefix) else expected
            outcome = ("exact" if got == expected else "none" if got is None else "short" if expected.startswith(got)
                       else "long" if got.startswith(expected) else "other")
            outcomes[(language, kind)][outcome] += 1
            if outcome != "exact" and len(misses[(language, kind)]) < args.show:
                misses[(language, kind)].append((doc[max(0, cursor - 100):cursor] + "█" + doc[cursor:cursor + 60],
                                                 expected[:200], got))

    print(f"{'language':<12}{'kind':<7}{'cases':>7}{'exact':>8}{'short':>7}{'long':>6}{'none':>6}{'other':>7}")
    for (language, kind), c in sorted(outcomes.items()):
        n = sum(c.values())
        print(f"{language:<12}{kind:<7}{n:>7}{c['exact'] / n:>8.1%}{c['short']:>7}{c['long']:>6}{c['none']:>6}"
              f"{c['other']:>7}")
    quantile = lambda xs, q: statistics.quantiles(xs, n=100)[q - 1] if len(xs) > 1 else (xs[0] if xs else 0.0)
    print(f"build_context p50 {quantile(context_ms, 50):.2f} ms, p95 {quantile(context_ms, 95):.2f} ms; "
          f"postprocess p50 {quantile(post_ms, 50):.2f} ms, p95 {quantile(post_ms, 95):.2f} ms")
    for key, shown in misses.items():
        for context, expected, got in shown:
            print(f"\n--- {key[0]} {key[1]}\n{context}\nexpected: {expected!r}\ngot:      {got!r}")
    total: collections.Counter[str] = collections.Counter()
    for c in outcomes.values():
        total.update(c)
    n = sum(total.values()) or 1
    print(json.dumps({"cases": sum(total.values()), "exact_rate": round(total["exact"] / n, 4),
                      "discard_rate": round(total["none"] / n, 4),
                      "context_p50_ms": round(quantile(context_ms, 50), 3),
                      "context_p95_ms": round(quantile(context_ms, 95), 3),
                      "postprocess_p50_ms": round(quantile(post_ms, 50), 3),
                      "postprocess_p95_ms": round(quantile(post_ms, 95), 3),
                      "by_language": {f"{k[0]}/{k[1]}": dict(v) for k, v in sorted(outcomes.items())}}))


if __name__ == "__main__":
    main()
