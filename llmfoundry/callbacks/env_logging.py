"""Log the software and hardware a run ran on, as hyper-parameters, when fit starts."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

DEFAULT_PACKAGES = (
    "llm-foundry",
    "mosaicml",
    "mosaicml-streaming",
    "torch",
    "transformers",
    "datasets",
    "peft",
    "flash_attn",
    "megablocks",
    "grouped-gemm",
)
# Only these are ever logged unless the config names others: env vars can hold secrets.
DEFAULT_ENV_VARS = (
    "CUDA_VISIBLE_DEVICES",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "OMP_NUM_THREADS",
    "PYTORCH_CUDA_ALLOC_CONF",
    "NCCL_DEBUG",
    "FSDP_VERSION",
    "RUN_NAME",
)


class EnvironmentLoggingCallback(Callback):
    """At fit start, log ``{'environment_data': {...}}`` as hyper-parameters on every logger.

    Sections (each switched by its flag): ``package_versions`` (None for a package that is not
    installed), ``git_info`` (commit and branch of each git checkout directly under
    ``workspace_dir``; skipped when the folder does not exist), ``nvidia`` (CUDA, cuDNN and NCCL
    versions), ``docker`` (whether the process runs in a container), ``system_info`` (Python, OS,
    host, CPU and memory), ``gpu_info`` (device type, count, name and memory), ``distributed_info``
    (world size, ranks) and ``env_vars`` (the set ones among ``env_vars``).

    Differences from LLM Foundry: ``gpu_info`` and ``distributed_info`` are on by default,
    ``docker`` is read locally (no query to the MosaicML platform), and ``env_vars`` is ours.

    Args:
        workspace_dir: folder whose git checkouts are logged.
        log_git: log ``git_info``.
        log_nvidia: log ``nvidia``.
        log_docker: log ``docker``.
        log_packages: log ``package_versions``.
        log_system: log ``system_info``.
        log_gpu: log ``gpu_info``.
        log_distributed: log ``distributed_info``.
        packages_to_log: distribution names to log (default: LLM Foundry's stack).
        env_vars: environment variables to log when set (default: launcher and CUDA settings).
    """

    def __init__(
        self,
        workspace_dir: str = "/workspace",
        log_git: bool = True,
        log_nvidia: bool = True,
        log_docker: bool = True,
        log_packages: bool = True,
        log_system: bool = False,
        log_gpu: bool = True,
        log_distributed: bool = True,
        packages_to_log: Sequence[str] | None = None,
        env_vars: Sequence[str] | None = None,
    ) -> None:
        self.workspace_dir = workspace_dir
        self.log_git = log_git
        self.log_nvidia = log_nvidia
        self.log_docker = log_docker
        self.log_packages = log_packages
        self.log_system = log_system
        self.log_gpu = log_gpu
        self.log_distributed = log_distributed
        self.packages_to_log = list(packages_to_log or DEFAULT_PACKAGES)
        self.env_vars = list(DEFAULT_ENV_VARS if env_vars is None else env_vars)

    def fit_start(self, state: State, logger: Logger) -> None:
        del state
        logger.log_hyperparameters({"environment_data": self.collect()})

    def collect(self) -> dict[str, Any]:
        """The environment data, by section."""
        data: dict[str, Any] = {}
        if self.log_git:
            data["git_info"] = git_checkouts(Path(self.workspace_dir))
        if self.log_packages:
            data["package_versions"] = {
                name: package_version(name) for name in self.packages_to_log
            }
        if self.log_nvidia:
            data["nvidia"] = nvidia_info()
        if self.log_docker:
            data["docker"] = {
                "in_container": Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()
            }
        if self.log_system:
            data["system_info"] = system_info()
        if self.log_gpu:
            data["gpu_info"] = gpu_info()
        if self.log_distributed:
            data["distributed_info"] = {
                "world_size": dist.get_world_size(),
                "local_world_size": dist.get_local_world_size(),
                "node_rank": dist.get_node_rank(),
                "rank": dist.get_global_rank(),
                "local_rank": dist.get_local_rank(),
            }
        data["env_vars"] = {name: os.environ[name] for name in self.env_vars if name in os.environ}
        return data


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_checkouts(workspace: Path) -> dict[str, dict[str, str]]:
    """``{folder: {commit_hash, branch}}`` for each git checkout directly under ``workspace``."""
    if not workspace.is_dir():
        return {}
    found: dict[str, dict[str, str]] = {}
    for folder in sorted(p for p in workspace.iterdir() if (p / ".git").exists()):
        commit = _git(folder, "rev-parse", "HEAD")
        if commit is not None:
            branch = _git(folder, "rev-parse", "--abbrev-ref", "HEAD") or ""
            found[folder.name] = {"commit_hash": commit, "branch": branch}
    return found


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def nvidia_info() -> dict[str, Any]:
    """CUDA, cuDNN and NCCL versions, or ``{'available': False}`` without CUDA."""
    if not torch.cuda.is_available():
        return {"available": False}
    # torch.cuda.nccl is loaded lazily and missing from the type stubs.
    nccl_module = getattr(torch.cuda, "nccl", None)
    nccl = nccl_module.version() if nccl_module is not None else None
    return {
        "cuda_version": torch.version.cuda,
        "cudnn_version": str(torch.backends.cudnn.version()),
        "nccl_version": ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl),
    }


def gpu_info() -> dict[str, Any]:
    """The accelerator this process trains on: type, count, name and memory."""
    if not torch.cuda.is_available():
        return {"available": False, "device": "cpu"}
    index = torch.cuda.current_device()
    return {
        "available": True,
        "device": "cuda",
        "count": torch.cuda.device_count(),
        "model": torch.cuda.get_device_name(index),
        "memory_total": torch.cuda.get_device_properties(index).total_memory,
    }


def system_info() -> dict[str, Any]:
    """Python, OS, host name, CPU and memory of this machine."""
    memory = psutil.virtual_memory()
    return {
        "python_version": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "hostname": socket.gethostname(),
        "cpu": {
            "model": platform.processor(),
            "cores": psutil.cpu_count(logical=False),
            "threads": psutil.cpu_count(logical=True),
        },
        "memory": {"total": memory.total, "available": memory.available},
    }
