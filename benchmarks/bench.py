"""Throughput and memory benchmark of the allinone-ir networks.

Same options as ``allinone-ir bench`` (see ``python benchmarks/bench.py --help`` and
``benchmarks/README.md``). Example::

    python benchmarks/bench.py --models promptir,restormer --sizes 256 \\
        --dtypes fp32,bf16 --memory-formats contiguous,channels_last --threads 2 --json bench.json
"""

from __future__ import annotations

from allinone_ir.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
