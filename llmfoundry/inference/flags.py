"""The generation commands' flags; they live in :mod:`llmfoundry.cli.generate_flags` (which
imports no torch) and keep this name for the code that imports them from here."""

from llmfoundry.cli.generate_flags import (
    add_model_flags,
    add_sampling_flags,
    flag_names,
    parse_auth_token,
)

__all__ = ["add_model_flags", "add_sampling_flags", "flag_names", "parse_auth_token"]
