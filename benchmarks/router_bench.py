"""The router benchmark, ``lcha bench router``, runnable from here with the same arguments.

Raw ChatOpenAI, LangChain's with_retry().with_fallbacks(), LiteLLM's Router (if installed) and
ResilientChatModel against two simulator processes, per scenario (healthy, outage, ratelimit,
hang, stream_cut; overhead_seq and overhead_c without latency).  Prints a table with ratios and
p50 differences against raw.
Run: python benchmarks/router_bench.py [--rounds 20 --scenarios healthy,overhead_seq] [--json F]
"""

from __future__ import annotations

import sys

from langchain_ha.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "router", *sys.argv[1:]]))
