"""Chat with a Hugging Face model in the terminal (commands: clear, history, quit/exit)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence

from llmfoundry.cli.argparsing import command_parser
from llmfoundry.cli.generate_flags import (
    add_model_flags,
    add_sampling_flags,
    flag_names,
    take_model_source,
    take_sampling,
)
from llmfoundry.inference.options import DEFAULT_SYSTEM_PROMPT, WARMUP_MESSAGE
from llmfoundry.utils.cli_utils import parse_bool, run_user_command


def _add_flags(parser: argparse.ArgumentParser) -> None:
    max_seq_len_help = (
        "the longest conversation kept (default: the model's max positions); also sets "
        "the config's max_seq_len where it has one"
    )
    add_model_flags(parser, helps={"max_seq_len": max_seq_len_help})
    add_sampling_flags(parser, max_new_tokens=512, do_sample=True)
    add = parser.add_argument
    add(*flag_names("system_prompt"), default=DEFAULT_SYSTEM_PROMPT)
    add(
        *flag_names("warmup"),
        type=parse_bool,
        nargs="?",
        const=True,
        default=True,
        help=f"first answer {WARMUP_MESSAGE!r} (kept in the conversation)",
    )
    add(
        *flag_names("stop_tokens"),
        default=None,
        help="space-separated tokens that end a reply, e.g. '<|endoftext|> <|im_end|>' "
        "(default: the tokenizer's end of text, and ChatML's end marker where ChatML is used)",
    )


build_parser = command_parser(__doc__, _add_flags)


def typed_lines(prompt: str = "User: ") -> Iterator[str]:
    """What the user types, line by line, until end of input (Ctrl-D)."""
    while True:
        try:
            yield input(prompt)
        except EOFError:
            print()
            return


def chat(args: argparse.Namespace) -> None:
    """Chat on the terminal until the user quits or input ends."""
    from llmfoundry.inference.chat import chat_from_pretrained

    source, sampling = take_model_source(args), take_sampling(args)
    chat_from_pretrained(source, typed_lines(), sampling, **vars(args))


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and chat; returns the exit code."""
    return run_user_command(chat, build_parser(prog).parse_args(argv))
