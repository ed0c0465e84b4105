"""Gateway overhead: the official ``openai`` SDK through ``lcha serve`` (gateway mode over one
simulated provider) against the same SDK calling the simulator directly.

Both paths hit the same simulator process (no injected latency), one request at a time, so
the difference is what the gateway adds per request: the HTTP hop into the replica, request
validation and conversion, the router (breaker, provenance, metrics) and ChatOpenAI's own
client call, and the answer's conversion back.  Requests alternate between the two paths so
neither runs on a warmer machine.  Plain completions and streams (time to the last chunk).
Prints p50/p99 per path and the ratios.  One run.

Run: python benchmarks/gateway_overhead.py [requests per path and kind]
"""

from __future__ import annotations

import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from langchain_ha._percentile import percentile  # noqa: E402
from langchain_ha._proc import Child, free_port, python_argv  # noqa: E402

APP = '''
import os
from langchain_openai import ChatOpenAI
from langchain_ha.resilience.chat import Provider, ResilientChatModel

router = ResilientChatModel(providers=[Provider(name="sim", model=ChatOpenAI(
    base_url=os.environ["GW_BENCH_SIM"] + "/v1", api_key="k", model="sim-chat",
    max_retries=0))])
'''
MESSAGES = [{"role": "user", "content": "Where is order AB-1234?"}]


def _p(values: list[float], q: float) -> float:
    """The project's one (nearest-rank) percentile, 0 with no values."""
    return percentile(values, q) or 0.0


def _plain(client: openai.OpenAI, model: str) -> Callable[[], None]:
    def call() -> None:
        answer = client.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
        assert answer.choices[0].message.content

    return call


def _stream(client: openai.OpenAI, model: str) -> Callable[[], None]:
    def call() -> None:
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=model, messages=MESSAGES, stream=True) if c.choices)  # type: ignore[arg-type]
        assert text

    return call


def _timed(call: Callable[[], None]) -> float:
    began = time.perf_counter()
    call()
    return (time.perf_counter() - began) * 1000


def main(requests: int = 1000) -> None:
    with tempfile.TemporaryDirectory(prefix="lcha-gw-bench-") as tmp:
        work = Path(tmp)
        (work / "gw_bench_app.py").write_text(APP)
        sim_port, serve_port = free_port(), free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        sim = Child(python_argv("-m", "langchain_ha.providers.simulator", "--port",
                                str(sim_port), "--name", "bench"), name="sim",
                    log_path=work / "sim.log",
                    env={"LCHA_SIM_ADMIN_TOKEN": secrets.token_urlsafe(16),
                         "PYTHONPATH": str(ROOT / "src")})
        serve = Child(python_argv("-m", "langchain_ha.cli", "serve", "gw_bench_app:router",
                                  "--port", str(serve_port), "--max-inflight", "1000"),
                      name="lcha-serve", cwd=work, log_path=work / "serve.log",
                      env={"GW_BENCH_SIM": sim_url,
                           "PYTHONPATH": f"{work}:{ROOT / 'src'}"})
        try:
            sim.wait_http(sim_url + "/v1/models", timeout=30)
            serve.wait_http(f"http://127.0.0.1:{serve_port}/readyz", timeout=60)
            direct = openai.OpenAI(base_url=sim_url + "/v1", api_key="k", max_retries=0)
            gateway = openai.OpenAI(base_url=f"http://127.0.0.1:{serve_port}/v1",
                                    api_key="k", max_retries=0)
            paths = {"direct": (direct, "sim-chat"), "gateway": (gateway, "langchain-ha")}
            for kind, make in (("plain", _plain), ("stream", _stream)):
                calls = {name: make(client, model) for name, (client, model) in paths.items()}
                for _ in range(50):  # warm-up: connections, imports, caches
                    for call in calls.values():
                        call()
                samples: dict[str, list[float]] = {name: [] for name in calls}
                for _ in range(requests):
                    for name, call in calls.items():
                        samples[name].append(_timed(call))
                for name, values in samples.items():
                    print(f"{kind:6} {name:8} p50 {statistics.median(values):7.2f} ms  "
                          f"p99 {_p(values, 0.99):7.2f} ms")
                d, g = samples["direct"], samples["gateway"]
                print(f"{kind:6} ratio gateway/direct: p50 "
                      f"{statistics.median(g) / statistics.median(d):.2f}x "
                      f"(+{statistics.median(g) - statistics.median(d):.2f} ms), p99 "
                      f"{_p(g, 0.99) / _p(d, 0.99):.2f}x "
                      f"(+{_p(g, 0.99) - _p(d, 0.99):.2f} ms)  [{requests} requests each, "
                      "one at a time]")
        finally:
            serve.stop()
            sim.stop()


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:2]])
