"""Full-collection GC pause of a replica's heap, with and without ``gc.freeze()``.

A replica imports LangChain, the provider SDKs and pydantic models: ~180k objects the cyclic
GC walks on every full (generation 2) collection, stalling every request in flight.
``lcha serve`` freezes them after warm-up (``LCHA_GC_FREEZE``, on by default).  This builds
the support bot (the demo app) to get the same heap, then times full collections before and
after freezing.  Prints both and the ratio.
Run: python benchmarks/gc_pause.py [repeats]
"""

from __future__ import annotations

import gc
import statistics
import sys
import time


def _pause_ms(repeats: int) -> float:
    out = []
    for _ in range(repeats):
        began = time.perf_counter()
        gc.collect()
        out.append((time.perf_counter() - began) * 1e3)
    return statistics.median(out)


def main(repeats: int) -> None:
    from langchain_ha.demo.support_bot import BotSettings, build_support_bot

    nowhere = "http://127.0.0.1:9"  # nothing is called: only the heap matters here
    bot = build_support_bot(BotSettings.simulated(nowhere, nowhere))
    tracked = len(gc.get_objects())
    before = _pause_ms(repeats)
    gc.freeze()
    after = _pause_ms(repeats)
    print(f"objects tracked by the GC       {tracked}")
    print(f"full collection, not frozen     {before:.1f} ms")
    print(f"full collection, after freeze   {after * 1e3:.1f} us  ({gc.get_freeze_count()} frozen)")
    print(f"ratio                           {before / after:,.0f}x shorter")
    del bot


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
