"""Chat with a Hugging Face model in the terminal (commands: clear, history, quit/exit)."""

import argparse
import sys
from collections.abc import Iterator

from llmfoundry.command_utils.chat import chat_from_pretrained
from llmfoundry.command_utils.generate_flags import add_model_flags, add_sampling_flags, flag_names
from llmfoundry.utils.cli_utils import run_user_command


def typed_lines(prompt: str = "User: ") -> Iterator[str]:
    """What the user types, line by line, until end of input (Ctrl-D)."""
    while True:
        try:
            yield input(prompt)
        except EOFError:
            print()
            return


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_model_flags(parser)
    add_sampling_flags(parser, max_new_tokens=512, do_sample=True)
    parser.add_argument(*flag_names("system_prompt"), default=None)
    parser.add_argument(
        *flag_names("max_seq_len"),
        type=int,
        default=None,
        help="the longest conversation kept (default: the model's max positions); also sets "
        "the config's max_seq_len where it has one",
    )
    parser.add_argument(
        *flag_names("stop_tokens"),
        default=None,
        help="space-separated tokens that end a reply, e.g. '<|endoftext|> <|im_end|>' "
        "(default: the tokenizer's end of text, and ChatML's end marker where ChatML is used)",
    )
    sys.exit(
        run_user_command(chat_from_pretrained, lines=typed_lines(), **vars(parser.parse_args()))
    )
