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

logger = logging.getLogger(__name__)

ATTN_CONFIG_DEFAULTS: dict[str, Any] = {
    "attn_type": "multihead_attention",
    "attn_pdrop": 0.0,
    "attn_impl": "flash",
    "qk_ln": False,
    "qk_gn": False,
    "clip_qkv": None,
    "softmax_scale": None,
    "attn_uses_sequence_id": False,
    "sliding_window_size": -1,
    "attn_logit_softcapping": None,
    "alibi": False,
    "alibi_bias_max": 8,
    "rope": False,
    "rope_theta": 10000,
    "rope_impl": "dail",
    "rope_dail_config": {"type": "original", "pos_idx_in_fp32": True, "xpos_scale_base": 512},
    "rope_hf_config": {"type": "no_scaling", "factor": 1.0},
    "kv_n_heads": None,
    "fused_qkv": True,
}

FFN_CONFIG_DEFAULTS: dict[str, Any] = {"ffn_type": "mptmlp"}

INIT_CONFIG_DEFAULTS: dict[str, Any] = {
    "name": "kaiming_normal_",
    "fan_mode": "fan_in",
    "init_nonlinearity": "relu",
    "init_div_is_residual": True,
    "emb_init_std": None,
    "emb_init_uniform_lim": None,
    "init_std": None,
    "init_gain": 0.0,
}

ATTN_TYPES = ("multihead_attention", "multiquery_attention", "grouped_query_attention")
# "flash" runs flash-attn when installed and PyTorch's fused SDPA kernels otherwise; "sdpa" asks
# for SDPA explicitly. "triton" (the name LLM Foundry's retired Triton kernel had) and "flex" run
# PyTorch FlexAttention.
ATTN_IMPLS = ("torch", "flash", "sdpa", "triton", "flex")
FLEX_IMPLS = ("triton", "flex")
ROPE_IMPLS = ("dail", "hf")
NORM_TYPES = ("layernorm", "low_precision_layernorm", "rmsnorm", "low_precision_rmsnorm")
FFN_TYPES = ("mptmlp", "mptglu", "te_ln_mlp")
FFN_ACT_FNS = ("gelu", "relu", "silu")
INIT_NAMES = (
    "kaiming_normal_",
    "kaiming_uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "small_init_",
    "neox_init_",
    "baseline_",
)
INIT_DEVICES = ("cpu", "meta", "mixed")
FC_TYPES = ("torch", "te")
ROPE_HF_TYPES = ("no_scaling", "linear", "dynamic")

# Keys every ``PretrainedConfig`` writes; transformers' native MPT saves its ``attn_config`` as a
# config object, so a native config.json carries these inside ``attn_config`` too. They mean
# nothing to attention and are dropped on load.
_PRETRAINED_CONFIG_KEYS = frozenset(PretrainedConfig().to_dict()) | {"_name_or_path"}

# Keys that published MPT configs carry but that select nothing here (mosaicml/mpt-7b has
# ``attn_config.prefix_lm: false``; LLM Foundry exports copy ``fc_type`` into ``ffn_config`` and
# write ``attn_config.kv_dim: null``). Each is accepted at these inert values only, then dropped.
LEGACY_INERT_KEYS: dict[str, dict[str, tuple[Any, ...]]] = {
    "attn_config": {"prefix_lm": (False,), "kv_dim": (None,)},
    "ffn_config": {"fc_type": ("torch", {"name": "torch"})},
    "init_config": {},
}


# The model_type written for configs that only our code can run (see ``MPTConfig.to_dict``).
REMOTE_CODE_MODEL_TYPE = "llmfoundry_mpt"


class MPTConfigError(ValueError):
    """An MPTConfig field (or a combination of fields) that the model cannot run with."""


def _merge_defaults(
    name: str, given: dict[str, Any] | None, defaults: dict[str, Any]
) -> dict[str, Any]:
    """Fill the missing keys of a nested config from its defaults; unknown keys are an error.

    Args:
        name: the nested config's key, for error messages (``attn_config``, ...).
        given: what the user set (or None).
        defaults: the defaults for every known key.

    Returns:
        A new dict with every key of ``defaults``.

    Raises:
        MPTConfigError: if ``given`` has a key that ``defaults`` does not know (legacy keys of
            ``LEGACY_INERT_KEYS`` are accepted at their inert value and dropped).
    """
    merged = copy.deepcopy(defaults)
    inert = LEGACY_INERT_KEYS[name]
    for key, value in (given or {}).items():
        if name == "attn_config" and key in _PRETRAINED_CONFIG_KEYS and key not in defaults:
            continue
        if key in inert and key not in defaults:
            if value not in inert[key]:
                raise MPTConfigError(
                    f"model.{name}.{key}={value!r} is not supported; "
                    f"only {' or '.join(repr(v) for v in inert[key])} is accepted"
                )
            continue
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise MPTConfigError(f"model.{name}.{key} is not a known key; known keys: {known}")
        if isinstance(value, dict) and isinstance(defaults[key], dict):
            merged[key] = {**defaults[key], **value}
        else:
            merged[key] = value
    return merged


def _fc_type_name(fc_type: str | dict[str, Any]) -> str:
    """``fc_type`` as a name: LLM Foundry writes it either as ``torch`` or as ``{name: torch}``."""
    if isinstance(fc_type, dict):
        if set(fc_type) != {"name"}:
            raise MPTConfigError(
                f"model.fc_type={fc_type!r}: only the 'name' key is supported (e.g. {{name: torch}})"
            )
        return fc_type["name"]
    return fc_type


class MPTConfig(PretrainedConfig):
    """Hyper-parameters of an MPT decoder, with LLM Foundry's names and defaults.

    Args:
        d_model: width of the residual stream.
        n_heads: number of query heads.
        n_layers: number of transformer blocks.
        expansion_ratio: FFN hidden size as a multiple of ``d_model`` (unless
            ``ffn_config.ffn_hidden_size`` is set).
        max_seq_len: longest sequence the model accepts.
        vocab_size: number of token embeddings.
        resid_pdrop: dropout on each block's residual branches.
        emb_pdrop: dropout on the embeddings.
        learned_pos_emb: add a learned absolute position embedding (``transformer.wpe``).
        attn_config: attention options (see ``ATTN_CONFIG_DEFAULTS``).
        ffn_config: feed-forward options: ``ffn_type``, ``ffn_act_fn``, ``ffn_hidden_size``.
        init_device: where weights are first created: ``cpu``, ``meta`` or ``mixed``.
        logit_scale: multiply the output logits by this number, or by ``1/sqrt(d_model)``
            when set to ``"inv_sqrt_d_model"``.
        no_bias: drop every bias from linear and norm layers.
        embedding_fraction: scale the gradient reaching the embeddings by this fraction.
        norm_type: ``layernorm``, ``low_precision_layernorm``, ``rmsnorm`` or
            ``low_precision_rmsnorm``.
        norm_eps: epsilon of every norm.
        use_cache: return key/value caches for generation.
        init_config: parameter initialization options (see ``INIT_CONFIG_DEFAULTS``).
        fc_type: linear layer implementation: ``torch``, or ``{name: torch}`` as recent LLM
            Foundry exports write it.
        tie_word_embeddings: share the input embedding with the output projection.
        use_pad_tok_in_ffn: run the FFN on pad tokens too (True) or skip them (False).
        final_logit_softcapping: if set, logits become ``c * tanh(logits / c)``.
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
        embedding_fraction: float = 1.0,
        norm_type: str = "low_precision_layernorm",
        norm_eps: float = 1e-05,
        use_cache: bool = False,
        init_config: dict[str, Any] | None = None,
        fc_type: str | dict[str, Any] = "torch",
        tie_word_embeddings: bool = True,
        use_pad_tok_in_ffn: bool = True,
        final_logit_softcapping: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.expansion_ratio = expansion_ratio
        self.max_seq_len = max_seq_len
        self.vocab_size = vocab_size
        self.resid_pdrop = resid_pdrop
        self.emb_pdrop = emb_pdrop
        self.learned_pos_emb = learned_pos_emb
        self.attn_config = _merge_defaults("attn_config", attn_config, ATTN_CONFIG_DEFAULTS)
        pdrop = self.attn_config["attn_pdrop"]
        if isinstance(pdrop, float) and pdrop.is_integer():
            # transformers' own MptConfig types attn_pdrop as int and rejects 0.0; writing 0 keeps
            # an exported config.json readable by it, which AutoTokenizer.from_pretrained(folder)
            # does whenever trust_remote_code is off.
            self.attn_config["attn_pdrop"] = int(pdrop)
        self.ffn_config = _merge_defaults(
            "ffn_config",
            ffn_config,
            {**FFN_CONFIG_DEFAULTS, "ffn_act_fn": None, "ffn_hidden_size": None},
        )
        self.init_device = init_device
        self.logit_scale = logit_scale
        self.no_bias = no_bias
        self.embedding_fraction = embedding_fraction
        self.norm_type = norm_type
        self.norm_eps = norm_eps
        self.use_cache = use_cache
        self.init_config = _merge_defaults("init_config", init_config, INIT_CONFIG_DEFAULTS)
        self.fc_type = _fc_type_name(fc_type)
        self.use_pad_tok_in_ffn = use_pad_tok_in_ffn
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
        # transformers 5 no longer declares ``tie_word_embeddings`` on the base config; it is an
        # ordinary attribute, read by the model and written to config.json.
        self.tie_word_embeddings = tie_word_embeddings
        super().__init__(**kwargs)
        self._validate()

    @property
    def rope_position_scale(self) -> float:
        """Multiplier of positions before the rotation (``1 / factor`` for ``linear`` scaling)."""
        hf = self.attn_config["rope_hf_config"]
        if self.attn_config["rope_impl"] == "hf" and hf.get("type") == "linear":
            return 1.0 / float(hf["factor"])
        return 1.0

    def rope_theta_for(self, total_len: int) -> float:
        """The RoPE base for a sequence of ``total_len`` tokens (cache included).

        It is ``rope_theta``, except with ``rope_hf_config.type: dynamic`` past ``max_seq_len``,
        where the base grows as in dynamic NTK scaling (transformers' ``dynamic`` rope type):
        ``theta * (factor * len / max_seq_len - (factor - 1)) ** (d / (d - 2))``.
        """
        attn = self.attn_config
        theta = float(attn["rope_theta"])
        hf = attn["rope_hf_config"]
        if (
            attn["rope_impl"] != "hf"
            or hf.get("type") != "dynamic"
            or total_len <= self.max_seq_len
        ):
            return theta
        head_dim = self.d_model // self.n_heads
        factor = float(hf["factor"])
        growth = factor * total_len / self.max_seq_len - (factor - 1)
        return theta * growth ** (head_dim / (head_dim - 2))

    def _validate_rope(self) -> None:
        """Check the RoPE settings this implementation can honour."""
        attn = self.attn_config
        if (self.d_model // self.n_heads) % 2:
            raise MPTConfigError(
                f"model.attn_config.rope needs an even head size; d_model/n_heads is {self.d_model // self.n_heads}"
            )
        if attn["rope_impl"] not in ROPE_IMPLS:
            raise MPTConfigError(
                f"model.attn_config.rope_impl={attn['rope_impl']!r} is not supported; choose one of {', '.join(ROPE_IMPLS)}"
            )
        dail_type = attn["rope_dail_config"].get("type")
        if attn["rope_impl"] == "dail" and dail_type != "original":
            raise MPTConfigError(
                f"model.attn_config.rope_dail_config.type={dail_type!r} is not supported; use 'original' "
                "(xpos rescales cached keys as the sequence grows, which a KV cache cannot honour)"
            )
        hf_type = attn["rope_hf_config"].get("type")
        if attn["rope_impl"] == "hf" and hf_type not in ROPE_HF_TYPES:
            raise MPTConfigError(
                f"model.attn_config.rope_hf_config.type={hf_type!r} is not supported; "
                f"choose one of {', '.join(ROPE_HF_TYPES)}"
            )
        if (
            attn["rope_impl"] == "hf"
            and hf_type != "no_scaling"
            and not float(attn["rope_hf_config"]["factor"]) > 0
        ):
            raise MPTConfigError("model.attn_config.rope_hf_config.factor must be positive")

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
    def ffn_hidden_size(self) -> int:
        """Hidden width of the feed-forward block."""
        explicit = self.ffn_config.get("ffn_hidden_size")
        if explicit is not None:
            return int(explicit)
        return int(self.d_model * self.expansion_ratio)

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
        if self.d_model % self.n_heads != 0:
            raise MPTConfigError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})"
            )
        checks: list[tuple[str, Any, tuple[Any, ...]]] = [
            ("attn_config.attn_type", attn["attn_type"], ATTN_TYPES),
            ("attn_config.attn_impl", attn["attn_impl"], ATTN_IMPLS),
            ("norm_type", self.norm_type, NORM_TYPES),
            ("ffn_config.ffn_type", self.ffn_config["ffn_type"], FFN_TYPES),
            ("init_config.name", self.init_config["name"], INIT_NAMES),
            ("init_device", self.init_device, INIT_DEVICES),
            ("fc_type", self.fc_type, FC_TYPES),
        ]
        act = self.ffn_config.get("ffn_act_fn")
        if act is not None:
            checks.append(
                (
                    "ffn_config.ffn_act_fn",
                    act.get("name") if isinstance(act, dict) else act,
                    FFN_ACT_FNS,
                )
            )
        for key, value, allowed in checks:
            if value not in allowed:
                raise MPTConfigError(
                    f"model.{key}={value!r} is not supported; choose one of {', '.join(allowed)}"
                )
        if isinstance(self.logit_scale, str) and self.logit_scale != "inv_sqrt_d_model":
            raise MPTConfigError(
                f"model.logit_scale={self.logit_scale!r} is not supported; use a number or 'inv_sqrt_d_model'"
            )
        if not 0 < self.embedding_fraction <= 1:
            raise MPTConfigError(
                f"model.embedding_fraction={self.embedding_fraction} must be in (0, 1]"
            )
        for key in ("resid_pdrop", "emb_pdrop"):
            if not 0 <= getattr(self, key) <= 1:
                raise MPTConfigError(
                    f"model.{key}={getattr(self, key)} must be a probability in [0, 1]"
                )
        if not 0 <= attn["attn_pdrop"] <= 1:
            raise MPTConfigError(
                f"model.attn_config.attn_pdrop={attn['attn_pdrop']} must be in [0, 1]"
            )
        if attn["attn_type"] == "grouped_query_attention":
            kv = attn["kv_n_heads"]
            if kv is None or kv <= 0 or self.n_heads % kv != 0:
                raise MPTConfigError(
                    f"model.attn_config.kv_n_heads={kv} must be a positive divisor of n_heads={self.n_heads} "
                    "for grouped_query_attention"
                )
        softcap = attn["attn_logit_softcapping"]
        if softcap is not None and not softcap > 0:
            raise MPTConfigError(
                f"model.attn_config.attn_logit_softcapping={softcap} must be a positive number"
            )
        if self.final_logit_softcapping is not None and not self.final_logit_softcapping > 0:
            raise MPTConfigError(
                f"model.final_logit_softcapping={self.final_logit_softcapping} must be a positive number"
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
            self._validate_rope()
        window = attn["sliding_window_size"]
        if window is not None and window != -1 and (not isinstance(window, int) or window < 1):
            raise MPTConfigError(
                f"model.attn_config.sliding_window_size={window!r} must be -1 (off) or a positive integer"
            )
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
        self._validate_transformer_engine()

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
