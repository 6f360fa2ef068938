"""Configuration of MPT models (the architecture behind MPT-7B/30B), in Hugging Face form.

This file ships inside exported checkpoints as ``trust_remote_code``, so it imports only
``transformers``, ``torch`` and its sibling files.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import math
from typing import Any

from transformers import PretrainedConfig

# transformers 4.x copies into its module cache only the files that a remote-code module
# imports directly, not the files those import: every sibling module this file needs is
# imported here by name (the ``noqa: F401`` ones are there for that alone).
from .activations import check_activation
from .block_overrides import layer_attn_configs
from .config_defaults import (
    ATTN_CONFIG_DEFAULTS,
    ATTN_IMPLS,
    FAN_MODES,
    FFN_CONFIG_DEFAULTS,
    FLEX_IMPLS,
    INIT_CONFIG_DEFAULTS,
    INIT_DEVICES,
    KAIMING_NONLINEARITIES,
    LEGACY_INERT_KEYS,
    MPTConfigError,
    check_number_ranges,
    fc_type_name,
    merge_defaults,
)
from .config_layers import is_builtin_name, resolve_layer_sources
from .layer_table import BUILTIN_NAMES  # noqa: F401
from .moe_config import check_moe_config, merge_ffn_config
from .moe_options import MOE_FFN_TYPES  # noqa: F401
from .rope_config import rope_position_scale, rope_theta_for, validate_rope

logger = logging.getLogger(__name__)

# The model_type written for configs that only our code can run (see ``MPTConfig.to_dict``).
REMOTE_CODE_MODEL_TYPE = "llmfoundry_mpt"

__all__ = [
    "ATTN_CONFIG_DEFAULTS",
    "ATTN_IMPLS",
    "FFN_CONFIG_DEFAULTS",
    "FLEX_IMPLS",
    "INIT_CONFIG_DEFAULTS",
    "LEGACY_INERT_KEYS",
    "REMOTE_CODE_MODEL_TYPE",
    "MPTConfig",
    "MPTConfigError",
]


def _tuning_on(tuning: dict[str, Any] | None) -> bool:
    """Whether an ``attn_temperature_tuning`` setting changes anything (its attn_scale is not 0)."""
    return tuning is not None and bool(tuning.get("attn_scale"))


class MPTConfig(PretrainedConfig):
    """Hyper-parameters of an MPT decoder, with LLM Foundry's names and defaults.

    Args:
        d_model: width of the residual stream.
        n_heads: number of query heads.
        n_layers: number of transformer blocks.
        head_dim: size of one attention head (default ``d_model // n_heads``); the attention
            then projects to ``n_heads * head_dim`` features. As in LLM Foundry, the default
            softmax scale stays ``1 / sqrt(d_model / n_heads)``.
        expansion_ratio: FFN hidden size as a multiple of ``d_model`` (unless
            ``ffn_config.ffn_hidden_size`` is set).
        max_seq_len: longest sequence the model accepts.
        vocab_size: number of token embeddings.
        resid_pdrop: dropout on each block's residual branches.
        emb_pdrop: dropout on the embeddings.
        learned_pos_emb: add a learned absolute position embedding (``transformer.wpe``).
        attn_config: attention options (see ``ATTN_CONFIG_DEFAULTS``).
        ffn_config: feed-forward options: ``ffn_type``, ``ffn_act_fn``, ``ffn_hidden_size``,
            ``expansion_ratio`` (overriding the model's, as in LLM Foundry) (and the MoE keys of ``torch_dmoe``/``mb_moe``/``mb_dmoe``, see :mod:`.moe_config`).
        init_device: where weights are first created: ``cpu``, ``meta`` or ``mixed``.
        logit_scale: multiply the output logits by this number, or by ``1/sqrt(d_model)``
            when set to ``"inv_sqrt_d_model"``.
        no_bias: drop every bias from linear and norm layers.
        attention_bias: give the q/k/v projections biases (default: ``not no_bias``).
        embedding_fraction: scale the gradient reaching the embeddings by this fraction.
        norm_type: ``layernorm``, ``low_precision_layernorm``, ``rmsnorm``,
            ``low_precision_rmsnorm``, ``triton_rmsnorm``, or a plug-in's norm.
        norm_eps: epsilon of every norm.
        use_cache: return key/value caches for generation.
        init_config: parameter initialization options (see ``INIT_CONFIG_DEFAULTS``).
        fc_type: linear layer implementation: ``torch``, or ``{name: torch}`` as recent LLM
            Foundry exports write it.
        tie_word_embeddings: share the input embedding with the output projection.
        use_pad_tok_in_ffn: run the FFN on pad tokens too (True) or skip them (False).
        block_overrides: per-layer attention settings (see :mod:`.block_overrides`).
        final_logit_softcapping: if set, logits become ``c * tanh(logits / c)``.
        layer_sources: the plug-in layers a saved config was built with (see
            :mod:`.config_layers`); recomputed here, read only to name a missing package.
        **kwargs: passed to ``PretrainedConfig``.

    Raises:
        MPTConfigError: if a value or a combination of values is invalid.
    """

    model_type = "mpt"
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_hidden_layers": "n_layers",
    }

    def __init__(
        self,
        d_model: int = 2048,
        n_heads: int = 16,
        n_layers: int = 24,
        head_dim: int | None = None,
        expansion_ratio: float = 4,
        max_seq_len: int = 2048,
        vocab_size: int = 50368,
        resid_pdrop: float = 0.0,
        emb_pdrop: float = 0.0,
        learned_pos_emb: bool = True,
        attn_config: dict[str, Any] | None = None,
        ffn_config: dict[str, Any] | None = None,
        init_device: str = "cpu",
        logit_scale: float | str | None = None,
        no_bias: bool = False,
        attention_bias: bool | None = None,
        embedding_fraction: float = 1.0,
        norm_type: str = "low_precision_layernorm",
        norm_eps: float = 1e-05,
        use_cache: bool = False,
        init_config: dict[str, Any] | None = None,
        fc_type: str | dict[str, Any] = "torch",
        tie_word_embeddings: bool = True,
        use_pad_tok_in_ffn: bool = True,
        block_overrides: dict[str, Any] | None = None,
        final_logit_softcapping: float | None = None,
        layer_sources: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.head_dim = head_dim
        self.expansion_ratio = expansion_ratio
        self.max_seq_len = max_seq_len
        self.vocab_size = vocab_size
        self.resid_pdrop = resid_pdrop
        self.emb_pdrop = emb_pdrop
        self.learned_pos_emb = learned_pos_emb
        self.attn_config = merge_defaults("attn_config", attn_config, ATTN_CONFIG_DEFAULTS)
        pdrop = self.attn_config["attn_pdrop"]
        if isinstance(pdrop, float) and pdrop.is_integer():
            # transformers' own MptConfig types attn_pdrop as int and rejects 0.0; writing 0 keeps
            # an exported config.json readable by it, which AutoTokenizer.from_pretrained(folder)
            # does whenever trust_remote_code is off.
            self.attn_config["attn_pdrop"] = int(pdrop)
        self.ffn_config = merge_ffn_config(ffn_config)
        self.init_device = init_device
        self.logit_scale = logit_scale
        self.no_bias = no_bias
        # LLM Foundry's attention_bias: biases of the q/k/v projections (default: not no_bias).
        self.attention_bias = not no_bias if attention_bias is None else attention_bias
        self.embedding_fraction = embedding_fraction
        self.norm_type = norm_type
        self.norm_eps = norm_eps
        self.use_cache = use_cache
        init_name = (init_config or {}).get("name", INIT_CONFIG_DEFAULTS["name"])
        self.init_config = merge_defaults(
            "init_config",
            init_config,
            INIT_CONFIG_DEFAULTS,
            open_keys=not is_builtin_name("init_config.name", init_name),
        )
        self.fc_type = fc_type_name(fc_type)
        self.use_pad_tok_in_ffn = use_pad_tok_in_ffn
        self.block_overrides = copy.deepcopy(block_overrides)
        self.final_logit_softcapping = final_logit_softcapping
        # Older checkpoints carry keys that no longer mean anything; drop them quietly.
        for legacy_key in ("verbose",):
            kwargs.pop(legacy_key, None)
        # transformers' native MptConfig names the norm epsilon ``layer_norm_epsilon``: read it
        # from a native config.json, and write it back so that the native class reads ours.
        native_eps = kwargs.pop("layer_norm_epsilon", None)
        if native_eps is not None and norm_eps == 1e-05:
            self.norm_eps = float(native_eps)
        self.layer_norm_epsilon = self.norm_eps
        if learned_pos_emb and (self.attn_config["alibi"] or self.attn_config["rope"]):
            # Published MPT configs (mpt-7b) say learned_pos_emb: true next to alibi: true; the
            # position scheme in attention replaces the learned table, as in LLM Foundry.
            logger.info("attn_config.alibi or rope is on: setting learned_pos_emb to False")
            self.learned_pos_emb = False
        super().__init__(**kwargs)
        # transformers 5 no longer declares ``tie_word_embeddings`` on the base config (4.x
        # sets it to its default in ``__init__``): set it after, as an ordinary attribute.
        self.tie_word_embeddings = tie_word_embeddings
        self._validate()
        # Which plug-in provided each layer that is not built in (saved in config.json).
        self.layer_sources = resolve_layer_sources(self._layer_names(), layer_sources)

    @property
    def attn_head_dim(self) -> int:
        """The size of one attention head: ``head_dim``, or ``d_model // n_heads`` when unset."""
        return int(self.head_dim) if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def rotary_dim(self) -> int:
        """How many leading features of each head RoPE rotates (LLM Foundry's choice).

        ``rope_impl: hf`` rotates the whole head; ``dail`` rotates ``d_model // n_heads``
        features, which is the whole head unless ``head_dim`` says otherwise.
        """
        if self.attn_config["rope_impl"] == "hf":
            return self.attn_head_dim
        return self.d_model // self.n_heads

    @property
    def rope_position_scale(self) -> float:
        """Multiplier of positions before the rotation (``1 / factor`` for ``linear`` scaling)."""
        return rope_position_scale(self.attn_config)

    def rope_theta_for(self, total_len: int) -> float:
        """The RoPE base for a sequence of ``total_len`` tokens (cache included); see
        :func:`.rope_config.rope_theta_for`."""
        return rope_theta_for(self.attn_config, self.max_seq_len, self.rotary_dim, total_len)

    def layer_attn_configs(self) -> list[dict[str, Any]]:
        """Each layer's attention settings: ``attn_config`` with ``block_overrides`` applied."""
        return layer_attn_configs(self.block_overrides, self.attn_config, self.n_layers)

    def _layer_names(self) -> dict[str, str]:
        """The name this config gives each pluggable layer, by config key."""
        return {
            "norm_type": self.norm_type,
            "fc_type": self.fc_type,
            "ffn_config.ffn_type": self.ffn_config["ffn_type"],
            "attn_config.attn_type": self.attn_config["attn_type"],
            "attn_config.attn_impl": self.attn_config["attn_impl"],
            "init_config.name": self.init_config["name"],
        }

    @property
    def kv_n_heads(self) -> int:
        """Number of key/value heads implied by ``attn_type`` (and ``kv_n_heads`` for GQA)."""
        attn_type = self.attn_config["attn_type"]
        if attn_type == "multiquery_attention":
            return 1
        if attn_type == "grouped_query_attention":
            return int(self.attn_config["kv_n_heads"])
        return self.n_heads

    @property
    def ffn_expansion_ratio(self) -> float:
        """The FFN's width multiple: ``ffn_config.expansion_ratio`` (which LLM Foundry lets
        override the model's) when set, else ``expansion_ratio``."""
        return self.ffn_config.get("expansion_ratio", self.expansion_ratio)

    @property
    def ffn_hidden_size(self) -> int:
        """Hidden width of the feed-forward block."""
        explicit = self.ffn_config.get("ffn_hidden_size")
        if explicit is not None:
            return int(explicit)
        return int(self.d_model * self.ffn_expansion_ratio)

    @property
    def logit_multiplier(self) -> float | None:
        """The number ``logit_scale`` stands for (None when unset)."""
        if self.logit_scale is None:
            return None
        if isinstance(self.logit_scale, str):
            return 1 / math.sqrt(self.d_model)
        return float(self.logit_scale)

    def _validate(self) -> None:
        """Check each field and the combinations the model cannot run with."""
        attn = self.attn_config
        self._validate_sizes()
        check_moe_config(self.ffn_config, self.d_model, self.ffn_expansion_ratio)
        if self.d_model % self.n_heads != 0:
            raise MPTConfigError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})"
            )
        if self.head_dim is not None and (not isinstance(self.head_dim, int) or self.head_dim < 1):
            raise MPTConfigError(f"model.head_dim={self.head_dim!r} must be a positive integer")
        checks: list[tuple[str, Any, tuple[Any, ...]]] = [
            ("init_device", self.init_device, INIT_DEVICES)
        ]
        if str(self.init_config["name"]).startswith("kaiming_"):  # torch's kaiming_*_ read these
            checks += [
                ("init_config.fan_mode", self.init_config["fan_mode"], FAN_MODES),
                (
                    "init_config.init_nonlinearity",
                    self.init_config["init_nonlinearity"],
                    KAIMING_NONLINEARITIES,
                ),
            ]
        if self.ffn_config.get("ffn_act_fn") is not None:
            check_activation(self.ffn_config["ffn_act_fn"])
        for key, value, allowed in checks:
            if value not in allowed:
                raise MPTConfigError(
                    f"model.{key}={value!r} is not supported; choose one of {', '.join(allowed)}"
                )
        if isinstance(self.logit_scale, str) and self.logit_scale != "inv_sqrt_d_model":
            raise MPTConfigError(
                f"model.logit_scale={self.logit_scale!r} is not supported; use a number or 'inv_sqrt_d_model'"
            )
        check_number_ranges(vars(self))
        if attn["attn_type"] == "grouped_query_attention":
            kv = attn["kv_n_heads"]
            if kv is None or kv <= 0 or self.n_heads % kv != 0:
                raise MPTConfigError(
                    f"model.attn_config.kv_n_heads={kv} must be a positive divisor of n_heads={self.n_heads} "
                    "for grouped_query_attention"
                )
        if self.init_config["name"] == "baseline_" and self.init_config["init_std"] is None:
            raise MPTConfigError(
                "model.init_config.init_std must be set when init_config.name is baseline_"
            )
        if attn["alibi"] and attn["rope"]:
            raise MPTConfigError(
                "model.attn_config: alibi and rope cannot both be on; pick one position scheme"
            )
        if attn["rope"]:
            validate_rope(attn, self.rotary_dim, self.attn_head_dim)
        if attn["qk_ln"] and attn["qk_gn"]:
            raise MPTConfigError(
                "model.attn_config: qk_ln and qk_gn cannot both be on; qk_gn normalizes each head, "
                "qk_ln the whole query/key"
            )
        if attn["attn_impl"] in FLEX_IMPLS and attn["attn_pdrop"]:
            raise MPTConfigError(
                f"model.attn_config.attn_impl={attn['attn_impl']!r} (FlexAttention) has no attention "
                "dropout; set attn_config.attn_pdrop to 0 or use attn_impl torch, flash or sdpa"
            )
        if attn["nope"]:
            raise MPTConfigError(
                "model.attn_config.nope cannot be the model-wide position scheme; set it for some "
                "layers through block_overrides, and use alibi or rope for the others"
            )
        for layer, layer_attn in enumerate(self.layer_attn_configs()):
            self._validate_layer_attn(layer, layer_attn)
        self._validate_transformer_engine()

    def _validate_sizes(self) -> None:
        """The sizes must be positive integers (``n_heads: 0`` would divide by zero)."""
        for key in ("d_model", "n_heads", "n_layers", "vocab_size", "max_seq_len"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise MPTConfigError(f"model.{key}={value!r} must be a positive integer")
        for key, ratio in (
            ("expansion_ratio", self.expansion_ratio),
            ("ffn_config.expansion_ratio", self.ffn_expansion_ratio),
        ):
            if not isinstance(ratio, int | float) or isinstance(ratio, bool) or not ratio > 0:
                raise MPTConfigError(f"model.{key}={ratio!r} must be a positive number")
        hidden = self.ffn_config.get("ffn_hidden_size")
        if hidden is not None and (not isinstance(hidden, int) or hidden < 1):
            raise MPTConfigError(
                f"model.ffn_config.ffn_hidden_size={hidden!r} must be a positive integer (or "
                "null for expansion_ratio * d_model)"
            )

    def _validate_layer_attn(self, layer: int, attn: dict[str, Any]) -> None:
        """Check the settings that ``block_overrides`` may change, for one layer."""
        where = (
            "model.attn_config" if self.block_overrides is None else f"layer {layer}'s attn_config"
        )
        window = attn["sliding_window_size"]
        if window is not None and window != -1 and (not isinstance(window, int) or window < 1):
            raise MPTConfigError(
                f"{where}.sliding_window_size={window!r} must be -1 (off) or a positive integer"
            )
        tuning = attn["attn_temperature_tuning"]
        if tuning is not None and not (
            isinstance(tuning, dict)
            and float(tuning.get("floor_scale", 0)) > 0
            and isinstance(tuning.get("attn_scale"), int | float)
        ):
            raise MPTConfigError(
                f"{where}.attn_temperature_tuning={tuning!r} needs a positive floor_scale and a "
                "numeric attn_scale (0 turns it off)"
            )
        if attn["nope"] and self.learned_pos_emb:
            raise MPTConfigError(
                f"{where}.nope cannot be used with learned_pos_emb (the learned positions are "
                "added before the first layer); use alibi or rope"
            )
        if attn["reuse_kv_x_layer_idx"] is not None and attn["fused_qkv"]:
            raise MPTConfigError(
                f"{where}.reuse_kv_x_layer_idx needs attn_config.fused_qkv: false (keys and values "
                "are projected from another layer's input)"
            )

    def _validate_transformer_engine(self) -> None:
        """``fc_type: te`` and ``ffn_type: te_ln_mlp`` need NVIDIA TransformerEngine installed."""
        wants_te = {
            "fc_type": self.fc_type == "te",
            "ffn_config.ffn_type": self.ffn_config["ffn_type"] == "te_ln_mlp",
        }
        for key, wanted in wants_te.items():
            if wanted and importlib.util.find_spec("transformer_engine") is None:
                fallback = "torch" if key == "fc_type" else "mptmlp"
                raise MPTConfigError(
                    f"model.{key} needs NVIDIA TransformerEngine, which is not installed; "
                    f"install the 'te' extra (pip install 'llm-foundry[te]') or set {key}: {fallback}"
                )

    def native_incompatibilities(self) -> list[str]:
        """Why transformers' native ``MptForCausalLM`` cannot run this config (empty if it can).

        The native class always uses ALiBi (with ``alibi_bias_max`` 8), multi-head attention
        with one fused ``Wqkv``, bias-free layers, a 4x GELU MLP and LayerNorm; it ignores every
        other option, so a config that sets one would load there and compute something else.
        """
        attn = self.attn_config
        act = self.ffn_config.get("ffn_act_fn")
        checks = {
            "attn_config.attn_type must be multihead_attention": attn["attn_type"]
            == "multihead_attention",
            "attn_config.alibi must be on": bool(attn["alibi"]),
            "attn_config.alibi_bias_max must be 8": attn["alibi_bias_max"] == 8,
            "attn_config.attn_pdrop must be 0": not attn["attn_pdrop"],
            "attn_config.qk_ln and qk_gn must be off": not (attn["qk_ln"] or attn["qk_gn"]),
            "attn_config.fused_qkv must be on": bool(attn["fused_qkv"]),
            "attn_config.sliding_window_size must be -1": attn["sliding_window_size"] in (-1, None),
            "attn_config.attn_logit_softcapping must be unset": attn["attn_logit_softcapping"]
            is None,
            "no_bias must be true": bool(self.no_bias),
            "ffn_config.ffn_type must be mptmlp": self.ffn_config["ffn_type"] == "mptmlp",
            "the FFN width must be 4 * d_model": self.ffn_hidden_size == 4 * self.d_model,
            "ffn_config.ffn_act_fn must be exact gelu": act is None
            or act in ("gelu", {"name": "gelu"}, {"name": "gelu", "approximate": "none"}),
            "norm_type must be layernorm or low_precision_layernorm": self.norm_type
            in ("layernorm", "low_precision_layernorm"),
            "fc_type must be torch": self.fc_type == "torch",
            "logit_scale must be unset": self.logit_scale is None,
            "final_logit_softcapping must be unset": self.final_logit_softcapping is None,
            "head_dim must be unset or d_model / n_heads": self.attn_head_dim
            == self.d_model // self.n_heads,
            "attention_bias must be false": not self.attention_bias,
            "block_overrides must be unset": self.block_overrides is None,
            "attn_config.attn_temperature_tuning must be off": not _tuning_on(
                attn["attn_temperature_tuning"]
            ),
            "attn_config.attn_impl must be built in": is_builtin_name(
                "attn_config.attn_impl", attn["attn_impl"]
            ),
        }
        return [reason for reason, holds in checks.items() if not holds]

    def to_dict(self) -> dict[str, Any]:
        """The config as saved to config.json.

        ``model_type`` is ``mpt`` only when transformers' native MPT computes the same function
        (see :meth:`native_incompatibilities`); otherwise it is ``llmfoundry_mpt``, so that
        loading the folder without ``trust_remote_code`` fails instead of silently running the
        native model on weights it does not understand.
        """
        output = super().to_dict()
        output["model_type"] = (
            self.model_type if not self.native_incompatibilities() else REMOTE_CODE_MODEL_TYPE
        )
        # As LLM Foundry writes it: kv_n_heads only where it means something (GQA), and no
        # record of plug-in layers when every layer is built in.
        if output["attn_config"].get("attn_type") != "grouped_query_attention":
            output["attn_config"].pop("kv_n_heads", None)
        if not output.get("layer_sources"):
            output.pop("layer_sources", None)
        return output

    @classmethod
    def get_config_dict(
        cls, pretrained_model_name_or_path: Any, **kwargs: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Read config.json, treating ``llmfoundry_mpt`` (see :meth:`to_dict`) as ``mpt``."""
        config_dict, unused = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict.get("model_type") == REMOTE_CODE_MODEL_TYPE:
            config_dict["model_type"] = cls.model_type
        return config_dict, unused
