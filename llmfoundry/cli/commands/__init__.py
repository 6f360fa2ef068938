"""One module per command-line entry point: its argparse parser and its ``main``.

Each module offers ``build_parser(prog=None)`` and ``main(argv=None, prog=None) -> int``; the
scripts under ``scripts/`` and the ``llmfoundry`` command both call ``main``. A module's
docstring is its command's ``--help`` description; its ``_add_flags(parser)`` declares the flags
(under LLM Foundry's names where LLM Foundry has the command) and
``build_parser = command_parser(__doc__, _add_flags)`` (``llmfoundry.cli.argparsing``) makes
each one accept both spellings. These modules
import only the standard library and light ``llmfoundry`` modules; ``main`` imports the command
itself (torch, transformers, Composer, ...) once the arguments have parsed, so that ``--help``
and bad flags are answered at once.
"""
