"""Benchmark generate: latency and throughput over batch sizes x input lengths x output lengths.

Writes results.csv and latency_vs_throughput.png to --output_dir and prints the table.
"""

import argparse
import sys
from dataclasses import asdict

from llmfoundry.inference.flags import add_model_flags
from llmfoundry.inference.benchmark import run_benchmark
from llmfoundry.utils.cli_utils import run_user_command


def main(args: argparse.Namespace) -> None:
    """Run the benchmark and print one line per combination."""
    result = run_benchmark(**vars(args))
    print("batch_size,input_len,output_len,latency_s_mean,latency_s_std,tokens_per_s")
    for row in result.rows:
        print(
            ",".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in asdict(row).values())
        )
    print(f"wrote {result.csv_path} and {result.plot_path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_model_flags(parser)
    parser.add_argument("--output_dir", default="inference_benchmark")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--input_lens", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--output_lens", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--warmup_runs", type=int, default=1)
    parser.add_argument("--timed_runs", type=int, default=3)
    sys.exit(run_user_command(main, parser.parse_args()))
