"""``llmfoundry``: the command-line entry point.

Every script under ``scripts/`` is a command here too, with the same flags (each flag in both
its ``--snake_case`` and ``--kebab-case`` spelling): ``llmfoundry train <yaml> [key=value ...]``,
``llmfoundry data_prep convert_dataset_json --path ...``, ``llmfoundry generate -n ...``. Those
commands hand their arguments to the script's parser (so ``--help`` shows the script's flags);
nothing heavy (torch, transformers, Composer) is imported until a command runs.
"""

from __future__ import annotations

import typer

from llmfoundry.cli import eval_cli, plot_cli, registry_cli
from llmfoundry.cli.commands import (
    convert_composer_to_hf,
    convert_dataset_hf,
    convert_dataset_json,
    convert_finetuning_dataset,
    convert_hf_to_onnx,
    convert_text_to_mds,
    demo,
    endpoint_generate,
    hf_chat,
    hf_generate,
    merge_lora,
    serve,
    train,
    web_ui,
)
from llmfoundry.cli.pass_through import QuickHelpCommand, QuickHelpGroup, add_pass_through

app = typer.Typer(
    cls=QuickHelpGroup,
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: Rich's help formatting would import Rich (~0.3 s)
    help="LLM Foundry: train, evaluate, export and serve LLMs.",
)
add_pass_through(app, "train", train.main, "Train a model from a YAML run config.")
app.add_typer(eval_cli.app, name="eval")

data_prep = typer.Typer(
    cls=QuickHelpGroup, no_args_is_help=True, help="Convert datasets to MDS for training."
)
for _name, _main, _help in [
    (
        "convert_dataset_hf",
        convert_dataset_hf.main,
        "A Hugging Face dataset (Hub name or local files) to MDS.",
    ),
    # Its command writes zstd shards by default, as LLM Foundry's does (the script: none).
    (
        "convert_dataset_json",
        convert_dataset_json.cli_main,
        "JSON-lines files (a 'text' field) to MDS.",
    ),
    (
        "convert_finetuning_dataset",
        convert_finetuning_dataset.main,
        "Finetuning examples (prompt/response or chats) to MDS.",
    ),
    (
        "convert_text_to_mds",
        convert_text_to_mds.main,
        "A folder of *.txt files to concatenated-token MDS.",
    ),
]:
    add_pass_through(data_prep, _name, _main, _help)
app.add_typer(data_prep, name="data_prep")

convert = typer.Typer(
    cls=QuickHelpGroup, no_args_is_help=True, help="Convert checkpoints and models."
)
add_pass_through(
    convert,
    "composer-to-hf",
    convert_composer_to_hf.main,
    "A Composer checkpoint to a Hugging Face model folder.",
)
add_pass_through(
    convert, "hf-to-onnx", convert_hf_to_onnx.main, "A Hugging Face causal LM folder to ONNX."
)
app.add_typer(convert, name="convert")

add_pass_through(
    app, "generate", hf_generate.main, "Generate text from a Hugging Face model folder."
)
add_pass_through(app, "chat", hf_chat.main, "Chat with a Hugging Face model in the terminal.")
add_pass_through(
    app, "serve", serve.main, "Serve a model behind an OpenAI-compatible HTTP endpoint."
)
add_pass_through(app, "web-ui", web_ui.main, "Try a model in the browser (Gradio).")
add_pass_through(
    app,
    "endpoint-generate",
    endpoint_generate.main,
    "Send a file of prompts to an OpenAI-compatible endpoint.",
)
add_pass_through(app, "merge-lora", merge_lora.main, "Merge a LoRA adapter into its base model.")
add_pass_through(app, "demo", demo.main, "The end-to-end demo on CPU, offline.")
app.add_typer(registry_cli.app, name="registry")
app.command(
    "plot", cls=QuickHelpCommand, short_help="Redraw a training run's metrics plot (metrics.png)."
)(plot_cli.plot)

if __name__ == "__main__":
    app()
