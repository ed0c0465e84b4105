"""The deployment's app environment: providers by kind, rendered once, read back by any app."""

from __future__ import annotations

import json

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_openai import ChatOpenAI

from langchain_ha import AppEnvironment, DeploymentConfigError, ProviderEntry, router_from_env
from langchain_ha._usage import UsageError
from langchain_ha.cluster.replicas import Simulator, app_env
from langchain_ha.cluster.topology import ProviderSpec, load_topology
from langchain_ha.deploy.k8s import replica_env

THREE = {"app": "langchain_ha.demo.router_app:router", "providers": [
    {"name": "gpt", "kind": "openai", "model": "gpt-4.1-mini", "simulated": False,
     "api_key_env": "OPENAI_API_KEY", "timeout_s": 20, "context_window": 128000},
    {"name": "claude", "kind": "anthropic", "model": "claude-sonnet-4-5", "simulated": False,
     "api_key_env": "ANTHROPIC_API_KEY", "accepts_prefill": True},
    {"name": "gemini", "kind": "google"},
]}


def _topology(tmp_path, data):
    import yaml

    path = tmp_path / "lcha.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_topology(path)


def test_the_local_and_kubernetes_mappings_give_the_same_providers(tmp_path):
    topo = _topology(tmp_path, THREE)
    sim = Simulator(spec=topo.providers[2], port=18999, proc=None)  # type: ignore[arg-type]
    local = AppEnvironment.from_env(app_env(topo, {"gemini": sim}))
    k8s_env = {e["name"]: e for e in replica_env(topo)}
    k8s = AppEnvironment.from_env({k: e["value"] for k, e in k8s_env.items() if "value" in e})
    assert [(p.name, p.kind, p.model) for p in local.providers] == [
        ("gpt", "openai", "gpt-4.1-mini"), ("claude", "anthropic", "claude-sonnet-4-5"),
        ("gemini", "google", "gemini-2.5-flash")]
    # The two renderings differ only in where the simulator is.
    assert local.providers[:2] == k8s.providers[:2]
    assert local.providers[2].base_url == "http://127.0.0.1:18999"
    assert k8s.providers[2].base_url.endswith(":8900")
    assert local.providers[0].timeout_s == 20 and local.providers[0].context_window == 128000
    assert local.providers[1].accepts_prefill is True
    # Keys travel by name only; Kubernetes fills each named variable from the secret.
    assert "sk-" not in json.dumps(k8s_env)
    assert k8s_env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "OPENAI_API_KEY"
    assert k8s_env["ANTHROPIC_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "ANTHROPIC_API_KEY"


def test_router_from_env_builds_each_kind_with_its_settings(tmp_path):
    topo = _topology(tmp_path, THREE)
    sim = Simulator(spec=topo.providers[2], port=18999, proc=None)  # type: ignore[arg-type]
    env = {**app_env(topo, {"gemini": sim}), "OPENAI_API_KEY": "sk-test-1",
           "ANTHROPIC_API_KEY": "sk-ant-test"}
    router = router_from_env(env)
    models = {p.name: p for p in router.providers}
    assert list(models) == ["gpt", "claude", "gemini"]
    gpt, claude, gemini = models["gpt"], models["claude"], models["gemini"]
    assert isinstance(gpt.model, ChatOpenAI) and gpt.model.model_name == "gpt-4.1-mini"
    assert gpt.model.openai_api_key.get_secret_value() == "sk-test-1"
    assert gpt.model.max_retries == 0 and gpt.timeout_s == 20
    assert isinstance(claude.model, ChatAnthropic) and claude.accepts_prefill
    assert claude.model.anthropic_api_key.get_secret_value() == "sk-ant-test"
    assert isinstance(gemini.model, ChatGoogleGenerativeAI)
    assert [p.name for p in router_from_env(env, only=["gemini"]).providers] == ["gemini"]


def test_a_missing_key_names_the_variable_to_set(tmp_path):
    topo = _topology(tmp_path, THREE)
    sim = Simulator(spec=topo.providers[2], port=18999, proc=None)  # type: ignore[arg-type]
    env = app_env(topo, {"gemini": sim})
    with pytest.raises(DeploymentConfigError, match="set OPENAI_API_KEY"):
        router_from_env(env)
    with pytest.raises(DeploymentConfigError, match=r"\['nope'\] are not in LCHA_PROVIDERS"):
        router_from_env(env, only=["nope"])
    with pytest.raises(DeploymentConfigError, match="set LCHA_PROVIDERS"):
        router_from_env({})


@pytest.mark.parametrize(("value", "message"), [
    ("{", "is not JSON"),
    ('{"name": "a"}', "must be a JSON list"),
    ('[{"name": "a", "kind": "cohere", "model": "m"}]', r"LCHA_PROVIDERS\[0\]: kind"),
    ('[{"name": "a", "kind": "openai"}]', r"LCHA_PROVIDERS\[0\]: model"),
    ('[{"name": "a", "kind": "openai", "model": "m"}, {"name": "a", "kind": "google", '
     '"model": "m"}]', "distinct"),
])
def test_a_bad_providers_value_names_the_field(value, message):
    with pytest.raises(DeploymentConfigError, match=message):
        AppEnvironment.from_env({"LCHA_PROVIDERS": value})


def test_an_openai_compatible_provider_needs_its_url():
    entry = ProviderEntry(name="local", kind="openai-compatible", model="llama",
                          api_key_env="LOCAL_KEY")
    with pytest.raises(DeploymentConfigError, match="needs base_url"):
        entry.chat_model({"LOCAL_KEY": "k"})


@pytest.mark.parametrize(("spec", "message"), [
    ({"name": "a", "simulated": False, "kind": "openai"}, "needs api_key_env and model"),
    ({"name": "a", "simulated": False, "kind": "openai-compatible", "model": "m",
      "api_key_env": "K"}, "needs base_url"),
])
def test_a_real_provider_in_the_topology_says_what_it_lacks(tmp_path, spec, message):
    with pytest.raises(UsageError, match=message):
        _topology(tmp_path, {"app": "x.y:z", "providers": [spec]})


def test_a_simulated_entry_points_each_kind_at_the_simulator():
    assert ProviderSpec(name="a").entry("http://h:1/").base_url == "http://h:1/v1"
    assert ProviderSpec(name="b", kind="anthropic").entry("http://h:1").base_url == "http://h:1"
    assert ProviderSpec(name="c", kind="anthropic").entry("http://h:1").model == "sim-claude"


def test_the_idempotency_store_follows_the_deployment() -> None:
    from langchain_ha.serve.idempotency import InMemoryIdempotencyStore, SharedIdempotencyStore
    from langchain_ha.serve.server import idempotency_store
    from langchain_ha.serve.settings import ServeSettings

    writer = {"LCHA_DB_WRITER": "host=127.0.0.1 port=1 dbname=app"}
    auto = ServeSettings()
    assert isinstance(idempotency_store(auto, writer), SharedIdempotencyStore)
    assert isinstance(idempotency_store(auto, {}), InMemoryIdempotencyStore)
    memory = ServeSettings(idempotency_store="memory")
    assert isinstance(idempotency_store(memory, writer), InMemoryIdempotencyStore)
    with pytest.raises(UsageError, match="LCHA_DB_WRITER"):
        idempotency_store(ServeSettings(idempotency_store="postgres"), {})
