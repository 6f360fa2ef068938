"""Bad run configs: each fails in one line naming the full key path and what it allows, with
no traceback, before anything is built, and leaves no folder behind.

Every case runs the command's ``main(argv)`` in this process on a small YAML whose data and
tokenizer paths do not exist: a config check that passed would reach them and fail otherwise,
so each case also shows that its check comes first. The base YAMLs themselves pass every check
(``test_the_base_configs_pass_the_checks``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from llmfoundry.cli.commands.eval import main as eval_main
from llmfoundry.cli.commands.train import main as train_main
from tests.fixtures import mpt_yaml

from .cli_case import assert_one_line_error, files_under, run_cli

TRAIN_YAML = (
    """
variables:
  max_seq_len: 64
  global_seed: 7
max_seq_len: ${variables.max_seq_len}
run_name: bad-input
model:
"""
    + mpt_yaml(
        2,
        max_seq_len="${variables.max_seq_len}",
        ffn_config={"ffn_type": "mptmlp"},
        init_config={"name": "kaiming_normal_"},
    )
    + """tokenizer:
  name: {missing}/tokenizer
train_loader:
  name: text
  dataset:
    local: {missing}/mds
    split: train
    shuffle: true
    max_seq_len: ${variables.max_seq_len}
  drop_last: true
  num_workers: 0
optimizer:
  name: decoupled_adamw
  lr: 3.0e-3
  betas: [0.9, 0.95]
scheduler:
  name: constant_with_warmup
  t_warmup: 0ba
max_duration: 4ba
eval_interval: 2ba
global_train_batch_size: 8
device_train_microbatch_size: 4
precision: fp32
seed: ${variables.global_seed}
python_log_level: null
callbacks:
  speed_monitor:
    window_size: 2
loggers:
  file:
    filename: {missing}/log.txt
algorithms:
  gradient_clipping:
    clipping_type: norm
    clipping_threshold: 1.0
fsdp_config:
  sharding_strategy: FULL_SHARD
compile_config:
  mode: default
save_folder: {save}
save_interval: 2ba
"""
)

EVAL_YAML = (
    """
max_seq_len: 64
device_eval_batch_size: 4
precision: fp32
python_log_level: null
models:
- model_name: tiny
  model:
"""
    + mpt_yaml(4)
    + """  tokenizer:
    name: {missing}/tokenizer
eval_loader:
  name: text
  dataset:
    local: {missing}/mds
    split: val
    max_seq_len: 64
  drop_last: false
  num_workers: 0
results_folder: {save}
"""
)

TIME = "a time string"
ONE_TASK = "icl_tasks=[{label: a, dataset_uri: a.jsonl, icl_task_type: schema, num_fewshot: [0]}]"
GEN_TASK = (
    "icl_tasks=[{label: a, dataset_uri: a.jsonl, icl_task_type: generation_task_with_answers, "
    "num_fewshot: [0], generation_kwargs: %s}]"
)
GAUNTLET = "{name: c, benchmarks: [{name: a, num_fewshot: 0, random_baseline: %s}]}"

# (id, overrides, what the error line must mention)
TRAIN_CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    # Top level: unknown keys, wrong types, bad times, batch sizes.
    ("top-unknown", ["max_durations=4ba"], ("'max_durations'", "did you mean 'max_duration'")),
    ("top-unknown-far", ["zzz=1"], ("'zzz'", "remove it")),
    ("top-type", ["max_seq_len=abc"], ("max_seq_len must be", "int")),
    ("top-negative", ["max_seq_len=-1"], ("max_seq_len must be a positive int",)),
    ("top-seed", ["seed=abc"], ("seed must be an int",)),
    ("top-seed-range", ["seed=-1"], ("seed must be an int in [0, 4294967295], got int -1",)),
    ("top-dist-timeout", ["dist_timeout=0"], ("dist_timeout must be a positive float",)),
    (
        "top-keep-checkpoints",  # -1 keeps all, 0 deletes each after upload
        ["save_num_checkpoints_to_keep=-2"],
        ("save_num_checkpoints_to_keep must be -1 or a non-negative int, got int -2",),
    ),
    (
        "top-eval-subset",
        ["eval_subset_num_batches=0"],
        ("eval_subset_num_batches must be -1 or a positive int, got int 0",),
    ),
    (
        "top-log-level",  # before it, logging.setLevel's ValueError traceback
        ["python_log_level=LOUD"],
        ("python_log_level='LOUD' is not a logging level", "debug, info, warning"),
    ),
    ("top-bool", ["save_overwrite=maybe"], ("save_overwrite must be bool (true or false)",)),
    ("max-duration", ["max_duration=10bat"], ("max_duration must be", TIME, "'10bat'")),
    ("max-duration-negative", ["max_duration=-1ba"], ("max_duration must be", TIME, "'-1ba'")),
    ("warmup-negative", ["scheduler.t_warmup=-1ba"], ("scheduler.t_warmup must be", TIME)),
    (
        "duration-fraction",  # before: a TypeError traceback from the check itself
        ["max_duration=1.5ba"],
        ("max_duration must be a non-negative int or a time string", "got str '1.5ba'"),
    ),
    ("interval-fraction", ["eval_interval=1.5ep"], ("eval_interval must be", "'1.5ep'")),
    ("eval-interval", ["eval_interval=x"], ("eval_interval must be", TIME)),
    ("save-interval", ["save_interval=often"], ("save_interval must be", TIME)),
    ("console-interval", ["console_log_interval=1bx"], ("console_log_interval must be", TIME)),
    ("batch-not-divisible", ["global_train_batch_size=7"], ("device_train_microbatch_size",)),
    ("microbatch", ["device_train_microbatch_size=3"], ("device_train_microbatch_size=3",)),
    ("batch-zero", ["global_train_batch_size=0"], ("global_train_batch_size must be a positive",)),
    ("precision", ["precision=amp_bf61"], ("precision='amp_bf61'", "did you mean 'amp_bf16'")),
    # model: registry name, keys, types, impossible shapes.
    ("model-name", ["model.name=mpt_causal"], ("model.name", "'mpt_causal'", "did you mean")),
    ("model-unknown", ["model.n_layer=2"], ("model.n_layer", "did you mean 'n_layers'")),
    ("model-n-layers-str", ["model.n_layers=two"], ("model.n_layers must be int", "'two'")),
    ("model-n-heads-zero", ["model.n_heads=0"], ("model.n_heads=0", "positive integer")),
    ("model-d-model-neg", ["model.d_model=-64"], ("model.d_model=-64", "positive integer")),
    ("model-vocab-neg", ["model.vocab_size=-1"], ("model.vocab_size=-1", "positive integer")),
    ("model-not-divisible", ["model.d_model=65"], ("model.d_model (65)", "model.n_heads (4)")),
    ("model-ratio", ["model.expansion_ratio=big"], ("model.expansion_ratio must be float",)),
    ("model-bool", ["model.no_bias=maybe"], ("model.no_bias must be bool",)),
    ("model-norm-type", ["model.norm_type=layernrm"], ("model.norm_type='layernrm'", "one of")),
    ("model-loss-fn", ["model.loss_fn=ce"], ("model.loss_fn must be one of", "got str 'ce'")),
    # model.attn_config
    ("attn-qk-ln", ["model.attn_config.qk_ln=maybe"], ("model.attn_config.qk_ln must be bool",)),
    (
        "attn-impl",
        ["model.attn_config.attn_impl=flashy"],
        ("model.attn_config.attn_impl='flashy'",),
    ),
    (
        "attn-unknown",
        ["model.attn_config.qk_lnn=true"],
        ("model.attn_config.qk_lnn", "did you mean 'qk_ln'"),
    ),
    ("attn-pdrop", ["model.attn_config.attn_pdrop=abc"], ("model.attn_config.attn_pdrop must be",)),
    (
        "attn-pdrop-range",
        ["model.attn_config.attn_pdrop=1.5"],
        ("attn_pdrop=1.5 must be in [0, 1]",),
    ),
    (
        "attn-clip-qkv",
        ["model.attn_config.clip_qkv=-1"],
        ("clip_qkv=-1 must be a positive number",),
    ),
    ("attn-rope-theta", ["model.attn_config.rope_theta=0"], ("rope_theta=0 must be a positive",)),
    ("init-std", ["model.init_config.init_std=-0.1"], ("init_std=-0.1 must be a non-negative",)),
    (
        "model-emb-fraction",
        ["model.embedding_fraction=0"],
        ("embedding_fraction=0 must be in (0, 1]",),
    ),
    (
        "attn-kv-heads",
        ["model.attn_config.attn_type=grouped_query_attention", "model.attn_config.kv_n_heads=3"],
        ("model.attn_config.kv_n_heads=3", "divisor of n_heads=4"),
    ),
    ("attn-type", ["model.attn_config.attn_type=mha"], ("model.attn_config.attn_type='mha'",)),
    # model.ffn_config / model.init_config
    (
        "ffn-type",
        ["model.ffn_config.ffn_type=mlp2"],
        ("model.ffn_config.ffn_type='mlp2'", "one of"),
    ),
    (
        "ffn-hidden",
        ["model.ffn_config.ffn_hidden_size=wide"],
        ("model.ffn_config.ffn_hidden_size",),
    ),
    ("ffn-act", ["model.ffn_config.ffn_act_fn=swishy"], ("model.ffn_config.ffn_act_fn='swishy'",)),
    (
        "ffn-act-option",
        ["model.ffn_config.ffn_act_fn={name: gelu, approximate: sideways}"],
        ("model.ffn_config.ffn_act_fn=", "'sideways'", "does not run"),
    ),
    ("init-name", ["model.init_config.name=foo_init_"], ("model.init_config.name='foo_init_'",)),
    (
        "init-fan-mode",
        ["model.init_config.fan_mode=fan_inn"],
        ("model.init_config.fan_mode='fan_inn'", "fan_in, fan_out"),
    ),
    (
        "callback-takes-no-keys",
        ["callbacks.nan_monitor={bad: 1}"],
        ("callbacks.nan_monitor.bad is not a valid key", "takes no keys"),
    ),
    (
        "init-type",
        ["model.init_config.init_std=abc"],
        ("model.init_config.init_std must be float",),
    ),
    (
        "init-unknown",
        ["model.init_config.fan_mod=fan_in"],
        ("model.init_config.fan_mod", "did you mean 'fan_mode'"),
    ),
    # optimizer / scheduler
    ("optimizer-lr", ["optimizer.lr=abc"], ("optimizer.lr must be a non-negative float", "'abc'")),
    ("optimizer-name", ["optimizer.name=adamx"], ("optimizer.name", "'adamx'", "did you mean")),
    ("optimizer-betas", ["optimizer.betas=[0.9]"], ("optimizer.betas must be a list of 2",)),
    ("optimizer-unknown", ["optimizer.momentun=0.9"], ("optimizer.momentun", "valid:")),
    (
        "optimizer-adamw-range",  # the base config's decoupled_adamw
        ["optimizer.weight_decay=-0.1"],
        ("optimizer.weight_decay must be a non-negative float, got float -0.1",),
    ),
    (
        "optimizer-range",  # from the PositiveInt annotation on the Lion variant's signature
        ["optimizer={name: adalr_lion, lr: 0.001, timeout: 0}"],
        ("optimizer.timeout must be a positive int, got int 0",),
    ),
    (
        "optimizer-fraction",  # adalr_lion's lr_penalty multiplies the lr: (0, 1]
        ["optimizer={name: adalr_lion, lr: 0.001, lr_penalty: 1.5}"],
        ("optimizer.lr_penalty must be a float in (0, 1], got float 1.5",),
    ),
    (
        "optimizer-betas",  # torch's AdamW refuses a beta of 1
        ["optimizer.betas=[0.9, 1.0]"],
        ("optimizer.betas must be a list of 2 (a float in [0, 1), a float in [0, 1))",),
    ),
    ("scheduler-warmup", ["scheduler.t_warmup=2bat"], ("scheduler.t_warmup must be", TIME)),
    ("scheduler-name", ["scheduler.name=cosine_warmup"], ("scheduler.name", "did you mean")),
    ("scheduler-type", ["scheduler.alpha=abc"], ("scheduler.alpha must be a non-negative float",)),
    (
        "scheduler-range",  # a negative lr multiplier: Composer's float annotation allows it
        ["scheduler.alpha=-1"],
        ("scheduler.alpha must be a non-negative float, got int -1",),
    ),
    (
        "scheduler-units",  # before: a ValueError in the first batch
        ["scheduler={name: inv_sqrt_tf, t_warmup: 10ba, t_scale: 100tok, t_cooldown: 0tok}"],
        ("scheduler times must share one unit (t_warmup=10ba, t_scale=100tok",),
    ),
    (
        "scheduler-rising",  # before: a ValueError traceback when the scheduler was built
        [
            "scheduler={name: inv_sqrt_tf, t_warmup: 1ba, t_scale: 1ba, t_cooldown: 1ba, "
            "alpha_f_decay: 0.1, alpha_f_cooldown: 0.5}"
        ],
        ("scheduler.alpha_f_decay (0.1) must be >= alpha_f_cooldown (0.5)",),
    ),
    ("scheduler-unknown", ["scheduler.t_warm=1ba"], ("scheduler.t_warm", "did you mean")),
    # train_loader and its dataset
    ("loader-name", ["train_loader.name=txt"], ("train_loader.name", "'txt'", "did you mean")),
    (
        "loader-type",
        ["train_loader.num_workers=two"],
        ("train_loader.num_workers must be a non-negative int",),
    ),
    ("loader-unknown", ["train_loader.shuffle=true"], ("train_loader.shuffle", "valid:")),
    (
        "loader-range",
        ["train_loader.prefetch_factor=0"],
        ("train_loader.prefetch_factor must be a positive int or null, got int 0",),
    ),
    (
        "dataset-unknown-passes",  # LLM Foundry's text loader drops it; the build warns
        ["train_loader.dataset.shufle=true"],
        ("tokenizer folder", "does not exist"),
    ),
    (
        "dataset-streams-pass",  # LLM Foundry's streams mapping passes: the missing tokenizer is next
        ["train_loader.dataset.streams={a: {local: /tmp/a, proportion: 0.5}}"],
        ("tokenizer folder", "does not exist"),
    ),
    (
        "dataset-stream-key",
        ["train_loader.dataset.streams={a: {locl: /tmp/a}}"],
        ("train_loader.dataset.streams.a.locl is not a valid key", "did you mean 'local'"),
    ),
    (
        "dataset-shuffle-algo",
        ["train_loader.dataset.shuffle_algo=py2sx"],
        ("train_loader.dataset.shuffle_algo must be one of", "did you mean 'py2s'"),
    ),
    (
        "dataset-type",
        ["train_loader.dataset.max_seq_len=abc"],
        ("train_loader.dataset.max_seq_len",),
    ),
    # fsdp_config, compile_config
    (
        "fsdp-unknown",
        ["fsdp_config.sharding_stratgy=FULL_SHARD"],
        ("fsdp_config.sharding_stratgy",),
    ),
    ("fsdp-value", ["fsdp_config.sharding_strategy=HALF"], ("fsdp_config.sharding_strategy",)),
    ("fsdp-type", ["fsdp_config.activation_checkpointing=maybe"], ("fsdp_config.activation_c",)),
    (
        "fsdp-shard-degree",
        ["fsdp_config.data_parallel_shard_degree=0"],
        ("fsdp_config.data_parallel_shard_degree must be -1 or a positive int, got int 0",),
    ),
    (
        "fsdp-two-fill-degrees",
        ["fsdp_config.data_parallel_replicate_degree=-1"],
        ("data_parallel_shard_degree (default -1) and data_parallel_replicate_degree are both -1",),
    ),
    ("compile-unknown", ["compile_config.modes=default"], ("compile_config.modes", "'mode'")),
    ("compile-scope", ["compile_config.scope=layers"], ("compile_config.scope", "use model or")),
    (
        "compile-mode",  # torch would refuse it only when compiling, after the model is built
        ["compile_config.mode=fastest"],
        ("compile_config.mode='fastest' is not a torch.compile mode", "max-autotune"),
    ),
    ("tp-degree", ["tp_config.tensor_parallel_degree=0"], ("tp_config.tensor_parallel_degree",)),
    # profiler, icl_tasks entries
    (
        "profiler-type",
        ["profiler.schedule.wait=x"],
        ("profiler.schedule.wait must be a non-negative int, got str",),
    ),
    ("profiler-unknown", ["profiler={schedule: {}, sys_prof_cpuu: 1}"], ("profiler.sys_prof_c",)),
    (
        "profiler-range",  # Composer's int annotation allows 0: a cycle that records nothing
        ["profiler.schedule.active=0"],
        ("profiler.schedule.active must be a positive int, got int 0",),
    ),
    (
        "icl-type",
        ["icl_tasks=[{label: a, dataset_uri: a.jsonl, icl_task_type: schema, num_fewshot: [-1]}]"],
        ("icl_tasks[0].num_fewshot must be a non-negative int",),
    ),
    (
        "icl-generate-key",  # before: a transformers error in the first eval round
        [GEN_TASK % "{max_new_token: 5}"],
        ("icl_tasks[0].generation_kwargs.max_new_token is not a model.generate option", "did "),
    ),
    (
        "icl-generate-range",  # transformers' own check lets this through
        [GEN_TASK % "{top_p: 1.5}"],
        ("icl_tasks[0].generation_kwargs.top_p must be a float in (0, 1], got float 1.5",),
    ),
    (
        "icl-generate-sampling",
        [GEN_TASK % "{do_sample: true, temperature: 0}"],
        ("icl_tasks[0].generation_kwargs.temperature is 0 with do_sample: true",),
    ),
    (
        "icl-generate-reserved",  # one generation per question
        [GEN_TASK % "{num_return_sequences: 2}"],
        ("icl_tasks[0].generation_kwargs.num_return_sequences cannot be set",),
    ),
    (
        "gauntlet-key",  # before: found after the model was built, when the callback was
        [ONE_TASK, f"eval_gauntlet={{weightng: EQUAL, categories: [{GAUNTLET % 0.25}]}}"],
        ("eval_gauntlet.weightng is not a valid key; did you mean 'weighting'",),
    ),
    (
        "gauntlet-without-tasks",
        [f"eval_gauntlet={{categories: [{GAUNTLET % 0.25}]}}"],
        ("eval_gauntlet scores icl_tasks benchmarks, but the run has no icl_tasks",),
    ),
    (
        "icl-unknown",
        ["icl_tasks=[{label: a, dataset_uri: a.jsonl, icl_task_type: schema, shots: 1}]"],
        ("icl_tasks[0].shots", "valid:"),
    ),
    # callbacks, loggers, algorithms
    ("callback-kwarg", ["callbacks.speed_monitor.windo=3"], ("callbacks.speed_monitor.windo",)),
    (
        "callback-type",
        ["callbacks.speed_monitor.window_size=abc"],
        ("window_size must be a positive int, got str",),
    ),
    ("callback-name", ["callbacks.speed_monitr={}"], ("callbacks.speed_monitr", "did you mean")),
    (
        "generate-kwarg",  # before: found after the model was built, when the callback was
        ["callbacks.generate_callback={prompts: [hi], interval: 1ba, max_new_token: 5}"],
        (
            "callbacks.generate_callback.max_new_token is not a callback option",
            "did you mean 'max_new_tokens'",
        ),
    ),
    (
        "generate-value",  # the generation values, before the build
        ["callbacks.generate_callback={prompts: [hi], interval: 1ba, max_new_tokens: 0}"],
        ("callbacks.generate_callback.max_new_tokens must be a positive int, got int 0",),
    ),
    (  # the constructors' own checks, made by building one at the config check
        "built-event",
        ["callbacks.load_checkpoint={load_path: x.pt, event: before_lod}"],
        ("callbacks.load_checkpoint.event='before_lod' is not a Composer event", "before_load"),
    ),
    (
        "built-cross-field",
        ["callbacks.loss_perp_v_len={log_batch_interval: 2, compute_batch_interval: 5}"],
        ("callbacks.loss_perp_v_len.compute_batch_interval=5 is larger than log_batch",),
    ),
    (
        "built-nested",
        [
            "callbacks.hf_checkpointer={save_folder: hf, save_interval: 1ba, "
            "mlflow_logging_config: {metadata: 3}}"
        ],
        ("callbacks.hf_checkpointer.mlflow_logging_config.metadata must be a mapping",),
    ),
    (  # an output folder a callback or logger writes to, checked before the model is built
        "callback-folder",
        ["callbacks.hf_checkpointer={save_folder: 'run.yaml/{run_name}', save_interval: 1ba}"],
        ("callbacks.hf_checkpointer.save_folder 'run.yaml/{run_name}' cannot be created",),
    ),
    (
        "mono-folder",
        ["callbacks.mono_checkpoint_saver={save_folder: run.yaml, batch_interval: 1}"],
        ("callbacks.mono_checkpoint_saver.save_folder 'run.yaml' cannot be created",),
    ),
    (
        "logger-folder",
        ["loggers.file.filename=run.yaml/log.txt"],
        ("loggers.file.filename's folder 'run.yaml' cannot be created",),
    ),
    (
        "async-eval",  # refused whatever its keys, before the model is built
        ["callbacks.async_eval={interval: 1ba}"],
        ("callbacks.async_eval launches evaluation runs on the MosaicML platform",),
    ),
    (
        "composer-callback-range",  # Composer's own callbacks: ranges from composer_ranges
        ["callbacks.speed_monitor.window_size=0"],
        ("callbacks.speed_monitor.window_size must be a positive int, got int 0",),
    ),
    (
        "composer-callback-unit",  # before: a ValueError traceback when the callback was built
        ["callbacks.speed_monitor.time_unit=hour"],
        ("callbacks.speed_monitor.time_unit must be one of 'seconds'", "did you mean 'hours'"),
    ),
    (
        "composer-algorithm-range",  # before: a ZeroDivisionError in the first batch
        ["algorithms={sam: {interval: 0}}"],
        ("algorithms.sam.interval must be a positive int, got int 0",),
    ),
    (
        "composer-time",  # Composer annotates it as a plain str
        ["algorithms={ema: {half_life: 10bax}}"],
        ("algorithms.ema.half_life must be a time string", "got str '10bax'"),
    ),
    (
        "composer-logger-range",
        ["loggers={tensorboard: {flush_interval: -1}}"],
        ("loggers.tensorboard.flush_interval must be a positive int, got int -1",),
    ),
    (
        "callback-range",  # from the PositiveInt annotation on the callback's signature
        ["callbacks.mbmoe_tok_per_expert={log_interval: 0}"],
        ("callbacks.mbmoe_tok_per_expert.log_interval must be a positive int, got int 0",),
    ),
    (
        "callback-wait-range",
        [
            "callbacks.hf_checkpointer={save_folder: hf, save_interval: 1ba, register_wait_seconds: -1}"
        ],
        (
            "callbacks.hf_checkpointer.register_wait_seconds must be a non-negative float, got int -1",
        ),
    ),
    (
        "callback-literal",  # before: found when the callback was built
        ["callbacks.hf_checkpointer={save_folder: /tmp/x, save_interval: 1ba, precision: fp61}"],
        ("callbacks.hf_checkpointer.precision must be one of 'float32'", "got str 'fp61'"),
    ),
    (
        "callback-float-range",
        ["callbacks.global_lr_scaling={lr_scale: 0.5, wd_pct: -1}"],
        ("callbacks.global_lr_scaling.wd_pct must be a non-negative float, got int -1",),
    ),
    ("logger-name", ["loggers.wandbb={}"], ("loggers.wandbb", "did you mean 'wandb'")),
    ("logger-type", ["loggers.file.buffer_size=big"], ("loggers.file.buffer_size must be int",)),
    ("algorithm-type", ["algorithms.gradient_clipping.clipping_threshold=x"], ("clipping_thr",)),
    (
        "algorithm-range",
        ["algorithms.gradient_clipping.clipping_threshold=0"],
        ("algorithms.gradient_clipping.clipping_threshold must be a positive float, got int 0",),
    ),
    (
        "logger-range",
        ["loggers.file={flush_interval: 0}"],
        ("loggers.file.flush_interval must be a positive int, got int 0",),
    ),
    # tokenizer
    ("tokenizer-unknown", ["tokenizer.nme=x"], ("tokenizer.nme", "did you mean 'name'")),
    (
        "tokenizer-kwarg",  # a known from_pretrained kwarg is typed; others pass unchecked
        ["tokenizer.kwargs.model_max_length=abc"],
        ("tokenizer.kwargs.model_max_length must be a positive int, got str 'abc'",),
    ),
    # interpolation
    ("interp-missing", ["model.d_model=${variables.nope}"], ("model.d_model", "variables.nope")),
    (
        "interp-cycle",
        [
            "variables.a=${variables.b}",
            "variables.b=${variables.a}",
            "model.d_model=${variables.a}",
        ],
        ("variables.a", "cycle"),
    ),
    ("interp-unclosed", ["model.d_model=${variables.x"], ("model.d_model=${variables.x",)),
    ("override-no-equals", ["max_duration"], ("override 'max_duration'", "key=value")),
    (  # before: YAML's multi-line traceback
        "override-bad-yaml",
        ["icl_tasks=[{label: x, num_fewshot: [0], num_fewshot: [1]}]"],
        ("could not parse the value of override 'icl_tasks=", "found duplicate key num_fewshot"),
    ),
]

EVAL_CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    ("eval-unknown", ["resuls_folder=x"], ("'resuls_folder'", "did you mean 'results_folder'")),
    (
        "eval-batch",
        ["device_eval_batch_size=four"],
        ("device_eval_batch_size must be a positive int",),
    ),
    ("eval-log-level", ["python_log_level=loud"], ("python_log_level='loud' is not a logging",)),
    (
        "eval-peft-range",  # checked before any model is loaded, under the entry's key path
        [
            "models=[{model_name: x, model: {name: hf_causal_lm, pretrained_model_name_or_path:"
            " /tmp/nowhere, peft_config: {peft_type: LORA, r: 0}}, tokenizer: {name: /tmp/no}}]"
        ],
        ("models[0].model.peft_config.r must be a positive int, got int 0",),
    ),
    (
        "eval-batch-zero",
        ["device_eval_batch_size=0"],
        ("device_eval_batch_size must be a positive int, got int 0",),
    ),
    (
        "eval-list-model",
        ["models.0.model.d_model=63"],
        ("models[0].model.d_model (63)", "models[0].model.n_heads (4)"),
    ),
    ("eval-list-type", ["models.0.model.n_layers=two"], ("models[0].model.n_layers must be int",)),
    (
        "eval-list-nested",
        ["models.0.model.attn_config.qk_ln=maybe"],
        ("models[0].model.attn_config.qk_ln must be bool",),
    ),
    (
        "eval-list-index",
        ["models.3.model.d_model=64"],
        ("models.3.model.d_model", "counting from 0"),
    ),
    ("eval-entry-key", ["models.0.tokenzer={}"], ("models[0].tokenzer", "did you mean")),
    (
        "eval-results-file",  # before: found after every model was evaluated
        ["results_folder=run.yaml"],  # the run's YAML, in the working directory
        ("results_folder 'run.yaml' cannot be created (", "run.yaml' is a file)"),
    ),
    (
        "eval-gauntlet-range",  # before: found after the first model was built
        [ONE_TASK, f"eval_gauntlet={{categories: [{GAUNTLET % 2}]}}"],
        ("eval_gauntlet.categories[0].benchmarks[0].random_baseline must be in [0, 1), got 2",),
    ),
    (
        "eval-gauntlet-file",
        [ONE_TASK, "eval_gauntlet=/nowhere/gauntlet.yaml"],
        ("gauntlet file '/nowhere/gauntlet.yaml' does not exist",),
    ),
    (
        "eval-loader",
        ["eval_loader.num_workers=many"],
        ("eval_loader.num_workers must be a non-negative int",),
    ),
    ("eval-logger", ["loggers.tensorbord={}"], ("loggers.tensorbord", "did you mean")),
    (
        "eval-8bit-fsdp",  # LLM Foundry refuses it too, after the config is read
        [
            "models=[{model_name: x, model: {name: hf_causal_lm, pretrained_model_name_or_path:"
            " /tmp/nowhere, load_in_8bit: true}, tokenizer: {name: /tmp/no}}]",
            "fsdp_config={sharding_strategy: FULL_SHARD}",
        ],
        ("models[0].model.load_in_8bit: FSDP cannot shard 8-bit",),
    ),
]


def _write(folder: Path, template: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.yaml"
    text = template.replace("{missing}", str(folder / "missing"))
    path.write_text(text.replace("{save}", str(folder / "out")))
    return path


def _assert_fails_in_one_line(
    tmp_path: Path,
    main: Callable[[Sequence[str]], int],
    template: str,
    overrides: list[str],
    mentions: tuple[str, ...],
) -> None:
    """The command ``main`` on ``template`` with ``overrides`` exits 2 with one line naming
    ``mentions``, and writes nothing (no save_folder, metrics, log file or results folder)."""
    yaml_path = _write(tmp_path, template)
    before = files_under(tmp_path)
    result = run_cli(main, [str(yaml_path), *overrides])
    assert_one_line_error(result, *mentions)
    assert result.code == 2
    assert files_under(tmp_path) == before


@pytest.mark.parametrize(
    ("overrides", "mentions"), [c[1:] for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES]
)
def test_bad_train_config_fails_in_one_line(
    tmp_path: Path, overrides: list[str], mentions: tuple[str, ...]
) -> None:
    _assert_fails_in_one_line(tmp_path, train_main, TRAIN_YAML, overrides, mentions)


@pytest.mark.parametrize(
    ("overrides", "mentions"), [c[1:] for c in EVAL_CASES], ids=[c[0] for c in EVAL_CASES]
)
def test_bad_eval_config_fails_in_one_line(
    tmp_path: Path, overrides: list[str], mentions: tuple[str, ...]
) -> None:
    _assert_fails_in_one_line(tmp_path, eval_main, EVAL_YAML, overrides, mentions)


@pytest.mark.parametrize(
    ("world_size", "overrides", "mentions"),
    [
        ("3", [], ("global_train_batch_size=8", "number of processes (3)")),
        ("2", ["device_train_microbatch_size=3"], ("device_train_microbatch_size=3", "(4)")),
        (
            "2",
            ["device_train_batch_size=8"],
            ("device_train_batch_size=8 disagrees", "set only one"),
        ),
    ],
    ids=["global-vs-world", "micro-vs-device", "device-vs-global"],
)
def test_batch_sizes_that_do_not_split_over_the_processes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    world_size: str,
    overrides: list[str],
    mentions: tuple[str, ...],
) -> None:
    monkeypatch.setenv("WORLD_SIZE", world_size)
    yaml_path = _write(tmp_path, TRAIN_YAML)
    result = run_cli(train_main, [str(yaml_path), *overrides])
    assert_one_line_error(result, *mentions)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        (None, ("does not exist", "run.yaml")),
        ("- a\n- b\n", ("run.yaml", "must hold a mapping")),
        ("model: [unclosed\n", ("could not parse", "run.yaml")),
        ("42\n", ("run.yaml", "must hold a mapping")),
    ],
    ids=["missing-file", "a-list", "bad-syntax", "a-number"],
)
@pytest.mark.parametrize("main", [train_main, eval_main], ids=["train", "eval"])
def test_unreadable_yaml_fails_in_one_line(
    tmp_path: Path,
    main: Callable[[Sequence[str]], int],
    text: str | None,
    mentions: tuple[str, ...],
) -> None:
    yaml_path = tmp_path / "run.yaml"
    if text is not None:
        yaml_path.write_text(text)
    result = run_cli(main, [str(yaml_path)])
    assert_one_line_error(result, *mentions)


def test_the_base_configs_pass_the_checks(tmp_path: Path) -> None:
    from llmfoundry.command_utils.eval import check_models_and_sections, parse_models
    from llmfoundry.command_utils.preflight import check_train_config
    from llmfoundry.utils.config_utils import EvalConfig, TrainConfig, load_config

    train_yaml = _write(tmp_path / "train", TRAIN_YAML)
    eval_yaml = _write(tmp_path / "eval", EVAL_YAML)
    train_cfg, _ = load_config(train_yaml, [], TrainConfig)
    check_train_config(train_cfg)
    # An override may index into a list.
    eval_cfg, _ = load_config(eval_yaml, ["models.0.model.d_model=32"], EvalConfig)
    check_models_and_sections(eval_cfg, parse_models(eval_cfg))
    assert eval_cfg.models is not None and eval_cfg.models[0]["model"]["d_model"] == 32
    # Run as commands, the base YAMLs fail only where the missing tokenizer is loaded.
    for main, yaml_path in ((train_main, train_yaml), (eval_main, eval_yaml)):
        result = run_cli(main, [str(yaml_path)])
        assert_one_line_error(result, f"{yaml_path.parent}/missing/tokenizer", "does not exist")
        assert not (yaml_path.parent / "out").exists()
