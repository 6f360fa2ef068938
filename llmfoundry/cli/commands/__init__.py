"""One module per command-line entry point: its argparse parser and its ``main``.

Each module offers ``build_parser(prog=None)`` and ``main(argv=None, prog=None) -> int``; the
scripts under ``scripts/`` and the ``llmfoundry`` command both call ``main``. These modules
import only the standard library and light ``llmfoundry`` modules; ``main`` imports the command
itself (torch, transformers, Composer, ...) once the arguments have parsed, so that ``--help``
and bad flags are answered at once.
"""
