"""The gateway through ``lcha up``'s balancer: the official SDK against Caddy in front of
replicas serving the demo router (``lcha rollout --app langchain_ha.demo.router_app:router``),
with the primary provider healthy, then down.

Slow (a whole deployment); one test.  The deployment starts with the support bot, whose
``/v1/invoke`` answers ``lcha up``'s first question, then rolls out the router.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from pydantic import BaseModel

from langchain_ha.providers import admin_headers, expected_answer
from tests.support.fixtures_up import Deployment

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

TOPOLOGY = """\
zones: [az1, az2]
database: {enabled: false}
providers:
  - {name: openai, latency_ms: 5, jitter_ms: 0}
  - {name: anthropic, kind: anthropic, latency_ms: 5, jitter_ms: 0}
"""
Q = "Where is order AB-1234?"
TOOL = {"type": "function", "function": {"name": "order_status", "parameters": {
    "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}


class Order(BaseModel):
    answer: str
    order_id: str


@pytest.fixture(scope="module")
def gateway_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("gw-up")
    (root / "lcha.yaml").write_text(TOPOLOGY)
    dep = Deployment(root / "state")
    up = subprocess.run([sys.executable, "-m", "langchain_ha.cli", "up", "-f",
                         str(root / "lcha.yaml"), "--port", "0", "--state-dir",
                         str(dep.state_dir)], capture_output=True, text=True, timeout=300,
                        check=False, cwd=Path(root))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        rolled = dep.lcha("rollout", "--app", "langchain_ha.demo.router_app:router")
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        yield dep
    finally:
        dep.lcha("down", timeout=180)


def test_the_sdk_through_the_balancer(gateway_deployment: Deployment) -> None:
    dep = gateway_deployment
    client = openai.OpenAI(base_url=dep.url + "/v1", api_key=dep.api_key, max_retries=0,
                           timeout=30)
    answer = client.chat.completions.create(model="langchain-ha",
                                            messages=[{"role": "user", "content": Q}])
    assert answer.choices[0].message.content == expected_answer([("user", Q)])
    assert answer.model == "sim-chat" and answer.usage is not None
    lcha = (answer.model_extra or {})["lcha"]
    assert lcha["provider"] == "openai" and lcha["zone"] in ("az1", "az2")
    assert [m.id for m in client.models.list()][:2] == ["langchain-ha", "openai"]
    call = client.chat.completions.create(
        model="langchain-ha", messages=[{"role": "user", "content": Q}], tools=[TOOL],  # type: ignore[list-item]
        tool_choice="required")
    assert json.loads(call.choices[0].message.tool_calls[0].function.arguments) == {  # type: ignore[index,union-attr]
        "order_id": "AB-1234"}
    parsed = client.chat.completions.parse(model="langchain-ha", response_format=Order,
                                           messages=[{"role": "user", "content": Q}])
    assert parsed.choices[0].message.parsed == Order(answer=expected_answer([("user", Q)]),
                                                     order_id="AB-1234")
    three = client.chat.completions.create(model="langchain-ha", n=3, max_tokens=2,
                                           messages=[{"role": "user", "content": Q}])
    assert [c.finish_reason for c in three.choices] == ["length"] * 3
    chunks = list(client.chat.completions.create(
        model="langchain-ha", messages=[{"role": "user", "content": Q}], stream=True,
        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        expected_answer([("user", Q)])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="langchain-ha", messages=[], )
    assert bad.value.body["param"] == "messages"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": Q}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=dep.url + "/v1", api_key="nope", max_retries=0).models.list()
    # The primary down: the same request answered by the next provider, and it says so.
    primary = dep.sd.state().simulators["openai"].url
    token = dep.sd.secrets()["sim_admin_token"]
    httpx.post(primary + "/_faults", json={"status": 500}, headers=admin_headers(token),
               timeout=10).raise_for_status()
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="langchain-ha", messages=[{"role": "user", "content": Q}])
        down = raw.parse()
        assert down.choices[0].message.content == expected_answer([("user", Q)])
        assert (down.model_extra or {})["lcha"]["provider"] == "anthropic"
        assert raw.headers["x-lcha-degraded"] == "primary_llm"
    finally:
        httpx.delete(primary + "/_faults", headers=admin_headers(token), timeout=10)
