"""The evaluation command: every model of an ``EvalConfig`` on its ICL tasks and eval loaders.

For each entry of ``models`` (in order) the command builds the tokenizer and model, loads the
weights named by ``load_path`` (a Composer checkpoint, local or remote, or a Hugging Face model
folder), and runs one Composer ``Trainer.eval()`` over:

* the ``icl_tasks`` (one evaluator per task, few-shot count and category),
* the ``eval_loader`` / ``eval_loaders`` (cross-entropy, perplexity and token accuracy),
* and, with ``eval_gauntlet``, the gauntlet's composite scores.

Rank 0 writes the results to ``results_folder`` as ``results.csv`` (one row per model x task x
few-shot x metric), ``gauntlet.csv`` and ``results.json``; ``render_tables`` makes the markdown
tables (ICL, eval loaders, gauntlet) that ``scripts/eval/eval.py`` prints.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Required, TypedDict, cast

import torch
from composer import Trainer
from composer.devices import Device
from composer.loggers import InMemoryLogger, LoggerDestination
from composer.models import ComposerModel
from composer.utils import dist, get_device, reproducibility
from peft import PeftModel
from transformers import PreTrainedModel

from llmfoundry.callbacks.eval_gauntlet_config import GauntletConfig
from llmfoundry.command_utils.eval_results import (
    EvalResults,
    EvalThroughput,
    ModelResults,
    collect_rows,
    gauntlet_categories,
    render_tables,
    write_results,
)
from llmfoundry.command_utils.evaluators import (
    build_gauntlet,
    build_run_evaluators,
    eval_loader_sections,
    gauntlet_config,
)
from llmfoundry.command_utils.parallelism import build_parallelism_config
from llmfoundry.command_utils.preflight import (
    check_eval_sections,
    check_loader_section,
    check_model_section,
    check_named_sections,
    check_tokenizer_section,
)
from llmfoundry.command_utils.run_setup import (
    leave_process_group,
    log_run_config,
    run_name_of,
    runtime_precision,
    start_run,
)
from llmfoundry.data.text_data import stop_persistent_workers
from llmfoundry.utils.builders import (
    build_callbacks,
    build_composer_model_from_section,
    build_loggers,
    build_tokenizer_from_section,
)
from llmfoundry.utils.checkpoint_utils import check_load_path
from llmfoundry.utils.composer_shortcuts import trainer_env_without_cpu_probe
from llmfoundry.utils.config_checks import PositiveInt, check_value
from llmfoundry.utils.config_utils import EvalConfig, config_from_mapping, load_config
from llmfoundry.utils.exceptions import ConfigError, MissingFileError
from llmfoundry.utils.object_store import is_remote

logger = logging.getLogger(__name__)


class ModelSection(TypedDict, total=False):
    """One ``models`` entry as a YAML gives it (checked by ``config_checks``)."""

    model_name: Required[str | int]
    model: Required[dict[str, Any]]
    tokenizer: dict[str, Any] | None
    load_path: str | None


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One validated entry of ``models``."""

    index: int
    model_name: str
    model: dict[str, Any]
    tokenizer: dict[str, Any]
    load_path: str | None

    @property
    def where(self) -> str:
        return f"models[{self.index}]"


# --------------------------------------------------------------------------- config


def model_sections(cfg: EvalConfig) -> list[Any]:
    """The ``models`` list, or the one model given at the top level (``model``, ``tokenizer``,
    ``load_path``, ``model_name``; the name defaults to the model's ``name``).

    Raises:
        ConfigError: on both forms at once, neither, or a top-level model without a tokenizer.
    """
    if cfg.model is None:
        for key in ("tokenizer", "load_path", "model_name"):
            if getattr(cfg, key) is not None:
                raise ConfigError(f"{key} is set at the top level but model is not; add model")
        if not cfg.models:
            raise ConfigError(
                "models is empty; list at least one {model_name, model, tokenizer} entry (or "
                "give one model at the top level: model, tokenizer, load_path)"
            )
        return list(cfg.models)
    if cfg.models:
        raise ConfigError("set model (one model) or models (a list), not both")
    if cfg.tokenizer is None:
        raise ConfigError("model is set at the top level, so tokenizer must be too")
    section: dict[str, Any] = {
        "model_name": cfg.model_name or str(cfg.model.get("name", "model")),
        "model": cfg.model,
        "tokenizer": cfg.tokenizer,
    }
    if cfg.load_path is not None:
        section["load_path"] = cfg.load_path
    return [section]


def parse_models(cfg: EvalConfig) -> list[ModelEntry]:
    """Validate the models to evaluate before anything is built.

    Raises:
        ConfigError: on an empty list, a non-mapping entry, an unknown or missing key, or a
            ``model_name`` used twice.
        MissingFileError: on a local ``load_path`` that does not exist.
    """
    entries: list[ModelEntry] = []
    for index, raw in enumerate(model_sections(cfg)):
        where = f"models[{index}]"
        check_value(raw, ModelSection, where)
        model = dict(raw["model"])
        load_path = None if raw.get("load_path") is None else str(raw["load_path"])
        if load_path is not None and not is_remote(load_path) and not Path(load_path).exists():
            raise MissingFileError(
                f"{where}.load_path '{load_path}' does not exist; give a Composer checkpoint "
                "or a Hugging Face model folder"
            )
        tokenizer = raw.get("tokenizer")
        if tokenizer is None:
            # A Hugging Face folder or hub model carries its own tokenizer.
            source = load_path if load_path and is_hf_folder(load_path) else None
            source = source or model.get("pretrained_model_name_or_path")
            if source is None:
                raise ConfigError(
                    f"{where}.tokenizer is missing; give {{name: <hub name or folder>}}"
                )
            tokenizer = {"name": str(source)}
        entries.append(ModelEntry(index, str(raw["model_name"]), model, dict(tokenizer), load_path))
    first_use: dict[str, ModelEntry] = {}
    for entry in entries:
        earlier = first_use.setdefault(entry.model_name, entry)
        if earlier is not entry:
            raise ConfigError(
                f"{entry.where}.model_name '{entry.model_name}' is used twice (also by "
                f"{earlier.where}); give each model its own name (it labels the result rows)"
            )
    return entries


def check_eval_config(cfg: EvalConfig) -> None:
    """Fail on configs that evaluate nothing or contradict themselves, before any model loads.

    Raises:
        ConfigError: nothing to evaluate, both ``eval_loader`` and ``eval_loaders``, a
            non-positive batch size, or an invalid section (see ``check_eval_sections``).
    """
    if not (cfg.icl_tasks or cfg.icl_tasks_str or cfg.eval_loader or cfg.eval_loaders):
        raise ConfigError(
            "nothing to evaluate: give icl_tasks (a list or a YAML path) and/or eval_loader / "
            "eval_loaders"
        )
    check_value(cfg.device_eval_batch_size, PositiveInt, "device_eval_batch_size")
    check_eval_sections(cfg)


def is_hf_folder(path: str) -> bool:
    """Whether ``path`` is a local Hugging Face model folder (it has a ``config.json``)."""
    return not is_remote(path) and (Path(path) / "config.json").is_file()


# --------------------------------------------------------------------------- model loading


def model_section(entry: ModelEntry) -> dict[str, Any]:
    """The ``model:`` section the entry's model is built from (a Hugging Face ``load_path``
    folder is the model of an ``hf_causal_lm`` entry)."""
    section = dict(entry.model)
    if entry.load_path and is_hf_folder(entry.load_path) and section.get("name") == "hf_causal_lm":
        # The folder is the model: load it directly rather than building and overwriting.
        section["pretrained_model_name_or_path"] = entry.load_path
        section["pretrained"] = True
    return section


def check_models_and_sections(cfg: EvalConfig, entries: Sequence[ModelEntry]) -> None:
    """Check every model, tokenizer, loader, callback and logger section before any is built.

    Raises:
        ConfigError: naming the first bad key (``models[0].model.n_layers``) and what it allows.
    """
    for entry in entries:
        section = model_section(entry)
        check_model_section(section, f"{entry.where}.model")
        check_tokenizer_section(entry.tokenizer, f"{entry.where}.tokenizer")
        if cfg.fsdp_config is not None and section.get("load_in_8bit"):
            raise ConfigError(
                f"{entry.where}.model.load_in_8bit: FSDP cannot shard 8-bit (bitsandbytes) "
                "weights, as in LLM Foundry; remove fsdp_config or set load_in_8bit: false"
            )
    for _, path, section in eval_loader_sections(cfg.eval_loader, cfg.eval_loaders):
        check_loader_section(path, section)
    check_named_sections(cfg.callbacks, cfg.loggers)


def build_model(entry: ModelEntry) -> tuple[ComposerModel, Any, str | None]:
    """Build the entry's tokenizer and model, with weights from a Hugging Face ``load_path``.

    Returns:
        The model, its tokenizer, and the Composer checkpoint the Trainer should load (None
        when there is none or the weights came from a Hugging Face folder).

    Raises:
        ConfigError: if a Hugging Face folder's weights do not fit the model.
    """
    section = model_section(entry)
    hf_folder = entry.load_path if entry.load_path and is_hf_folder(entry.load_path) else None
    tokenizer = build_tokenizer_from_section(entry.tokenizer)
    model = build_composer_model_from_section(section, tokenizer)
    if hf_folder and section.get("name") != "hf_causal_lm":
        load_hf_weights(model, hf_folder, f"{entry.where}.load_path")
    return model, tokenizer, None if hf_folder else entry.load_path


def load_hf_weights(model: ComposerModel, folder: str, where: str) -> None:
    """Copy a Hugging Face folder's weights into ``model.model`` (same architecture, every key).

    Raises:
        ConfigError: if the wrapped model is not a ``PreTrainedModel``, or the folder's weights
            miss, add or reshape any parameter of the model.
    """
    inner = getattr(model, "model", None)
    if isinstance(inner, PeftModel):
        raise ConfigError(
            f"{where} '{folder}': a model with a LoRA adapter loads its base weights from "
            "model.pretrained_model_name_or_path and the adapter from "
            "model.pretrained_lora_id_or_path; remove load_path"
        )
    if not isinstance(inner, PreTrainedModel):
        raise ConfigError(
            f"{where} '{folder}' is a Hugging Face folder, but model.name builds "
            f"{type(inner).__name__}, which cannot load one; use a Composer checkpoint"
        )
    try:
        loaded, info = cast(
            tuple[PreTrainedModel, dict[str, Any]],
            type(inner).from_pretrained(
                folder, config=inner.config, output_loading_info=True, dtype=torch.float32
            ),
        )
    except (OSError, RuntimeError, ValueError) as err:
        raise ConfigError(
            f"{where} '{folder}' could not be loaded into {type(inner).__name__}: "
            f"{str(err).splitlines()[0]}"
        ) from err
    problems = [
        f"{name} {list(info.get(name) or [])[:3]}"
        for name in ("missing_keys", "unexpected_keys", "mismatched_keys")
        if info.get(name)
    ]
    if problems:
        raise ConfigError(
            f"{where} '{folder}' does not fit the model section ({type(inner).__name__}): "
            f"{'; '.join(problems)}; make model match the folder's config.json"
        )
    inner.load_state_dict(loaded.state_dict())
    del loaded


# --------------------------------------------------------------------------- the command


@dataclasses.dataclass
class RunSetup:
    """What every model of an eval run shares: device, precision, run name, the gauntlet (read
    once)."""

    device: Device
    precision: str
    run_name: str | None
    gauntlet: GauntletConfig | None


def evaluate_model(
    cfg: EvalConfig,
    entry: ModelEntry,
    run: RunSetup,
    logged_config: Mapping[str, Any] | None,
    extra_loggers: Sequence[LoggerDestination],
) -> tuple[ModelResults, str]:
    """Evaluate one ``models`` entry.

    Returns:
        Its results and the Trainer's run name.
    """
    reproducibility.seed_all(cfg.seed)
    device, precision, run_name = run.device, run.precision, run.run_name
    model, tokenizer, checkpoint = build_model(entry)
    has_adapter = isinstance(getattr(model, "model", None), PeftModel)
    if checkpoint is not None:  # read safely and checked against the model, in one line
        check_load_path(checkpoint, model, f"{entry.where}.load_path", strict=not has_adapter)
    logger.info("%s: evaluating %s", entry.where, entry.model_name)
    evaluators = build_run_evaluators(cfg, tokenizer, model, cfg.device_eval_batch_size)
    gauntlet = build_gauntlet(run.gauntlet)
    throughput = EvalThroughput()
    memory = InMemoryLogger()
    with trainer_env_without_cpu_probe():
        trainer = Trainer(
            run_name=run_name,
            model=model,
            eval_dataloader=evaluators,
            eval_subset_num_batches=cfg.eval_subset_num_batches,
            callbacks=[*build_callbacks(cfg.callbacks), *gauntlet, throughput],
            loggers=[*build_loggers(cfg.loggers), memory, *extra_loggers],
            device=device,
            precision=precision,
            parallelism_config=build_parallelism_config(
                cfg.fsdp_config,
                None,
                device.name,
                dist.get_world_size(),
                dist.get_local_world_size(),
            ),
            load_path=checkpoint,
            load_weights_only=True,
            # An adapter's checkpoint may hold only the adapter's weights.
            load_strict_model_weights=not has_adapter,
            progress_bar=False,
            log_to_console=False,
            console_log_interval=cfg.console_log_interval,
            seed=cfg.seed,
            dist_timeout=cfg.dist_timeout,
        )
    logged = None if logged_config is None else {**logged_config, "model_name": entry.model_name}
    log_run_config(trainer, logged if cfg.log_config else None, cfg.metadata)
    trainer.eval()
    rows = collect_rows(
        entry.model_name,
        trainer,
        memory,
        gauntlet_categories(run.gauntlet),
    )
    scores = dict(gauntlet[0].last_scores) if gauntlet else {}
    name = trainer.state.run_name
    trainer.close()
    for evaluator in evaluators:  # the next model's run should not share memory with them
        stop_persistent_workers(evaluator.dataloader.dataloader)
    return ModelResults(entry.model_name, rows, scores, throughput.records), name


def evaluate(
    cfg: EvalConfig | Mapping[str, Any],
    logged_config: Mapping[str, Any] | None = None,
    extra_loggers: Sequence[LoggerDestination] = (),
) -> EvalResults:
    """Evaluate every model of ``cfg``; rank 0 writes the result files and logs the tables.

    Args:
        cfg: the validated eval config, or the unresolved one as a dict or ``DictConfig`` (as
            LLM Foundry's ``evaluate(cfg)`` takes it).
        logged_config: the resolved config, logged as hyper-parameters when ``log_config``.
        extra_loggers: logger destinations added to the config's (each model's Trainer gets them).

    Returns:
        The results of every model (the same on every rank) and the files written.
    """
    if not isinstance(cfg, EvalConfig):
        cfg, logged_config = config_from_mapping(cfg, EvalConfig)
    start_run(cfg.python_log_level, cfg.code_paths)
    check_eval_config(cfg)
    entries = parse_models(cfg)
    check_models_and_sections(cfg, entries)
    device = get_device(None)
    # An unknown precision fails here, before any model loads (and CPU's fallback warns once).
    run = RunSetup(
        device=device,
        precision=runtime_precision(cfg.precision, device),
        run_name=run_name_of(cfg.run_name),
        gauntlet=gauntlet_config(cfg),
    )
    dist.initialize_dist(device, timeout=cfg.dist_timeout)
    models: list[ModelResults] = []
    for entry in entries:
        result, trainer_run_name = evaluate_model(cfg, entry, run, logged_config, extra_loggers)
        # Every model's Trainer shares the first one's (possibly generated) name.
        run.run_name = run.run_name or trainer_run_name
        models.append(result)
    run_name = run.run_name
    assert run_name is not None
    results = EvalResults(run_name, models, [])
    if dist.get_global_rank() == 0 and cfg.results_folder:
        folder = Path(cfg.results_folder.replace("{run_name}", run_name))
        results.files = write_results(results, folder, cfg.metadata)
        logger.info("results written to %s", folder)
    return results


def eval_from_yaml(yaml_path: str | Path, overrides: Sequence[str] = ()) -> EvalResults:
    """Load ``yaml_path`` with dotlist ``overrides`` and evaluate; the entry point of ``eval.py``."""
    cfg, resolved = load_config(yaml_path, overrides, EvalConfig)
    results = evaluate(cfg, resolved)
    leave_process_group()
    return results


__all__ = [
    "EvalResults",
    "ModelResults",
    "eval_from_yaml",
    "evaluate",
    "render_tables",
    "write_results",
]
