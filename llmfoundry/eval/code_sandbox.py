r"""Run untrusted programs (model-written code) in a sandboxed subprocess, and test programs.

Each run gets a fresh temporary working directory (removed afterwards), its own session, stdin
on ``/dev/null``, a minimal environment and its output in files. A small bootstrap interpreter
(never torch or llmfoundry) prepares the child and then ``exec``\s the program:

* ``resource`` limits: CPU seconds, address space, file size, open files, no core dumps, and,
  inside a new user namespace (where the kernel counts them per namespace), processes;
* new **user, network and PID namespaces** where the kernel allows them, else network + PID
  alone (root with ``CAP_SYS_ADMIN``), else none after one logged warning. The network
  namespace has only a downed loopback device; in the PID namespace a waiter is PID 1, so once
  the program ends or is killed every process it started goes too.

After a wall-clock timeout the whole process group is killed. This guards the machine against
accidents of generated code (endless loops, memory hogs, fork storms, network access); it does
not isolate the file system (the program runs as the calling user) nor stop code written to
game the score. Python runs on the current interpreter; C++ (``g++``), C (``gcc``) and
JavaScript (``node``) need those tools on ``PATH`` (``language_available``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import Literal

__all__ = [
    "COMPILE_LIMITS",
    "LANGUAGE_TOOLS",
    "Sandbox",
    "SandboxLimits",
    "SandboxResult",
    "build_test_program",
    "language_available",
    "namespaces_available",
    "normalize_language",
    "run_program",
    "run_tests",
]

logger = logging.getLogger(__name__)

Status = Literal["passed", "failed", "timeout", "error"]

# The tool each language needs on PATH (Python uses the running interpreter).
LANGUAGE_TOOLS = {"python": "", "c++": "g++", "c": "gcc", "javascript": "node"}
_LANGUAGE_ALIASES = {"py": "python", "python3": "python", "cpp": "c++", "js": "javascript"}
_SOURCE_NAMES = {"python": "main.py", "c++": "main.cpp", "c": "main.c", "javascript": "main.js"}
_TAIL_BYTES, _STDOUT_BYTES = 4096, 1 << 20  # of stderr and stdout kept
_ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
# Each test case may run this long (LLM Foundry's limit per test process), plus start-up time.
SECONDS_PER_TEST, _STARTUP_SECONDS = 5.0, 5.0


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed process (and what it starts).

    Attributes:
        wall_seconds: killed (with its process group) after this long.
        cpu_seconds: CPU time limit (SIGXCPU, then SIGKILL a second later).
        memory_mb: address-space limit.
        file_size_mb: largest file it may write (its stdout and stderr included).
        open_files: file descriptors it may hold.
        max_processes: processes it may run; only inside a new user namespace (outside one
            the kernel counts every process of the user, and exempts root).
    """

    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_mb: int = 1024
    file_size_mb: int = 16
    open_files: int = 256
    max_processes: int = 64


# Compilers need more room than the programs they build.
COMPILE_LIMITS = SandboxLimits(wall_seconds=60.0, cpu_seconds=60, memory_mb=4096)


@dataclass(frozen=True)
class SandboxResult:
    """How a sandboxed run ended.

    ``status`` is ``passed`` (exit 0), ``failed`` (other exit, killed by a signal, or a compile
    error), ``timeout`` (wall clock or CPU limit) or ``error`` (the sandbox could not run it).
    """

    status: Status
    returncode: int | None = None
    stdout: str = ""
    stderr_tail: str = ""
    seconds: float = 0.0
    namespaces: tuple[str, ...] = ()


def normalize_language(name: str) -> str | None:
    """The canonical name of a language (``cpp`` → ``c++``), or None if it is not supported."""
    key = _LANGUAGE_ALIASES.get(name.strip().lower(), name.strip().lower())
    return key if key in LANGUAGE_TOOLS else None


def _tool(language: str) -> str | None:
    """The absolute path of the tool that runs ``language``, None if it is not installed."""
    return shutil.which(LANGUAGE_TOOLS[language]) if LANGUAGE_TOOLS[language] else sys.executable


def language_available(language: str) -> bool:
    """Whether programs in ``language`` can run here (Python always; others need their tool)."""
    canonical = normalize_language(language)
    return canonical is not None and _tool(canonical) is not None


# Runs in the child: apply the limits, enter namespaces, report, then exec the program. It is
# self-contained (run with ``python -I -S``) so that the child never imports torch or llmfoundry.
_BOOTSTRAP = r"""
import ctypes, json, os, resource, signal, sys
NEWUSER, NEWPID, NEWNET = 0x10000000, 0x20000000, 0x40000000
cfg, status_fd, argv = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]

def unshare(flags):
    try:
        if hasattr(os, "unshare"):
            os.unshare(flags)
            return True
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.unshare(ctypes.c_int(flags)) == 0
    except (OSError, AttributeError):
        return False

def limit(kind, soft, hard=None):
    try:
        resource.setrlimit(kind, (soft, soft if hard is None else hard))
    except (ValueError, OSError):
        pass

mb = 1 << 20
limit(resource.RLIMIT_CORE, 0)
limit(resource.RLIMIT_CPU, cfg["cpu_seconds"], cfg["cpu_seconds"] + 1)
limit(resource.RLIMIT_AS, cfg["memory_mb"] * mb)
limit(resource.RLIMIT_FSIZE, cfg["file_size_mb"] * mb)
limit(resource.RLIMIT_NOFILE, cfg["open_files"])
names = []
if cfg["namespaces"] and unshare(NEWUSER | NEWNET | NEWPID):
    names = ["user", "net", "pid"]
    limit(resource.RLIMIT_NPROC, cfg["max_processes"])
elif cfg["namespaces"] and unshare(NEWNET | NEWPID):
    names = ["net", "pid"]
os.write(status_fd, json.dumps({"namespaces": names}).encode())
os.close(status_fd)

def run():
    try:
        os.execv(argv[0], argv)
    except OSError as err:
        sys.stderr.write("sandbox: cannot run %s: %s\n" % (argv[0], err))
        os._exit(127)

def exit_code(pid):
    status = os.waitpid(pid, 0)[1]
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

if "pid" not in names:
    run()
# The namespace's PID 1 only waits: the program runs as PID 2, where signals (SIGXCPU) act as
# usual. PID 1 dies with the bootstrap, and the kernel then kills everything in the namespace.
init = os.fork()
if init == 0:
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    program = os.fork()
    if program == 0:
        run()
    os._exit(exit_code(program))
# On SIGTERM (the wall clock ran out) end the namespace, and exit once it is empty.
def end(*_):
    try:
        os.kill(init, signal.SIGKILL)
    except OSError:
        pass

signal.signal(signal.SIGTERM, end)
os._exit(exit_code(init))
"""

_warned_no_namespaces = False


def _note_namespaces(names: Sequence[str]) -> None:
    global _warned_no_namespaces
    if "net" not in names and not _warned_no_namespaces:
        _warned_no_namespaces = True
        logger.warning(
            "code sandbox: this kernel/container does not allow new network or PID namespaces; "
            "generated code runs with resource limits only and can reach the network"
        )


def _tail(path: Path, size: int) -> str:
    data = path.read_bytes()[-size:] if path.is_file() else b""  # at most file_size_mb
    return data.decode("utf-8", errors="replace")


def _wait(process: subprocess.Popen[bytes], seconds: float, pid_namespace: bool) -> bool:
    """Wait for the run to end, or end it after ``seconds``; whether it timed out. Whatever
    is left in its process group is killed either way."""
    timed_out = False
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        timed_out = True
        if pid_namespace:  # the bootstrap ends the namespace and waits until it is empty
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5.0)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return timed_out


class Sandbox:
    """A temporary working directory in which programs run sandboxed; use as a context manager.

    Args:
        namespaces: try to isolate runs in new user/network/PID namespaces.
    """

    def __init__(self, namespaces: bool = True) -> None:
        self.namespaces = namespaces
        self.workdir = Path(tempfile.mkdtemp(prefix="llmfoundry-sandbox-"))
        self._runs = 0

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the working directory and everything in it."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    def write(self, name: str, text: str) -> Path:
        """Write a file into the working directory."""
        path = self.workdir / name
        path.write_text(text, encoding="utf-8")
        return path

    def run(self, argv: Sequence[str], limits: SandboxLimits | None = None) -> SandboxResult:
        """Run ``argv`` (``argv[0]`` an absolute path) in the working directory under ``limits``."""
        limits = limits or SandboxLimits()
        self._runs += 1
        out_path = self.workdir / f".stdout{self._runs}"
        err_path = self.workdir / f".stderr{self._runs}"
        config = {**asdict(limits), "namespaces": self.namespaces}
        read_fd, write_fd = os.pipe()
        start = time.monotonic()
        try:
            with out_path.open("wb") as out, err_path.open("wb") as err:
                bootstrap = [sys.executable, "-I", "-S", "-c", _BOOTSTRAP, json.dumps(config)]
                process = subprocess.Popen(
                    [*bootstrap, str(write_fd), *argv],
                    cwd=self.workdir,
                    env={**_ENVIRONMENT, "HOME": str(self.workdir), "TMPDIR": str(self.workdir)},
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    pass_fds=(write_fd,),
                    start_new_session=True,
                )
        except OSError as error:
            os.close(read_fd)
            os.close(write_fd)
            return SandboxResult("error", stderr_tail=f"sandbox: cannot start: {error}")
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as status_pipe:  # written before the program starts
            status_text = status_pipe.read().decode("utf-8", errors="replace")
        try:
            names: tuple[str, ...] | None = tuple(json.loads(status_text)["namespaces"])
        except (ValueError, KeyError, TypeError):
            names = None
        timed_out = _wait(process, limits.wall_seconds, names is not None and "pid" in names)
        seconds, returncode = time.monotonic() - start, process.returncode
        stdout, stderr = _tail(out_path, _STDOUT_BYTES), _tail(err_path, _TAIL_BYTES)
        if names is None:
            return SandboxResult("error", returncode, stdout, stderr or "sandbox: setup failed")
        if self.namespaces:
            _note_namespaces(names)
        status: Status
        if timed_out or returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):  # CPU limit
            status = "timeout"
        elif returncode == 127 and stderr.startswith("sandbox: cannot run"):
            status = "error"
        else:
            status = "passed" if returncode == 0 else "failed"
        return SandboxResult(status, returncode, stdout, stderr, seconds, names)


def _compile_command(language: str, tool: str, source: str) -> list[str]:
    if language == "c++":
        return [tool, "-std=c++11", source, "-o", "main"]
    return [tool, source, "-o", "main", "-lm"]


def run_program(
    language: str,
    source: str,
    limits: SandboxLimits | None = None,
    compile_limits: SandboxLimits = COMPILE_LIMITS,
    namespaces: bool = True,
) -> SandboxResult:
    """Run one program's ``source`` in a fresh sandbox (compiling it first for C and C++).

    A compile error is a ``failed`` run (with the compiler's messages as its stderr); a language
    whose tool is missing is an ``error``.
    """
    canonical = normalize_language(language)
    tool = _tool(canonical) if canonical else None
    if canonical is None or tool is None:
        need = LANGUAGE_TOOLS.get(canonical or "", "")
        why = f"needs '{need}' on PATH" if canonical else "is not supported"
        return SandboxResult("error", stderr_tail=f"sandbox: language '{language}' {why}")
    with Sandbox(namespaces=namespaces) as box:
        name = _SOURCE_NAMES[canonical]
        box.write(name, source)
        if canonical == "python":
            return box.run([tool, "-I", name], limits)
        if canonical == "javascript":
            return box.run([tool, name], limits)
        built = box.run(_compile_command(canonical, tool, name), compile_limits)
        if built.status != "passed":
            status: Status = "error" if built.status == "error" else "failed"
            return replace(built, status=status, stdout="")
        result = box.run([str(box.workdir / "main")], limits)
        return replace(result, seconds=result.seconds + built.seconds)


@cache
def namespaces_available() -> tuple[str, ...]:
    """The namespaces a sandboxed run gets here (probed once): ``("user", "net", "pid")``,
    ``("net", "pid")`` or ``()``."""
    with Sandbox() as box:
        result = box.run([sys.executable, "-I", "-S", "-c", "pass"], SandboxLimits(30.0))
    return result.namespaces


# --- Test programs: the completed code plus a main that calls it on every test case ------------
# Each prints one line per test case ("1" / "true" when it passes); the generation passes when the
# output is exactly those lines (as in LLM Foundry, where each test's whole output had to match).

_PYTHON_MAIN = """
import json, signal, sys, traceback, types

def _timeout(signum, frame):
    raise TimeoutError("test case ran past its time limit")

def _passes(source, entry_point, test_input, test_output, seconds):
    module = types.ModuleType("test_module")
    signal.signal(signal.SIGALRM, _timeout)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        exec(compile(source, "solution.py", "exec"), module.__dict__)
        result = module.__dict__[entry_point](*eval(test_input, {}))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        expected = eval(test_output, {})
    except Exception:
        expected = test_output
    return bool(result == expected)

def _main(spec):
    for test_input, test_output in zip(spec["inputs"], spec["outputs"]):
        try:
            passed = _passes(spec["source"], spec["entry_point"], test_input, test_output,
                             spec["seconds"])
        except BaseException:
            traceback.print_exc()
            passed = False
        print(spec["token"] + (" 1" if passed else " 0"), flush=True)
        if not passed:
            break

_main(json.loads(SPEC))
"""

# Overloads that compare a result with an expected value (floats with a tolerance).
_CPP_PRELUDE = """#include <cmath>
#include <iostream>
#include <map>
#include <string>
#include <vector>
using namespace std;
bool issame(int a, int b) { return a == b; }
bool issame(long long a, long long b) { return a == b; }
bool issame(bool a, bool b) { return a == b; }
bool issame(float a, float b) { return fabs(a - b) < 1e-4; }
bool issame(double a, double b) { return fabs(a - b) < 1e-3; }
bool issame(string a, string b) { return a == b; }
bool issame(vector<int> a, vector<int> b) { return a == b; }
bool issame(vector<string> a, vector<string> b) { return a == b; }
bool issame(vector<vector<int>> a, vector<vector<int>> b) { return a == b; }
bool issame(map<char, int> a, map<char, int> b) { return a == b; }
bool issame(vector<float> a, vector<float> b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); i++) if (fabs(a[i] - b[i]) > 1e-4) return false;
    return true;
}
"""

_C_PRELUDE = """#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
static bool issame_int(int a, int b) { return a == b; }
static bool issame_bool(bool a, bool b) { return a == b; }
static bool issame_float(float a, float b) { return fabsf(a - b) < 1e-4; }
#define issame(a, b) _Generic((a), int: issame_int, bool: issame_bool, float: issame_float)(a, b)
"""
_CPP_CHECK = 'cout << issame({}({}), {}) << "\\n";'
_C_CHECK = 'printf("%d\\n", issame({}({}), {}));'


def build_test_program(
    language: str,
    code: str,
    entry_point: str,
    test_inputs: Sequence[str],
    test_outputs: Sequence[str],
    token: str = "1",
    seconds_per_test: float = SECONDS_PER_TEST,
) -> tuple[str, str]:
    """The program that checks ``code`` on the test cases, and the output it prints if all pass.

    Python calls ``entry_point(*eval(input))`` (a fresh module per test, ``seconds_per_test``
    each) and compares with ``eval(output)`` (or the output string itself, if it does not
    evaluate); C++ and C print ``issame(entry_point(input), output)``, JavaScript compares the
    JSON of the result and of the output.
    """
    pairs = list(zip(test_inputs, test_outputs, strict=True))
    if language == "python":
        spec = dict(source=code, entry_point=entry_point, token=token, seconds=seconds_per_test)
        spec = {**spec, "inputs": list(test_inputs), "outputs": list(test_outputs)}
        return f"SPEC = {json.dumps(json.dumps(spec))}\n{_PYTHON_MAIN}", f"{token} 1\n" * len(pairs)
    if language == "javascript":
        checks = "".join(
            f"\nconsole.log(JSON.stringify({entry_point}({i})) === JSON.stringify({o}));"
            for i, o in pairs
        )
        return code + checks + "\n", "true\n" * len(pairs)
    prelude = _CPP_PRELUDE if language == "c++" else _C_PRELUDE
    printer = _CPP_CHECK if language == "c++" else _C_CHECK
    lines = "".join(f"\n    {printer.format(entry_point, i, o)}" for i, o in pairs)
    return f"{prelude}{code}\nint main() {{{lines}\n    return 0;\n}}\n", "1\n" * len(pairs)


def run_tests(
    language: str,
    code: str,
    entry_point: str,
    test_inputs: Sequence[str],
    test_outputs: Sequence[str],
    seconds_per_test: float = SECONDS_PER_TEST,
) -> bool:
    """Whether ``code`` passes every test case, run in the sandbox."""
    token = secrets.token_hex(8)
    program, expected = build_test_program(
        language, code, entry_point, test_inputs, test_outputs, token, seconds_per_test
    )
    seconds = seconds_per_test * max(1, len(test_inputs)) + _STARTUP_SECONDS
    limits = SandboxLimits(wall_seconds=seconds, cpu_seconds=math.ceil(seconds))
    result = run_program(language, program, limits)
    if result.status == "error":
        logger.warning(
            "code eval: could not run a %s test program: %s", language, result.stderr_tail
        )
    if language == "python":  # only the harness's lines count; the code may print too
        lines = [line for line in result.stdout.splitlines() if line.startswith(token)]
        return result.status == "passed" and "".join(f"{x}\n" for x in lines) == expected
    return result.status == "passed" and result.stdout == expected
