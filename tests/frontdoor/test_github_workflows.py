"""The files under .github/: every workflow parses, each job says where it runs and has steps,
every action is pinned to a version, and every `make` target and every script or test path a
`run:` step names exists in this repository. Dependabot watches uv and the actions; the bug
report form asks for what ran, the command, the error and the versions."""

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import REPO

ROOT = REPO
GITHUB = ROOT / ".github"
WORKFLOW_DIR = GITHUB / "workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.y*ml"))

# pytest options whose value is the next argument (a marker, a keyword, a number), not a path.
PYTEST_VALUE_OPTIONS = frozenset(
    {"-m", "-k", "-p", "-c", "-n", "-o", "--maxfail", "--timeout", "--durations", "--basetemp"}
)
# `uv run` options whose value is the next argument.
UV_RUN_VALUE_OPTIONS = frozenset({"--extra", "--with", "--python", "--group", "--package", "-p"})
# A release tag (v4, v8.3.2) or a release branch (pypa's documented `release/v1`).
PINNED_REF = re.compile(r"^(v\d+(\.\d+){0,2}|release/v\d+)$")
FORM_FIELD_TYPES = frozenset({"markdown", "textarea", "input", "dropdown", "checkboxes"})


def load_yaml(path: Path) -> dict[str, Any]:
    """The YAML mapping in a file (failing the test if the file holds anything else)."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} does not hold a mapping"
    return data


def load_workflow(name: str) -> dict[str, Any]:
    """One workflow under .github/workflows by file name."""
    return load_yaml(WORKFLOW_DIR / name)


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    """The workflow's `on:` mapping. YAML 1.1 (PyYAML) reads the bare key `on` as True."""
    on = workflow.get("on", workflow.get(True))
    assert isinstance(on, dict), "`on:` should be a mapping of events"
    return on


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    """Every step of every job."""
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def uses(workflow: dict[str, Any]) -> list[str]:
    """The `uses:` of every step."""
    return [step["uses"] for step in steps(workflow) if "uses" in step]


def step_using(workflow: dict[str, Any], action: str) -> dict[str, Any]:
    """The first step that uses `action` (any version)."""
    found = [step for step in steps(workflow) if step.get("uses", "").split("@")[0] == action]
    assert found, f"no step uses {action}"
    return found[0]


def makefile_targets() -> set[str]:
    """The targets the Makefile defines (`name:` at the start of a line, not `:=`)."""
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, flags=re.MULTILINE)) - {".PHONY"}


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a `run:` script, each as its words (lines joined at `\\`,
    comments dropped, split at `&&`, `||`, `;` and `|`)."""
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"&&|\|\||;|\|", line):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:
                words = part.split()
            if words:
                commands.append(words)
    return commands


def program_and_args(words: list[str]) -> list[str]:
    """The words from the program on: leading `VAR=value`, `sudo` and `uv run [options]` dropped."""
    index = 0
    while index < len(words) and ("=" in words[index] or words[index] == "sudo"):
        index += 1
    if words[index : index + 2] == ["uv", "run"]:
        index += 2
        while index < len(words) and words[index].startswith("-"):
            index += 2 if words[index] in UV_RUN_VALUE_OPTIONS else 1
    return words[index:]


def pytest_paths(args: list[str]) -> list[str]:
    """The paths among pytest's arguments (node ids cut at `::`)."""
    paths = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg.startswith("-"):
            index += 2 if arg in PYTEST_VALUE_OPTIONS else 1
            continue
        paths.append(arg.split("::")[0])
        index += 1
    return paths


def references(script: str) -> tuple[list[str], list[str]]:
    """The `make` targets and the script or test paths that a `run:` script names."""
    targets: list[str] = []
    paths: list[str] = []
    for words in shell_commands(script):
        program, *args = program_and_args(words) or [""]
        if program == "make":
            targets += [arg for arg in args if not arg.startswith("-") and "=" not in arg]
        elif program == "pytest":
            paths += pytest_paths(args)
        elif program in {"python", "python3"} and args[:2] == ["-m", "pytest"]:
            paths += pytest_paths(args[2:])
        elif program in {"python", "python3"} and args and not args[0].startswith("-"):
            paths.append(args[0])
    return targets, paths


def workflow_references(workflow: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The `make` targets and paths named by all of a workflow's `run:` steps."""
    targets: list[str] = []
    paths: list[str] = []
    for step in steps(workflow):
        if "run" in step:
            step_targets, step_paths = references(step["run"])
            targets += step_targets
            paths += step_paths
    return targets, paths


def test_the_six_workflows_exist() -> None:
    names = {path.name for path in WORKFLOWS}
    expected = {"lint.yaml", "test.yaml", "docs.yaml", "gpu.yaml", "docker.yaml", "release.yaml"}
    assert expected <= names


def test_references_reads_make_targets_and_paths() -> None:
    script = """
    make lint test
    HF_HUB_OFFLINE=1 uv run --frozen --extra serve pytest tests/frontdoor -q -m gpu -k 'a or b'
    python -m pytest tests/test_registry.py::test_one --timeout 60  # a comment
    cd x && python3 scripts/demo.py --flag value | tee log
    python -c "print(1)"
    uv run --frozen pytest -m gpu
    """
    targets, paths = references(script)
    assert targets == ["lint", "test"]
    assert paths == ["tests/frontdoor", "tests/test_registry.py", "scripts/demo.py"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_workflow_jobs_run_somewhere_with_steps(path: Path) -> None:
    workflow = load_yaml(path)
    assert workflow.get("name")
    assert triggers(workflow)
    assert isinstance(workflow.get("permissions"), dict), "set minimal permissions per workflow"
    concurrency = workflow.get("concurrency")
    assert isinstance(concurrency, dict) and "github.workflow" in concurrency["group"]
    assert "cancel-in-progress" in concurrency
    assert workflow["jobs"]
    for name, job in workflow["jobs"].items():
        assert job.get("runs-on"), f"job {name} has no runs-on"
        assert isinstance(job.get("timeout-minutes"), int), f"job {name} has no timeout"
        assert job.get("steps"), f"job {name} has no steps"
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), f"job {name}: a step needs uses or run"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_actions_are_pinned_to_versions(path: Path) -> None:
    for action in uses(load_yaml(path)):
        name, _, ref = action.partition("@")
        assert name and PINNED_REF.match(ref), f"{action} is not pinned to a version"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_run_steps_name_real_targets_and_paths(path: Path) -> None:
    targets, paths = workflow_references(load_yaml(path))
    assert set(targets) <= makefile_targets(), f"unknown make targets in {path.name}"
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"{path.name} runs paths that do not exist: {missing}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_uv_cache_is_keyed_on_the_lockfile(path: Path) -> None:
    for step in steps(load_yaml(path)):
        if step.get("uses", "").startswith("astral-sh/setup-uv@"):
            glob = step.get("with", {}).get("cache-dependency-glob")
            assert glob is None or sorted(ROOT.glob(glob)) == [ROOT / "uv.lock"]


def test_lint_runs_make_lint() -> None:
    workflow = load_workflow("lint.yaml")
    assert workflow_references(workflow)[0] == ["lint"]
    assert {"push", "pull_request"} <= set(triggers(workflow))


def test_test_runs_make_test_on_311_and_312_with_uv_cache() -> None:
    workflow = load_workflow("test.yaml")
    assert workflow_references(workflow)[0] == ["test"]
    job = workflow["jobs"]["test"]
    assert job["strategy"]["matrix"]["python-version"] == ["3.11", "3.12"]
    assert job["timeout-minutes"] == 90
    setup_uv = step_using(workflow, "astral-sh/setup-uv")["with"]
    assert setup_uv["enable-cache"] is True
    assert setup_uv["cache-dependency-glob"] == "uv.lock"
    assert setup_uv["python-version"] == "${{ matrix.python-version }}"


def test_docs_runs_the_docs_tests_when_docs_change() -> None:
    workflow = load_workflow("docs.yaml")
    _, paths = workflow_references(workflow)
    assert paths and all(p.startswith(("tests/frontdoor", "tests/docs")) for p in paths)
    on = triggers(workflow)
    for event in ("push", "pull_request"):
        assert {"**.md", "mcli/**", "Dockerfile", ".github/**"} <= set(on[event]["paths"])


def test_gpu_runs_the_gpu_tests_on_a_self_hosted_gpu_runner() -> None:
    workflow = load_workflow("gpu.yaml")
    on = triggers(workflow)
    assert "workflow_dispatch" in on
    assert on["push"]["branches"] == ["main"]
    assert {"self-hosted", "gpu"} <= set(workflow["jobs"]["gpu"]["runs-on"])
    runs = [shlex.split(step["run"]) for step in steps(workflow) if "run" in step]
    assert ["uv", "run", "--frozen", "pytest", "-m", "gpu"] in runs


def test_docker_builds_the_root_dockerfile_for_ghcr_on_version_tags() -> None:
    workflow = load_workflow("docker.yaml")
    assert triggers(workflow)["push"]["tags"] == ["v*"]
    assert workflow["permissions"]["packages"] == "write"
    build = step_using(workflow, "docker/build-push-action")["with"]
    assert build["context"] == "." and build["file"] == "./Dockerfile"
    assert step_using(workflow, "docker/login-action")["with"]["registry"] == "ghcr.io"


def test_release_builds_with_uv_and_publishes_with_trusted_publishing() -> None:
    workflow = load_workflow("release.yaml")
    assert triggers(workflow)["push"]["tags"] == ["v*"]
    assert workflow["concurrency"]["cancel-in-progress"] is False
    runs = [step["run"] for step in steps(workflow) if "run" in step]
    assert "uv build" in runs
    publish = workflow["jobs"]["publish"]
    assert publish["needs"] == "build"
    assert publish["environment"]["name"] == "pypi"
    assert publish["permissions"] == {"id-token": "write"}
    assert [step["uses"] for step in publish["steps"]][-1].startswith(
        "pypa/gh-action-pypi-publish@"
    )
    # Only the publishing job may mint an OIDC token.
    assert "id-token" not in workflow["permissions"]


def test_dependabot_watches_uv_and_github_actions_weekly() -> None:
    config = load_yaml(GITHUB / "dependabot.yml")
    assert config["version"] == 2
    updates = {update["package-ecosystem"]: update for update in config["updates"]}
    assert set(updates) == {"uv", "github-actions"}
    for update in updates.values():
        assert update["directory"] == "/"
        assert update["schedule"]["interval"] == "weekly"
    assert (ROOT / "pyproject.toml").is_file() and (ROOT / "uv.lock").is_file()


def test_bug_report_form_asks_what_ran_command_error_and_versions() -> None:
    form = load_yaml(GITHUB / "ISSUE_TEMPLATE" / "bug_report.yml")
    assert form["name"] and form["description"]
    fields = form["body"]
    assert {field["type"] for field in fields} <= FORM_FIELD_TYPES
    ids = [field["id"] for field in fields if field["type"] != "markdown"]
    assert len(ids) == len(set(ids))
    for field in fields:
        if field["type"] != "markdown":
            assert field["attributes"]["label"]
    required = {
        field["id"] for field in fields if field.get("validations", {}).get("required") is True
    }
    assert {"what-ran", "command", "error", "versions"} <= required
    by_id = {field["id"]: field for field in fields if "id" in field}
    assert by_id["command"]["attributes"]["render"] == "yaml"
    assert by_id["error"]["type"] == "input"
    assert "uv pip list" in by_id["versions"]["attributes"]["description"]


def test_issue_template_config_is_valid() -> None:
    config = load_yaml(GITHUB / "ISSUE_TEMPLATE" / "config.yml")
    assert isinstance(config["blank_issues_enabled"], bool)
    for link in config.get("contact_links", []):
        assert {"name", "url", "about"} <= set(link)
