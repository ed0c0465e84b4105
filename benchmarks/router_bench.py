"""The router benchmark, ``lcha bench router``, runnable from here with the same arguments.

Raw ChatOpenAI, LangChain's ``primary(max_retries=0).with_fallbacks([secondary])``, LangChain's
``create_agent`` with ModelRetryMiddleware + ModelFallbackMiddleware, LiteLLM's Router (if
installed; "not installed" otherwise) and ResilientChatModel (with and without hedging), each
configured as its own docs recommend, against two simulator processes, per scenario (healthy,
outage, ratelimit, hang, stream_cut, stream_ignore[_preamble|_reword], flapping, agent_tools;
overhead_seq and overhead_c without latency).  Prints every contender's settings with the pages
they come from, a table of ok / errors / wrong / unfinished, completed/s, p50/p99 and primary
calls with ratios against raw, and ours against each peer.  With LiteLLM in a separate venv:
``/path/to/venv/bin/python benchmarks/router_bench.py ...``.
Run: python benchmarks/router_bench.py [--rounds 20 --scenarios healthy,overhead_seq] [--json F]
"""

from __future__ import annotations

import sys

from langchain_ha.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "router", *sys.argv[1:]]))
