"""`kvmount mount` against the Key Vault double: the files, their modes, and where they land."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvmount.volume import mounts
from tests.peers.keyvault_double import Fault, KeyVaultDouble

pytestmark = pytest.mark.peer  # each test runs kvmount as a process

VAULT = "kvtest"
VALUE = "mount-command-secret-value"


def write_inputs(kv: KeyVaultDouble, base: Path, objects: list[dict[str, Any]]) -> tuple[Path, Path]:
    client, secret = f"mc-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    kv.register_aad_client(client, secret=secret)
    parameters = {
        "keyvaultName": VAULT,
        "tenantID": kv.tenant,
        "cloudName": "AzureStackCloud",
        "cloudEnvFileName": kv.write_cloud_env(base / "azurestack.json"),
        "objects": yaml.safe_dump({"array": [yaml.safe_dump(o) for o in objects]}),
    }
    spc = {"kind": "SecretProviderClass", "spec": {"provider": "azure", "parameters": parameters}}
    (base / "class.yaml").write_text(yaml.safe_dump(spc))
    (base / "secrets.yaml").write_text(yaml.safe_dump({"clientid": client, "clientsecret": secret}))
    return base / "class.yaml", base / "secrets.yaml"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("memory", [False, True], ids=["disk", "tmpfs"])
def test_requested_modes_and_a_warning_for_a_disk_target(
    kv_env: KeyVaultDouble, tmp_path: Path, memory: bool
) -> None:
    if memory and os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    plain, private = f"plain-{uuid.uuid4().hex[:8]}", f"private-{uuid.uuid4().hex[:8]}"
    for name in (plain, private):
        kv_env.put_secret(VAULT, name, VALUE)
    objects = [
        {"objectName": plain, "objectType": "secret"},
        {"objectName": private, "objectType": "secret", "filePermission": "0640"},
    ]
    spc, secrets = write_inputs(kv_env, tmp_path, objects)
    target = tmp_path / "out"
    assert mounts.filesystem_of(str(tmp_path)) not in mounts.MEMORY_FILESYSTEMS, "tmp_path must be on disk"
    if memory:
        target.mkdir()
        mounts.mount_tmpfs(str(target), 1 << 20)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "kvmount.cli", "mount", "--class", str(spc), "--target", str(target),
             "--secrets", str(secrets), "--permission", "0600"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert sorted(done.stdout.split()) == sorted([plain, private])
        assert (mode(target / plain), mode(target / private)) == (0o600, 0o640)
        warnings = [line for line in done.stderr.splitlines() if "not memory-backed" in line]
        if memory:
            assert warnings == []
        else:
            assert len(warnings) == 1 and f"target={target}" in warnings[0], done.stderr
            assert "filesystem=" in warnings[0] and "filesystem=tmpfs" not in warnings[0]
        assert VALUE not in done.stderr
    finally:
        if memory:
            mounts.unmount(str(target))


def mount_faulted(kv: KeyVaultDouble, base: Path, fault: Fault, *flags: str) -> tuple[str, float, str]:
    """`kvmount mount` of one secret whose reads (or, for a token route's fault, its identity's
    token requests) take ``fault``: (its name, seconds, stderr)."""
    name = f"{fault.kind}-{uuid.uuid4().hex[:8]}"
    kv.put_secret(VAULT, name, VALUE)
    spc, secrets = write_inputs(kv, base, [{"objectName": name, "objectType": "secret"}])
    if fault.service == "keyvault":
        kv.set_faults(dataclasses.replace(fault, path=name))
    else:  # the token requests of the class's service principal
        kv.set_faults(dataclasses.replace(fault, client=yaml.safe_load(secrets.read_text())["clientid"]))
    start = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "kvmount.cli", "mount", "--class", str(spc), "--target", str(base / "out"),
             "--secrets", str(secrets), *flags],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        kv.set_faults()
    assert done.returncode == 1 and done.stdout == "" and "Traceback" not in done.stderr, done.stderr
    assert VALUE not in done.stderr and not (base / "out").exists()
    return name, time.monotonic() - start, done.stderr


@pytest.mark.parametrize(
    "fault",
    [Fault("gzip-bomb", count=100, size=64 << 20), Fault("huge-body", count=100, size=8 << 20)],
    ids=["gzip-bomb", "huge-body"],
)
def test_an_answer_past_the_object_cap_is_refused_naming_the_object(
    kv_env: KeyVaultDouble, tmp_path: Path, fault: Fault
) -> None:
    name, _, stderr = mount_faulted(kv_env, tmp_path, fault)
    assert name in stderr and "--max-object-bytes" in stderr


@pytest.mark.parametrize(
    "fault",
    [
        Fault("gzip-bomb", count=100, size=64 << 20, service="aad"),
        Fault("drip", count=100, seconds=0.2, size=10_000, service="aad"),
    ],
    ids=["gzip-bomb", "drip"],
)
def test_a_hostile_token_answer_fails_the_mount_in_one_line(
    kv_env: KeyVaultDouble, tmp_path: Path, fault: Fault
) -> None:
    _, seconds, stderr = mount_faulted(kv_env, tmp_path, fault, "--mount-timeout=3s")
    # The error is one line (azure-identity may log its own warning before it).
    error = stderr.strip().splitlines()[-1]
    assert error.startswith("kvmount mount: keyvault ") and "access_token" not in stderr, stderr
    assert ("--max-token-answer-bytes" if fault.kind == "gzip-bomb" else "time budget") in error, stderr
    assert seconds < 20


def test_a_drip_fed_read_ends_at_the_mount_timeout(kv_env: KeyVaultDouble, tmp_path: Path) -> None:
    # A byte every 0.2 s: the 30 s read timeout would never pass between two of them.
    fault = Fault("drip", count=100, seconds=0.2, size=10_000)
    name, seconds, stderr = mount_faulted(kv_env, tmp_path, fault, "--mount-timeout=3s")
    assert name in stderr and "time budget" in stderr
    assert seconds < 20


def test_selection_and_json_parts_through_the_shared_pipeline(kv_env: KeyVaultDouble, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    kv_env.put_secret(VAULT, f"{run}-db", '{"user": "app", "port": 5432}', tags={"run": run})
    kv_env.put_secret(VAULT, f"{run}-api", "token", tags={"run": run})
    objects: list[dict[str, Any]] = [
        {"objectTags": {"run": run}, "objectType": "secret", "objectAlias": "all"},
        {
            "objectName": f"{run}-db",
            "objectType": "secret",
            "jmesPath": [{"path": "port", "objectAlias": "port"}],
        },
    ]
    spc, secrets = write_inputs(kv_env, tmp_path, objects)
    target = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "kvmount.cli", "mount", "--class", str(spc), "--target", str(target),
         "--secrets", str(secrets)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == sorted([f"all/{run}-api", f"all/{run}-db", "port"])
    assert (target / "port").read_text() == "5432"
    assert (target / "all" / f"{run}-api").read_text() == "token"
