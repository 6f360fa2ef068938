"""A warm Python interpreter for the docs test: `python` and `composer` without the start-up.

Importing ``llmfoundry`` (torch, transformers, Composer, Streaming) takes 10-25 s on a small
machine, and the documents run dozens of commands. So the docs test starts one *server* process
that imports all of that once, and puts *shims* named ``python``, ``python3`` and ``composer``
first on the ``PATH`` of the blocks it runs. A shim hands its command line, working directory,
environment and standard streams (the file descriptors themselves) to the server over a Unix
socket; the server forks, and the child runs the command exactly as a fresh interpreter would
(``python script.py args``, ``python -m module``, ``python -c code``, ``python -`` reading stdin,
and Composer's launcher, whose worker processes come back through the ``python`` shim). The
shim waits for the child's exit status and exits with it; signals sent to the shim (``kill``,
Ctrl-C) are passed on to the child. Only the start-up differs from a real interpreter: modules
already imported by the server are not imported again.

Run with ``DOCS_TEST_COLD_PYTHON=1`` to skip all this and use the real interpreter.

This module imports only the standard library at the top: the shims run it with ``python -S``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import runpy
import signal
import socket
import sys
import traceback
import types
from pathlib import Path

MAX_MESSAGE = 1 << 20
PRELOAD = (
    "torch",
    "transformers",
    "composer",
    "composer.cli.launcher",
    "streaming",
    "llmfoundry",
    "llmfoundry.command_utils.train",
    "llmfoundry.command_utils.eval",
    "llmfoundry.inference.generate",
)
SHIMS = ("python", "python3", "composer")
# Python options that take no value (ignored: the warm interpreter is already set up), and
# those whose value is the next argument.
FLAG_OPTIONS = frozenset({"-u", "-B", "-E", "-s", "-S", "-O", "-OO", "-q", "-b", "-I", "-P"})
VALUE_OPTIONS = frozenset({"-W", "-X"})


def write_shims(shim_dir: Path, sock_path: Path) -> None:
    """Write the ``python``, ``python3`` and ``composer`` shims into ``shim_dir``."""
    shim_dir.mkdir(parents=True, exist_ok=True)
    for name in SHIMS:
        shim = shim_dir / name
        shim.write_text(
            f"#!{sys.executable} -S\n"
            f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            f"import warm_python; warm_python.client({str(sock_path)!r}, {name!r})\n"
        )
        shim.chmod(0o755)


def client(sock_path: str, program: str) -> None:
    """The shim: run ``program`` with this process's arguments in a fork of the server."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.connect(sock_path)
    except OSError as err:
        sys.exit(f"{program}: the docs test's warm interpreter is not running ({err})")
    request = {"argv": [program, *sys.argv[1:]], "cwd": os.getcwd(), "env": dict(os.environ)}
    socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
    child = int(conn.recv(64))
    forwarded: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        forwarded.append(signum)
        os.kill(child, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    status = conn.recv(64)
    if status:
        sys.exit(int(status))
    # The child died without reporting (killed by a signal).
    sys.exit(128 + (forwarded[-1] if forwarded else signal.SIGKILL))


def serve(sock_path: str, shim_dir: str) -> None:
    """The server: import the heavy modules, then fork a child per shim connection."""
    import importlib

    for name in PRELOAD:
        with contextlib.suppress(ImportError):  # only a warm-up: a command imports what it needs
            importlib.import_module(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(sock_path)
    server.listen(64)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        if os.fork() == 0:
            server.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            run_request(conn, shim_dir)  # exits the child
        conn.close()


def run_request(conn: socket.socket, shim_dir: str) -> None:
    """In a forked child: take over the shim's streams, directory and environment, run the
    command and exit the interpreter normally (threads joined, ``atexit`` handlers run)."""
    payload, fds, _, _ = socket.recv_fds(conn, MAX_MESSAGE, 3)
    request = json.loads(payload)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    conn.send(str(os.getpid()).encode())
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    code: list[int] = [1]
    # Registered first, so it runs last of the handlers the command registers.
    atexit.register(report_exit, conn, code)
    code[0] = run_command(request["argv"], shim_dir)
    sys.exit(code[0])


def report_exit(conn: socket.socket, code: list[int]) -> None:
    """Send the exit status to the shim, once the streams are flushed."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    with contextlib.suppress(OSError):  # the shim is gone (killed)
        conn.send(str(code[0]).encode())


def run_command(argv: list[str], shim_dir: str) -> int:
    """Run ``python ...`` or ``composer ...`` as the process's main program; its exit status."""
    try:
        if argv[0] == "composer":
            from composer.cli.launcher import main

            # The launcher starts its workers with sys.executable: the python shim.
            sys.executable = str(Path(shim_dir) / "python")
            sys.argv = argv
            return exit_status(main())
        run_python(argv[1:])
    except SystemExit as stop:
        return exit_status(stop.code)
    except BaseException as err:
        # As the interpreter prints it: without this module's frames.
        frames = traceback.extract_tb(err.__traceback__)
        shown = [f for f in frames if f.filename != __file__ and "runpy" not in f.filename]
        print("Traceback (most recent call last):", file=sys.stderr)
        print("".join(traceback.format_list(shown)), end="", file=sys.stderr)
        print("".join(traceback.format_exception_only(err)), end="", file=sys.stderr)
        return 1
    return 0


def exit_status(code: object) -> int:
    """The process exit status for ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_python(args: list[str]) -> None:
    """``python [options] (script | -m module | -c code | -) [args]``."""
    while args and args[0] in FLAG_OPTIONS | VALUE_OPTIONS:
        args = args[2:] if args[0] in VALUE_OPTIONS else args[1:]
    extra_paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if not args or args[0] == "-":
        set_path("", extra_paths)
        sys.argv = ["-", *args[1:]]
        exec_main(sys.stdin.read(), "<stdin>")
    elif args[0] == "-c":
        set_path("", extra_paths)
        sys.argv = ["-c", *args[2:]]
        exec_main(args[1], "<string>")
    elif args[0] == "-m":
        set_path(os.getcwd(), extra_paths)
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        script = Path(args[0]).resolve()  # __main__.__file__ is absolute, as in Python >= 3.9
        set_path(str(script.parent), extra_paths)
        sys.argv = list(args)
        exec_main(script.read_bytes(), str(script), {"__file__": str(script), "__cached__": None})


def set_path(first: str, extra_paths: list[str]) -> None:
    """``sys.path`` as a fresh interpreter has it: the script's folder, then ``PYTHONPATH``."""
    sys.path[0] = first
    sys.path[1:1] = [str(Path(p).resolve()) for p in extra_paths]


def exec_main(
    source: str | bytes, filename: str, attributes: dict[str, object] | None = None
) -> None:
    """Run ``source`` as the ``__main__`` module (with these module ``attributes``)."""
    main = types.ModuleType("__main__")
    main.__dict__.update(attributes or {})
    sys.modules["__main__"] = main
    exec(compile(source, filename, "exec"), main.__dict__)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
