"""The documents' shell commands run as written, so the docs cannot rot silently.

Every fenced block of each document below is classified (see ``markdown_blocks.py``):
```` ```bash ```` blocks run; ```` ```bash gpu|hub|cluster ```` and ```` ```bash norun <why> ````
blocks are only syntax-checked (``bash -n``), and the repository scripts and YAMLs they name must
exist; ```` ```python ````, ```` ```yaml ```` and ```` ```json ```` blocks are compiled or parsed.
Any other block fails the test.

How the runnable blocks run (``test_runnable_blocks_run``, one test per document):

* each document gets a sandbox folder laid out like the repository root: copies of ``scripts/``,
  ``mcli/`` and ``benchmarks/``, links to ``llmfoundry/`` and ``scripts/eval/local_data/``, and a
  copy of a ``demo_out/`` made by the demo's own code (``run_demo``, on a small corpus, two
  batches), which is what `make demo` leaves behind and what the READMEs' examples start from;
* its blocks run in document order, each as ``bash -c 'set -euo pipefail; <block>'`` with the
  sandbox as working directory (so later blocks see what earlier ones wrote), standard input
  empty (``hf_chat.py`` sees end of input and exits), offline (``HF_HUB_OFFLINE=1``, ...), with
  one torch thread per process, and ``python``/``composer`` first on ``PATH``: shims of a warm
  interpreter that has already imported torch, transformers and Composer (``warm_python.py``;
  ``DOCS_TEST_COLD_PYTHON=1`` uses this virtual environment's interpreter instead, much slower);
* the first failing block fails the test with its ``file:line``, exit status and output tail.

`make demo` and `make test` themselves are not run here (``norun``): tests/command_utils/
test_demo.py runs the demo's pipeline, and CI runs the suite.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests import REPO
from tests.docs.conftest import DocsSession
from tests.docs.markdown_blocks import (
    MARKERS,
    Block,
    classification_error,
    fenced_blocks,
    repo_paths,
)

ROOT = REPO
DOCS = (
    "README.md",
    "TUTORIAL.md",
    "scripts/data_prep/README.md",
    "scripts/train/README.md",
    "scripts/eval/README.md",
    "scripts/inference/README.md",
    "mcli/README.md",
    "benchmarks/README.md",
)
BLOCK_TIMEOUT_S = 300
OUTPUT_TAIL_LINES = 60


def blocks_of(doc: str) -> list[Block]:
    """The document's fenced blocks, with its path relative to the repository in messages."""
    return fenced_blocks(ROOT / doc, doc)


@pytest.mark.parametrize("doc", DOCS)
def test_every_block_is_classified_and_well_formed(doc: str) -> None:
    blocks = blocks_of(doc)
    errors = [error for block in blocks if (error := classification_error(block))]
    for block in blocks:
        errors += well_formed_errors(block)
    assert not errors, "\n".join(errors)


def well_formed_errors(block: Block) -> list[str]:
    """Syntax errors in a block, and repository files it names that do not exist."""
    errors = [
        f"{block.where}: names {path}, which does not exist"
        for path in repo_paths(block.text)
        if not (ROOT / path).exists()
    ]
    if block.language == "bash":
        check = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True)
        if check.returncode:
            errors.append(f"{block.where}: bash -n: {check.stderr.strip()}")
    elif block.language == "python":
        try:
            compile(block.text, block.where, "exec")
        except SyntaxError as err:
            errors.append(f"{block.where}: {err}")
    elif block.language in ("yaml", "json"):
        try:
            yaml.safe_load(block.text)  # JSON is YAML
        except yaml.YAMLError as err:
            errors.append(f"{block.where}: {' '.join(str(err).split())}")
    return errors


def test_fenced_blocks_reads_info_strings_nested_fences_and_lines(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Title\n\n```bash\necho one\n```\n\n- a list item:\n\n  ```bash gpu\n  nvidia-smi\n"
        "  ```\n\n````text\n```\nnot a fence\n````\n\n```console\n$ ls\n```\n\n```\nbare\n```\n"
        "\n```bash norun waits for a browser\nweb_ui\n```\n\n```bash norun\nx\n```\n"
    )
    blocks = fenced_blocks(doc)
    assert [(b.line, b.language, b.marker, b.reason, b.text) for b in blocks] == [
        (3, "bash", None, "", "echo one\n"),
        (9, "bash", "gpu", "", "nvidia-smi\n"),
        (13, "text", None, "", "```\nnot a fence\n"),
        (18, "console", None, "", "$ ls\n"),
        (22, "", None, "", "bare\n"),
        (26, "bash", "norun", "waits for a browser", "web_ui\n"),
        (30, "bash", "norun", "", "x\n"),
    ]
    assert [b.runs for b in blocks] == [True, False, False, False, False, False, False]
    errors = [classification_error(b) for b in blocks]
    assert errors[:3] == [None, None, None]
    assert errors[3] is not None and errors[3].startswith("doc.md:18: a ```console block")
    assert errors[4] is not None and errors[4].startswith("doc.md:22: a ``` block")
    assert errors[5:] == [None, "doc.md:30: say why: ```bash norun <reason>"]
    unknown = Block(doc, "doc.md", 1, "bash", "later", "", "true\n")
    assert classification_error(unknown) == (
        f"doc.md:1: unknown marker ```bash later; use one of {sorted(MARKERS)}"
    )
    assert repo_paths("python scripts/a.py mcli/<file>.yaml x/scripts/b.py llmfoundry/c.py") == [
        "llmfoundry/c.py",
        "scripts/a.py",
    ]


def make_sandbox(folder: Path, demo_out: Path) -> Path:
    """A folder laid out like the repository root, with `make demo`'s outputs."""
    folder.mkdir(parents=True)
    # Copies, so that what a block writes stays in the sandbox; links for what no block writes to
    # (the package, and the eval data folder, which may hold gigabytes of downloaded benchmarks).
    ignore = shutil.ignore_patterns("__pycache__", "local_data")
    for name in ("scripts", "mcli", "benchmarks"):
        shutil.copytree(ROOT / name, folder / name, ignore=ignore)
    (folder / "scripts/eval/local_data").symlink_to(ROOT / "scripts/eval/local_data")
    (folder / "llmfoundry").symlink_to(ROOT / "llmfoundry")
    shutil.copytree(demo_out, folder / "demo_out", symlinks=True)
    return folder


def run_block(text: str, sandbox: Path, env: dict[str, str], log: Path) -> tuple[int, str]:
    """Run a block's text in the sandbox, its output going to ``log``; the exit status (-1: timed
    out) and the output."""
    with log.open("w") as out:
        process = subprocess.Popen(
            ["bash", "-c", "set -euo pipefail\n" + text],
            cwd=sandbox,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            status = process.wait(timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            status = -1
    return status, log.read_text(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS)
def test_runnable_blocks_run(doc: str, docs_session: DocsSession, tmp_path: Path) -> None:
    runnable = [block for block in blocks_of(doc) if block.runs]
    sandbox = make_sandbox(tmp_path / "repo", docs_session.demo_out)
    for block in runnable:
        start = time.monotonic()
        log = tmp_path / f"block-{block.line}.log"
        status, output = run_block(block.text, sandbox, docs_session.env, log)
        print(f"{block.where}: exit {status} in {time.monotonic() - start:.1f} s")
        if status != 0:
            tail = "\n".join(output.splitlines()[-OUTPUT_TAIL_LINES:])
            reason = f"timed out after {BLOCK_TIMEOUT_S} s" if status == -1 else f"exit {status}"
            pytest.fail(f"{doc}:{block.line}: the block failed ({reason}); output tail:\n{tail}")


# Runs under both interpreters; the warm one must print exactly what the real one prints.
PYTHON_PROBE = r"""
cat > prog.py <<'EOF'
import os, sys
here = os.path.dirname(os.path.abspath(__file__))
print(sys.argv, os.path.basename(__file__), os.path.isabs(__file__), sys.path[0] == here)
print(os.environ.get("DOCS_PROBE"), repr(sys.stdin.read()))
sys.exit(int(sys.argv[1]))
EOF
mkdir -p pkg && printf 'import sys\nprint("module", __name__, sys.argv[1:])\n' > pkg/mod.py
echo piped | DOCS_PROBE=yes python prog.py 0 a 'b c'
python prog.py 3 < /dev/null || echo "exit $?"
python -u -c 'import sys; print("c", sys.argv, repr(sys.path[0]))' x y
PYTHONPATH=pkg python -c 'import mod'
python -m pkg.mod q
echo 'print("stdin", __name__)' | python -
python -c 'raise ValueError("boom")' 2>&1 || echo "exit $?"
python -c 'import time; time.sleep(60)' & SLEEPER=$!
sleep 1; kill $SLEEPER; wait $SLEEPER || echo "killed: exit $?"
"""


@pytest.mark.slow
def test_warm_python_behaves_like_python(docs_session: DocsSession, tmp_path: Path) -> None:
    outputs = []
    for name, env in (("warm", docs_session.env), ("cold", docs_session.cold_env)):
        (tmp_path / name).mkdir()
        status, output = run_block(PYTHON_PROBE, tmp_path / name, env, tmp_path / f"{name}.log")
        assert status == 0, output
        outputs.append(output)
    warm, cold = outputs
    assert warm == cold
    assert "['prog.py', '0', 'a', 'b c'] prog.py True True\nyes 'piped\\n'\n" in warm
    assert "exit 3\n" in warm and "killed: exit 143\n" in warm
    assert "ValueError: boom\nexit 1\n" in warm
