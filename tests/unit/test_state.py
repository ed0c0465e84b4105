"""The deployment's state file: typed, validated on write and read, replaced atomically."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from langchain_ha.cluster.state import (
    DeploymentState,
    MemberRecord,
    ReplicaRecord,
    StateDir,
    StateFileError,
)


def test_a_written_state_reads_back_typed_and_private(tmp_path: Path) -> None:
    sd = StateDir(tmp_path / "dep")
    assert sd.state().updated_at is None and sd.state().replicas == []  # nothing written yet
    sd.create()
    state = DeploymentState(
        phase="ready", generation=2, apps={1: "a:b", 2: "c:d"}, per_zone=2,
        replicas=[ReplicaRecord(id="az1-1", zone="az1", port=8101, pid=42, state="ready")],
        slots={"az1": [8101, 8102]}, updated_at=1.0)
    state.database.enabled = True
    state.database.members.append(MemberRecord(name="lcha-az1", role="leader", port=5432))
    sd.write_state(state)
    assert stat.S_IMODE(sd.state_file.stat().st_mode) == 0o600
    back = sd.state()
    assert back == state
    assert back.apps[2] == "c:d" and back.replicas[0].state == "ready"  # int keys, typed


def test_fields_another_version_wrote_are_kept_and_a_wrong_one_is_named(tmp_path: Path) -> None:
    sd = StateDir(tmp_path)
    raw = {"replicas": [{"id": "r1", "zone": "az1", "port": 1, "region": "eu"}],
           "something_new": True}
    sd.state_file.write_text(json.dumps(raw))
    assert sd.state().replicas[0].model_extra == {"region": "eu"}
    sd.state_file.write_text(json.dumps({"replicas": [{"id": "r1", "zone": "az1",
                                                       "port": "not a port"}]}))
    with pytest.raises(StateFileError, match=r"replicas\.0\.port"):
        sd.state()
