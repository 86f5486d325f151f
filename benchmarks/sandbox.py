"""Run untrusted generated Python in a throw-away subprocess, and say whether it passed.

Benchmarks execute model output (never the server). Layers, each a backstop for the others:
- a fresh temporary directory as cwd, `python -I -B` (no user site, no env, no bytecode writes);
- resource limits in the child: CPU seconds, address space, file size (which also caps stdout/stderr,
  captured to files), number of processes; as root the child drops to `nobody`, since root is exempt
  from RLIMIT_NPROC and could write anywhere;
- an audit hook installed before the program runs (it cannot be removed from Python): no sockets, no
  fork/exec/spawn, no ctypes, no file writes or deletions outside the temp dir;
- a wall-clock timeout that kills the whole process group.
Anything that trips a limit is a failure with a short reason; the caller carries on.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534

GUARD = r'''
import os, sys
ROOT = os.path.realpath(os.getcwd())
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_BANNED = ("socket.", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system",
           "subprocess.Popen", "ctypes.", "os.kill", "os.killpg", "pty.", "_posixsubprocess")
_PATH_EVENTS = {"os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.chmod", "os.chown", "os.link",
                "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile"}

def _inside(path):
    if isinstance(path, int):
        return True  # an already open descriptor was checked when it was opened
    try:
        real = os.path.realpath(os.fsdecode(path))
    except Exception:
        return False
    return real == ROOT or real.startswith(ROOT + os.sep)

def _hook(event, args):
    if event.startswith(_BANNED):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open" and args and args[0] is not None:
        path, mode, flags = args[0], args[1], args[2]
        writing = (mode is not None and any(c in str(mode) for c in "wax+")) or bool((flags or 0) & _WRITE_FLAGS)
        if writing and not _inside(path):
            raise PermissionError(f"sandbox: writing {path!r} outside the sandbox")
    elif event in _PATH_EVENTS and not all(_inside(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))):
        raise PermissionError(f"sandbox: {event} outside the sandbox")

sys.addaudithook(_hook)
del _hook
with open("program.py", encoding="utf-8") as _f:
    _source = _f.read()
exec(compile(_source, "program.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
print("SANDBOX-PASS")
'''


@dataclass(frozen=True)
class Limits:
    """What one run may use."""

    timeout_s: float = 10.0  # wall clock
    cpu_s: int = 5
    memory_mb: int = 1024  # address space
    output_bytes: int = 1 << 20  # per file, stdout/stderr included
    processes: int = 1  # beyond the ones the user already has (only enforced for a non-root user)


@dataclass(frozen=True)
class Outcome:
    """The verdict on one program."""

    passed: bool
    reason: str  # "pass", "timeout", "output limit", "killed by signal N", or the last error line


def run_python(source: str, limits: Limits = Limits()) -> Outcome:
    """Execute `source` as a script in the sandbox; it passes when it runs to the end without error."""
    with tempfile.TemporaryDirectory(prefix="infill-sbx-") as tmp:
        work = Path(tmp, "work")
        work.mkdir()
        (work / "program.py").write_text(source, encoding="utf-8")
        (work / "guard.py").write_text(GUARD, encoding="utf-8")
        drop = os.getuid() == 0
        if drop:  # nobody must be able to use its own cwd, and nothing else of ours
            os.chown(work, NOBODY, NOBODY)
            os.chmod(tmp, 0o711)
        out_path, err_path = Path(tmp, "stdout"), Path(tmp, "stderr")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            try:
                proc = subprocess.Popen(
                    [_interpreter(drop), "-I", "-B", "guard.py"], cwd=work, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=err, env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "HOME": str(work)},
                    start_new_session=True, preexec_fn=lambda: _child_limits(limits, drop), close_fds=True)
            except OSError as exc:
                return Outcome(False, f"could not start: {exc}")
            try:
                code = proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return Outcome(False, "timeout")
            finally:
                _kill_group(proc)  # whatever it left behind in its group goes too
        stdout = _tail(out_path, limits.output_bytes)
        stderr = _tail(err_path, limits.output_bytes)
    return _verdict(code, stdout, stderr, limits)


def _interpreter(drop: bool) -> str:
    """A Python the child can run: ours, or as `nobody` the first one every user may execute."""
    if not drop:
        return sys.executable
    base = getattr(sys, "_base_executable", sys.executable)  # the interpreter a venv was made from
    for candidate in (base, sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        path = Path(os.path.realpath(candidate))
        if path.is_file() and all(p.stat().st_mode & 0o001 for p in (path, *path.parents)):
            return str(path)
    return sys.executable  # the run will fail with a clear "could not start"


def _child_limits(limits: Limits, drop: bool) -> None:
    """Runs in the child between fork and exec."""
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))  # SIGXCPU first, then SIGKILL
    memory = limits.memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.output_bytes, limits.output_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if drop:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    # RLIMIT_NPROC counts every process of the user: allow what it runs now plus a few.
    running = _processes_of(os.getuid())
    resource.setrlimit(resource.RLIMIT_NPROC, (running + limits.processes, running + limits.processes))


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _tail(path: Path, cap: int) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 4096))
        return f.read(min(cap, 4096)).decode("utf-8", "replace")


def _verdict(code: int, stdout: str, stderr: str, limits: Limits) -> Outcome:
    if code == 0 and stdout.rstrip().endswith("SANDBOX-PASS"):
        return Outcome(True, "pass")
    if code == -signal.SIGXFSZ:
        return Outcome(False, "output limit")
    if code == -signal.SIGXCPU or code == -signal.SIGKILL:
        return Outcome(False, "cpu limit" if code == -signal.SIGXCPU else "killed")
    if code < 0:
        return Outcome(False, f"killed by signal {-code}")
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    if lines:
        return Outcome(False, lines[-1][:160])
    return Outcome(False, f"exit {code}" if code else "did not finish")
