"""Import the user's ``code_paths`` files, so that what they register is available by name."""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from llmfoundry.utils.exceptions import ConfigError, MissingFileError

logger = logging.getLogger(__name__)

# The package name under which code_paths files are imported (``llmfoundry_user_code.<stem>``).
USER_CODE_PACKAGE = "llmfoundry_user_code"


def import_code_paths(code_paths: Sequence[str] | None) -> None:
    """Import each ``code_paths`` file once (a second call with the same file is a no-op).

    The config loader imports them before it applies the ``config_transforms``, so a file may
    register transforms as well as models, loaders, callbacks, ...

    Raises:
        MissingFileError: if a file does not exist.
        ConfigError: if a file is not a Python file.
    """
    for index, path in enumerate(code_paths or ()):
        file = Path(path)
        if not file.is_file():
            raise MissingFileError(f"code_paths[{index}]: '{path}' does not exist")
        if file.suffix != ".py":
            raise ConfigError(f"code_paths[{index}]: '{path}' is not a Python (.py) file")
        name = f"{USER_CODE_PACKAGE}.{file.stem}"
        loaded = sys.modules.get(name)
        if loaded is not None and Path(str(loaded.__file__)).resolve() == file.resolve():
            continue
        spec = importlib.util.spec_from_file_location(name, file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        logger.info("imported code_paths[%d]: %s", index, path)
