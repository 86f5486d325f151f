"""Soak: thousands of requests from a typing replay on the real default model — does anything crash, hang,
slow down or leak?

Several standard-library modules (written by no one here) are copied into a temporary workspace and opened
in turn. A seeded random editor then types their next characters one by one (incremental didChange) and
asks for an inline completion at each word boundary, and now and then deletes or inserts a line, jumps the
cursor elsewhere (and asks there), sends a request and cancels it at once, switches to another file (opening
it if needed), or asks `workspace/symbol`. Every request must be answered (a result or a JSON-RPC error)
within --hang-seconds; the server must stay alive.

Reported per window of --window requests: p50/p95/p99 latency of the answered requests, the resident
memory of the server and its child processes, sampled at the end of the window (split into anonymous memory,
which a leak grows, and file-backed pages — libraries and the mapped model weights, bounded by the files' size —
and the server process's own share), and what the model did (from
`infill/stats`: prompt tokens computed and tokens decoded per generation, prefill ms per computed token), so
a latency trend can be told apart from a workload that changed. The baseline is the run
itself: the last window against the second (the first one includes the model's warm-up), as ratios — a
latency trend up or an RSS growth past ±10 % is a leak or a slowdown.

    flock /tmp/infill-cpu.lock python benchmarks/soak.py [--requests 10000] [--window 1000] [--seed 0] [--minutes M]

Ctrl-C (or --minutes) stops it early and still prints what it saw, marked `stopped_early`.

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from lsp_support import SERVER, RawServer  # noqa: E402

from lsp_server.positions import to_position  # noqa: E402

MODULES = ["textwrap.py", "shlex.py", "string.py", "json/decoder.py", "difflib.py", "argparse.py"]
START = 0.35  # each file opens with this share already written; the rest is typed


def memory_kb(pid: int) -> dict[str, int]:
    """Resident memory (kB) of a process and all its descendants, from /proc: the total, its anonymous part
    (what a leak grows) and its file-backed part (libraries and mapped model weights: clean, reclaimable,
    bounded by the files' size), and the server's own total beside its children's."""
    total = {"rss": 0, "anon": 0, "file": 0, "server": 0}
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = {line.split(":")[0]: int(line.split()[1])
                      for line in Path(f"/proc/{p}/status").read_text().splitlines()
                      if line.startswith(("VmRSS:", "RssAnon:", "RssFile:", "RssShmem:"))}
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
        total["rss"] += fields.get("VmRSS", 0)
        total["anon"] += fields.get("RssAnon", 0)
        total["file"] += fields.get("RssFile", 0) + fields.get("RssShmem", 0)
        if p == pid:
            total["server"] = fields.get("VmRSS", 0)
    return total


class Doc:
    """A file as the editor has it: the full text, how much of it is typed, the cursor."""

    def __init__(self, uri: str, full: str) -> None:
        self.uri = uri
        self.full = full
        self.typed = int(len(full) * START)
        self.text = full[:self.typed]
        self.cursor = len(self.text)
        self.version = 1
        self.open = False


class Soak:
    def __init__(self, args: argparse.Namespace, workspace: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        env = {**os.environ, "INFILL_INDEX_DIR": str(workspace.parent / "index")}
        self.raw = RawServer(SERVER, env, workspace.parent / "server.log")
        self.docs = [Doc((workspace / Path(m).name).as_uri(), (workspace / Path(m).name).read_text())
                     for m in MODULES]
        self.current = self.docs[0]
        self.latencies: list[float] = []
        self.kinds: dict[str, int] = {}
        self.errors = self.cancelled = self.hangs = 0
        self.windows: list[dict] = []
        self.workspace = workspace
        self.counters: dict = {}

    # --- protocol -----------------------------------------------------------------------------------
    def start(self) -> float:
        t0 = time.perf_counter()
        self.raw.call("initialize", {"processId": os.getpid(), "rootUri": self.workspace.as_uri(),
                                     "capabilities": {"window": {"workDoneProgress": True},
                                                      "textDocument": {"inlineCompletion": {}}}}, timeout=900)
        self.raw.notify("initialized", {})
        while not any(" ready on " in json.dumps(n) for n in list(self.raw.notifications)):
            if self.raw.proc.poll() is not None or time.perf_counter() - t0 > 900:
                raise SystemExit("the model did not load")
            time.sleep(0.2)
        return time.perf_counter() - t0

    def request(self, method: str, params: dict, cancel: bool = False) -> None:
        t0 = time.perf_counter()
        msg_id = self.raw.request(method, params)
        if cancel:
            self.raw.notify("$/cancelRequest", {"id": msg_id})
        try:
            response = self.raw.wait(msg_id, self.args.hang_seconds)
        except TimeoutError:
            self.hangs += 1
            return
        self.latencies.append((time.perf_counter() - t0) * 1000)
        self.kinds[method] = self.kinds.get(method, 0) + 1
        if "error" in response:
            if response["error"].get("code") == -32800:
                self.cancelled += 1
            else:
                self.errors += 1

    def change(self, doc: Doc, start: int, end: int, text: str) -> None:
        (sl, sc), (el, ec) = to_position(doc.text, start), to_position(doc.text, end)
        doc.text = doc.text[:start] + text + doc.text[end:]
        doc.version += 1
        self.raw.notify("textDocument/didChange", {
            "textDocument": {"uri": doc.uri, "version": doc.version},
            "contentChanges": [{"range": {"start": {"line": sl, "character": sc}, "end": {"line": el, "character": ec}},
                                "text": text}]})

    def inline(self, doc: Doc, cancel: bool = False) -> None:
        line, character = to_position(doc.text, doc.cursor)
        self.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": doc.uri}, "position": {"line": line, "character": character},
            "context": {"triggerKind": 2}}, cancel=cancel)

    def switch(self, doc: Doc) -> None:
        self.current = doc
        if not doc.open:
            self.raw.notify("textDocument/didOpen", {"textDocument": {"uri": doc.uri, "languageId": "python",
                                                                      "version": doc.version, "text": doc.text}})
            doc.open = True

    # --- the editor ---------------------------------------------------------------------------------
    def type_word(self, doc: Doc) -> None:
        """Type the file's next characters up to a word boundary, then ask (as editors do after a debounce)."""
        if doc.typed >= len(doc.full):
            doc.typed = int(len(doc.full) * START)  # start over (the text typed so far stays)
        while doc.typed < len(doc.full):
            ch = doc.full[doc.typed]
            doc.typed += 1
            self.change(doc, doc.cursor, doc.cursor, ch)
            doc.cursor += 1
            if not (ch.isalnum() or ch == "_"):
                break
        time.sleep(self.args.debounce_ms / 1000)
        self.inline(doc)

    def step(self) -> None:
        doc, roll = self.current, self.rng.random()
        if roll < 0.70:
            self.type_word(doc)
        elif roll < 0.78:  # a random edit: delete a line or paste one, then ask where the cursor is
            lines = doc.text.split("\n")
            n = self.rng.randrange(len(lines))
            start = sum(len(x) + 1 for x in lines[:n])
            if self.rng.random() < 0.5 and len(lines) > 20:
                self.change(doc, start, min(start + len(lines[n]) + 1, len(doc.text)), "")
            else:
                self.change(doc, start, start, self.rng.choice(lines) + "\n")
            doc.cursor = min(doc.cursor, len(doc.text))
            self.inline(doc)
        elif roll < 0.86:  # a cursor jump
            doc.cursor = self.rng.randrange(len(doc.text) + 1)
            if doc.text[doc.cursor - 1:doc.cursor + 1] == "\r\n":
                doc.cursor -= 1
            self.inline(doc)
            doc.cursor = len(doc.text)  # back to where the typing goes on
        elif roll < 0.93:  # ask and cancel at once (the user typed on)
            self.inline(doc, cancel=True)
        elif roll < 0.98:
            self.switch(self.rng.choice(self.docs))
        else:
            word = self.rng.choice(["parse", "wrap text", "split", "decode", "format", "match"])
            self.request("workspace/symbol", {"query": word})

    def run(self) -> dict:
        load_s = self.start()
        for doc in self.docs[:3]:
            self.switch(doc)
        self.switch(self.docs[0])
        crashed = False
        t0 = time.perf_counter()
        mark, stopped = 0, None
        deadline = t0 + self.args.minutes * 60 if self.args.minutes else None
        try:
            while len(self.latencies) + self.hangs < self.args.requests:
                if self.raw.proc.poll() is not None:
                    crashed = True
                    break
                self.step()
                done = len(self.latencies) + self.hangs
                if done - mark >= self.args.window:
                    self.window(mark, done)
                    mark = done
                    if deadline is not None and time.perf_counter() > deadline:
                        stopped = f"--minutes {self.args.minutes:g} reached"
                        break
        except KeyboardInterrupt:  # a long soak stopped by hand still reports what it saw
            stopped = "interrupted"
        if self.raw.proc.poll() is not None:
            crashed = True
        code = self.raw.close() if not crashed else self.raw.proc.returncode
        return {"load_s": round(load_s, 1), "seconds": round(time.perf_counter() - t0, 1), "crashes": int(crashed),
                "hangs": self.hangs, "errors": self.errors, "cancelled": self.cancelled,
                "requests": len(self.latencies) + self.hangs, "by_method": self.kinds, "exit_code": code,
                "garbage_on_stdout": len(self.raw.garbage), "stopped_early": stopped, "windows": self.windows}

    def window(self, start: int, end: int) -> None:
        lat = sorted(self.latencies[start:end])
        q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
        self.windows.append({"requests": f"{start}-{end}", "p50_ms": round(q[49], 1), "p95_ms": round(q[94], 1),
                             "p99_ms": round(q[98], 1),
                             **{f"{k}_mb": round(v / 1024, 1) for k, v in memory_kb(self.raw.proc.pid).items()},
                             "hangs_so_far": self.hangs, "errors_so_far": self.errors, **self.work_done()})
        w = self.windows[-1]
        print(f"  window {start:>6}-{end:<6} p50 {q[49]:7.1f} ms  p95 {q[94]:7.1f} ms  p99 {q[98]:7.1f} ms  "
              f"RSS {w['rss_mb']:7.1f} MB (anon {w['anon_mb']:.1f}, server {w['server_mb']:.1f})  "
              f"generated {w['generated_share']:.2f}  "
              f"computed {w['computed_tokens']:6.1f} tok at {w['ms_per_computed_token']:5.2f} ms  "
              f"decoded {w['decoded_tokens']:5.1f} tok  hangs {self.hangs} errors {self.errors}", flush=True)

    def work_done(self) -> dict:
        """What the model did in this window (the server's `infill/stats` counters, as differences): the share
        of requests that generated, and per generation the prompt tokens computed (not reused from the cache)
        and the tokens decoded — the workload — beside the prefill time per computed token — the engine's
        speed. A latency trend with a flat ms/token is the workload moving, not the server slowing down."""
        now = self.raw.call("infill/stats", None, timeout=self.args.hang_seconds).get("result") or {}
        d = {k: now.get(k, 0) - self.counters.get(k, 0) for k in now}
        self.counters = now
        n, computed = d.get("generated", 0), d.get("prompt_tokens", 0) - d.get("reused_tokens", 0)
        return {"generated_share": round(n / d["requests"], 3) if d.get("requests") else 0.0,
                "computed_tokens": round(computed / n, 1) if n else 0.0,
                "ms_per_computed_token": round(d.get("first_token_ms", 0) / computed, 2) if computed else 0.0,
                "decoded_tokens": round(d.get("generated_tokens", 0) / n, 1) if n else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--debounce-ms", type=float, default=0.0, help="pause before each completion request")
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="stop after the first window that ends past this time (0: run all --requests)")
    args = parser.parse_args()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    with tempfile.TemporaryDirectory(prefix="infill-soak-") as tmp:
        workspace = Path(tmp) / "ws"
        workspace.mkdir()
        for module in MODULES:
            shutil.copy(stdlib / module, workspace / Path(module).name)
        result = Soak(args, workspace).run()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    windows = result["windows"]
    if len(windows) >= 2:
        second, last = windows[1 if len(windows) > 2 else 0], windows[-1]
        result["last_vs_second"] = {k: round(last[k] / second[k], 3) if second[k] else None
                                    for k in ("p50_ms", "p95_ms", "p99_ms", "rss_mb", "anon_mb", "file_mb",
                                              "computed_tokens", "ms_per_computed_token")}
    print()
    print(f"{'window':>13} | {'p50 ms':>8} | {'p95 ms':>8} | {'p99 ms':>8} | {'RSS MB':>8} | "
          f"{'anon':>7} | {'file':>6} | {'server':>6} | {'gen':>5} | "
          f"{'computed':>8} | {'ms/tok':>6} | {'decoded':>7}")
    print("-" * 126)
    for w in windows:
        print(f"{w['requests']:>13} | {w['p50_ms']:8.1f} | {w['p95_ms']:8.1f} | {w['p99_ms']:8.1f} | "
              f"{w['rss_mb']:8.1f} | {w['anon_mb']:7.1f} | {w['file_mb']:6.1f} | {w['server_mb']:6.1f} | "
              f"{w['generated_share']:5.2f} | {w['computed_tokens']:8.1f} | "
              f"{w['ms_per_computed_token']:6.2f} | {w['decoded_tokens']:7.1f}")
    print(f"\nrequests {result['requests']} in {result['seconds']} s (model load {result['load_s']} s): crashes "
          f"{result['crashes']}, hangs {result['hangs']}, errors {result['errors']}, cancelled {result['cancelled']}, "
          f"stray stdout {result['garbage_on_stdout']}, exit code {result['exit_code']}"
          + (f" (stopped early: {result['stopped_early']})" if result["stopped_early"] else ""))
    if "last_vs_second" in result:
        print(f"last window / second window: {result['last_vs_second']}")
    print(json.dumps({"benchmark": "soak", "commit": commit, "seed": args.seed, **result}))


if __name__ == "__main__":
    main()
