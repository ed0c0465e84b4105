"""``lcha demo``: a LangChain app keeps answering while its primary LLM provider fails.

Starts two provider simulators (OpenAI- and Anthropic-compatible) as real processes, builds a
:class:`ResilientChatModel` over real ``ChatOpenAI`` and ``ChatAnthropic`` clients, and sends
questions in three phases: healthy, primary outage (HTTP 500), primary recovered.  Then it
cuts a stream mid-way and shows the answer continued on the fallback.  Every answer is checked
against the simulator's deterministic answer; the exit code is 0 only if none failed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI

from langchain_ha._files import private_dir
from langchain_ha._proc import Child, free_port, python_argv
from langchain_ha.providers import ADMIN_TOKEN_ENV, admin_headers, expected_answer
from langchain_ha.resilience.breaker import BreakerConfig
from langchain_ha.resilience.chat import Provider, ResilientChatModel

KEY = "demo-key"


def _start_sim(name: str, logdir: Path, admin_token: str) -> tuple[Child, str]:
    port = free_port()
    child = Child(
        python_argv("-m", "langchain_ha.providers.simulator", "--port", str(port), "--name",
                    name, "--latency-ms", "40", "--jitter-ms", "30"),
        name=f"sim-{name}", log_path=logdir / f"{name}.log",
        env={ADMIN_TOKEN_ENV: admin_token},
    )
    url = f"http://127.0.0.1:{port}"
    child.wait_http(url + "/v1/models", timeout=30, status=None)
    return child, url


def _router(primary: str, secondary: str) -> ResilientChatModel:
    return ResilientChatModel(
        providers=[
            Provider(name="openai-primary", model=ChatOpenAI(
                base_url=primary + "/v1", api_key=KEY, model="sim-chat", max_retries=0)),  # type: ignore[arg-type]
            Provider(name="anthropic-fallback", model=ChatAnthropic(  # type: ignore[call-arg]
                base_url=secondary, api_key=KEY, model="sim-claude", max_retries=0)),  # type: ignore[arg-type]
        ],
        breaker=BreakerConfig(open_duration_s=2.0),
    )


async def _phase(model: ResilientChatModel, label: str, count: int, start: int) -> Counter[str]:
    tally: Counter[str] = Counter()
    for i in range(start, start + count):
        question = f"How do I reset the password of account {i}?"
        try:
            msg = await model.ainvoke([HumanMessage(content=question)])
        except Exception as exc:
            tally["failed"] += 1
            print(f"  {label:9} #{i:<3} FAILED {type(exc).__name__}")
            continue
        provider = msg.response_metadata["lcha"]["provider"]
        correct = msg.content == expected_answer([("user", question)])
        tally[provider if correct else "wrong"] += 1
        await asyncio.sleep(0.02)
    print(f"  {label:9} {count} questions -> " + ", ".join(f"{k}: {v}" for k, v in tally.items()))
    return tally


async def _run(primary: str, secondary: str, requests: int, admin_token: str) -> int:
    model = _router(primary, secondary)
    third = max(1, requests // 3)
    total: Counter[str] = Counter()
    async with httpx.AsyncClient(headers=admin_headers(admin_token)) as admin:
        print("phase 1: both providers healthy")
        total += await _phase(model, "healthy", third, 0)
        print("phase 2: primary returns HTTP 500 to every request")
        (await admin.post(primary + "/_faults", json={"status": 500})).raise_for_status()
        total += await _phase(model, "outage", third, third)
        calls = (await admin.get(primary + "/_stats")).raise_for_status().json()[
            "received"].get("chat", 0)
        print(f"  the dead primary was called {calls} times in all (circuit breaker)")
        print("phase 3: primary recovers; the breaker probes it and closes")
        (await admin.delete(primary + "/_faults")).raise_for_status()
        await asyncio.sleep(2.2)
        total += await _phase(model, "recovered", requests - 2 * third, 2 * third)
        print("phase 4: the primary's stream dies after 3 chunks")
        (await admin.post(primary + "/_faults", json={"disconnect_after_chunks": 3})
         ).raise_for_status()
        model = _router(primary, secondary)
        question = "What does the premium plan include?"
        parts = [str(c.content) async for c in model.astream([HumanMessage(content=question)])]
        text = "".join(parts)
        ok = text == expected_answer([("user", question)])
        print(f"  streamed {len(parts)} chunks, continued on the fallback, answer intact: {ok}")
        total["stream_ok" if ok else "failed"] += 1
    failed = total["failed"] + total["wrong"]
    print(f"\nanswers: {sum(total.values())}, failed or wrong: {failed}")
    return 0 if failed == 0 else 1


def main(requests: int = 60) -> int:
    """Run the demo; return the process exit code."""
    given = os.environ.get("LCHA_DEMO_LOGDIR")
    logdir = private_dir(given or tempfile.mkdtemp(prefix="lcha-demo-"))
    children: list[Child] = []
    began = time.monotonic()
    token = secrets.token_urlsafe(24)  # the simulators' admin API, for this run only
    code = 1
    try:
        p_child, primary = _start_sim("primary", logdir, token)
        children.append(p_child)
        s_child, secondary = _start_sim("secondary", logdir, token)
        children.append(s_child)
        print(f"simulators: primary {primary}, fallback {secondary} (logs in {logdir})")
        code = asyncio.run(_run(primary, secondary, requests, token))
    finally:
        for child in children:
            child.stop()
        if code == 0 and not given:  # our own temporary logs: kept only when something failed
            shutil.rmtree(logdir, ignore_errors=True)
    print(f"done in {time.monotonic() - began:.1f}s; simulators stopped")
    return code
