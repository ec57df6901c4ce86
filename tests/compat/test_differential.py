"""kvmount's provider against upstream's provider v1.8.2: the same MountRequest (v1alpha1,
unix socket) to both, for every case of tests/compat/cases.py; success or failure, every
file's path, mode and bytes, and the object versions must be identical, unless the case
is one of the deliberate differences (tests/compat/deliberate.py = the compatibility table of
docs/switching-from-upstream.md).

Paths are compared as the driver writes them (cleaned: "./x" is "x"); error codes and
messages are not compared (kvmount's are precise where upstream says Unknown).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from kvmount.proto import v1alpha1_pb2 as pb
from kvmount.proto import v1alpha1_pb2_grpc as pb_grpc
from tests.compat import deliberate
from tests.compat.cases import CASES, MISSING, Case
from tests.compat.state import VAULT, State, seed
from tests.peers.keyvault_double import KeyVaultDouble
from tests.peers.upstream import UpstreamProvider
from tests.provider.conftest import Provider, start_provider, stop_provider

TABLE = Path(__file__).resolve().parents[2] / "docs" / "switching-from-upstream.md"
TOKENS = "csi.storage.k8s.io/serviceAccount.tokens"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    files: tuple[tuple[str, int, bytes], ...] = ()
    versions: tuple[tuple[str, str], ...] = ()
    error: str = ""  # shown, never compared

    def same_as(self, other: Outcome) -> bool:
        return (self.ok, self.files, self.versions) == (other.ok, other.files, other.versions)

    def describe(self) -> str:
        if not self.ok:
            return f"refused: {self.error[:300]}"
        files = ", ".join(f"{p} {m:o} {len(b)}B {b[:24]!r}" for p, m, b in self.files)
        return f"files [{files}] versions {[i for i, _ in self.versions]}"


@dataclass(frozen=True)
class Setup:
    state: State
    cloud_env: str
    # The same environment file outside the temporary directory kvmount is told to read them from.
    outside_env: str
    sp: dict[str, str]


@pytest.fixture(scope="module")
def setup(keyvault: KeyVaultDouble, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    client_id, secret = f"cmp-app-{os.urandom(3).hex()}", f"cmp-secret-{os.urandom(8).hex()}"
    keyvault.register_aad_client(client_id, secret=secret)
    env = keyvault.write_cloud_env(tmp_path_factory.mktemp("compat") / "azurestack.json")
    elsewhere = next(d for d in ("/dev/shm", "/var/tmp") if os.path.isdir(d))  # not under gettempdir()
    with tempfile.TemporaryDirectory(dir=elsewhere) as outside:
        outside_env = keyvault.write_cloud_env(Path(outside) / "azurestack.json")
        yield Setup(seed(keyvault), env, outside_env, {"clientid": client_id, "clientsecret": secret})


@pytest.fixture(scope="module")
def kvmount_provider(
    keyvault: KeyVaultDouble, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Provider]]:
    """``kvmount_provider(*flags)``: one kvmount provider per flag set for the module."""
    started: dict[tuple[str, ...], Provider] = {}

    def start(*flags: str) -> Provider:
        if flags not in started:
            started[flags] = start_provider(tmp_path_factory.mktemp("kvmount-provider"), keyvault, *flags)
        return started[flags]

    try:
        yield start
    finally:
        for provider in started.values():
            stop_provider(provider)


def fill(text: str, setup: Setup, kv: KeyVaultDouble) -> str:
    for key, value in {**setup.state.names, "tenant": kv.tenant, "outside_env": setup.outside_env}.items():
        text = text.replace("{" + key + "}", value)
    return text


def objects_parameter(case: Case) -> str:
    if case.raw_objects is not None:
        return case.raw_objects
    items = "".join("  - |\n" + "".join(f"    {line}\n" for line in i.splitlines()) for i in case.objects)
    return f"array:\n{items}"


def request(case: Case, setup: Setup, kv: KeyVaultDouble) -> pb.MountRequest:
    """The MountRequest the driver sends for pod default/web with this case's class."""
    attributes = {
        "csi.storage.k8s.io/pod.name": "web",
        "csi.storage.k8s.io/pod.namespace": "default",
        "csi.storage.k8s.io/pod.uid": "6a1f3c1e-0000-4000-8000-000000000001",
        "csi.storage.k8s.io/serviceAccount.name": "default",
        "keyvaultName": VAULT,
        "tenantID": kv.tenant,
        "cloudName": "AzureStackCloud",
        "cloudEnvFileName": setup.cloud_env,
        "objects": objects_parameter(case),
    }
    if case.raw_objects == MISSING:
        del attributes["objects"]
    secrets: dict[str, str] | None = None  # the driver sends JSON null without a node-publish secret
    if case.identity == "sp":
        secrets = dict(setup.sp)
    elif case.identity == "sp-capitalised":
        secrets = {"ClientID": setup.sp["clientid"], "ClientSecret": setup.sp["clientsecret"]}
    elif case.identity == "wi":
        attributes["clientID"] = f"cmp-wi-{os.urandom(3).hex()}"
        attributes[TOKENS] = json.dumps(
            {"api://AzureADTokenExchange": {"token": f"sa.{os.urandom(8).hex()}.jwt"}}
        )
    attributes.update(
        {k: v.replace("{objects}", attributes.get("objects", "")) for k, v in case.attributes.items()}
    )
    filled = {key: fill(value, setup, kv) for key, value in attributes.items() if value != MISSING}
    return pb.MountRequest(
        attributes=json.dumps(filled),
        secrets=json.dumps(secrets),
        target_path="/var/lib/kubelet/pods/6a1f3c1e/volumes/kubernetes.io~csi/secrets/mount",
        permission="420",
    )


def mount(stub: pb_grpc.CSIDriverProviderStub, req: pb.MountRequest) -> Outcome:
    try:
        response = stub.Mount(req, timeout=60)
    except grpc.RpcError as err:
        return Outcome(False, error=f"{err.code().name}: {err.details()}")
    if response.error.code:
        return Outcome(False, error=f"error code {response.error.code}")
    files = tuple((posixpath.normpath(f.path), f.mode, f.contents) for f in response.files)
    return Outcome(True, files, tuple((v.id, v.version) for v in response.object_version))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_same_as_upstream(
    case: Case,
    setup: Setup,
    keyvault: KeyVaultDouble,
    kvmount_provider: Callable[..., Provider],
    upstream_provider: Callable[..., UpstreamProvider],
) -> None:
    ours_stub = kvmount_provider(*case.flags).stub
    theirs_stub = upstream_provider(*case.flags).stub
    req = request(case, setup, keyvault)
    if case.change:
        assert mount(ours_stub, req).ok and mount(theirs_stub, req).ok
        keyvault.put_secret(VAULT, setup.state.names[case.change], f"changed {os.urandom(4).hex()}")
    ours, theirs = mount(ours_stub, req), mount(theirs_stub, req)
    row = deliberate.expected_differences().get(case.id)
    detail = f"\n  kvmount:  {ours.describe()}\n  upstream: {theirs.describe()}"
    if row is None:
        assert ours.same_as(theirs), f"differs from upstream and is not in the compatibility table:{detail}"
    else:
        assert not ours.same_as(theirs), f"listed as deliberate ({row.kvmount}) but identical:{detail}"


def table_rows() -> list[tuple[str, str, str]]:
    text = TABLE.read_text(encoding="utf-8")
    section = text.split("\n## Compatibility with upstream\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    rows = []
    for line in lines[2:]:  # the header and its separator
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        assert len(cells) == 3, f"compatibility table row has {len(cells)} cells, not 3: {line}"
        rows.append((cells[0], cells[1], cells[2]))
    return rows


def test_compatibility_table_is_the_list_of_deliberate_differences() -> None:
    assert table_rows() == [(r.kvmount, r.upstream, r.why) for r in deliberate.ROWS]


def test_every_deliberate_case_exists() -> None:
    known = {c.id for c in CASES}
    assert len(known) == len(CASES), "case ids are unique"
    assert set(deliberate.expected_differences()) <= known
