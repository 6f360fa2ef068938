"""Benchmark generate: latency and throughput over batch sizes x input lengths x output lengths.

Writes results.csv and latency_vs_throughput.png to --output_dir and prints the table. The flags
and logic live in ``llmfoundry/inference/benchmark.py``.
"""

import sys

from llmfoundry.inference.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
