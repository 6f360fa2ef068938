"""Load-test an OpenAI-compatible endpoint: N concurrent clients for T seconds, then a table.

    python scripts/inference/load_test.py --url http://127.0.0.1:8000 --clients 20 --seconds 60

Prints requests, requests/s, p50 and p99 latency, 429s apart from failures (by status) and,
with ``--server_pid``, the server's RSS at start, max and end. The logic lives in
``llmfoundry/inference/serve_load_test.py``.
"""

import sys

from llmfoundry.inference.serve_load_test import main

if __name__ == "__main__":
    sys.exit(main())
