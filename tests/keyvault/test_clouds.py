"""cloudEnvFileName is read only as a small regular file from the allowed directories."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from kvmount.keyvault import InvalidSpec, clouds

ENV = {
    "name": "AzureStackCloud",
    "activeDirectoryEndpoint": "https://login.example/",
    "keyVaultDNSSuffix": "vault.example",
}


def resolve(path: Path | str, dirs: list[Path] | None) -> clouds.Cloud:
    allowed = None if dirs is None else [str(d) for d in dirs]
    return clouds.resolve("AzureStackCloud", str(path), env_dirs=allowed)


def refused(path: Path | str, dirs: list[Path] | None) -> str:
    """The message of a refusal, which must come back at once (never block or read forever)."""
    outcome: list[BaseException | clouds.Cloud] = []

    def call() -> None:
        try:
            outcome.append(resolve(path, dirs))
        except BaseException as err:  # handed to the test thread
            outcome.append(err)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(10)
    assert outcome, f"reading {path} did not return within 10s"
    err = outcome[0]
    assert isinstance(err, InvalidSpec), err
    assert err.field == "cloudEnvFileName"
    return str(err)


def test_a_regular_file_in_an_allowed_directory_is_read(tmp_path: Path) -> None:
    env = tmp_path / "env.json"
    env.write_text(json.dumps(ENV))
    assert resolve(env, [tmp_path]).vault_dns_suffix == "vault.example"
    # `kvmount mount` reads the user's own file from anywhere.
    assert resolve(env, None).custom


def test_dev_zero_is_refused_without_reading_it() -> None:
    assert "not a regular file" in refused("/dev/zero", None)
    assert "not a regular file" in refused("/dev/zero", [Path("/dev")])


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "env.json"
    os.mkfifo(fifo)
    assert "not a regular file" in refused(fifo, [tmp_path])


def test_outside_the_allowed_directories_is_refused_with_the_flag_named(tmp_path: Path) -> None:
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    allowed.mkdir()
    other.mkdir()
    (other / "env.json").write_text(json.dumps(ENV))
    message = refused(other / "env.json", [allowed])
    assert "--cloud-env-dirs" in message
    # A prefix of the name is not the directory.
    sibling = tmp_path / "allowed-not"
    sibling.mkdir()
    (sibling / "env.json").write_text(json.dumps(ENV))
    assert "--cloud-env-dirs" in refused(sibling / "env.json", [allowed])


def test_links_out_of_the_allowed_directory_are_refused(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (outside / "env.json").write_text(json.dumps(ENV))
    (allowed / "link.json").symlink_to(outside / "env.json")
    assert "regular file" in refused(allowed / "link.json", [allowed])
    (allowed / "sub").symlink_to(outside)
    assert "--cloud-env-dirs" in refused(allowed / "sub" / "env.json", [allowed])


def test_unclean_or_relative_paths_are_refused(tmp_path: Path) -> None:
    (tmp_path / "env.json").write_text(json.dumps(ENV))
    for path in ["env.json", f"{tmp_path}/../{tmp_path.name}/env.json", f"{tmp_path}//env.json"]:
        assert "clean absolute path" in refused(path, [tmp_path])


def test_a_file_above_the_size_cap_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "env.json"
    big.write_text(json.dumps({**ENV, "pad": "x" * clouds.MAX_ENV_FILE_BYTES}))
    assert "larger than" in refused(big, [tmp_path])


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    assert "does not exist" in refused(tmp_path / "nope.json", [tmp_path])


def test_undecodable_json_is_refused_in_one_line(tmp_path: Path) -> None:
    env = tmp_path / "env.json"
    env.write_text("[" * 60_000)  # within the size cap, past json's recursion limit
    assert "nested too deeply" in refused(env, [tmp_path])
    env.write_text(json.dumps(ENV)[:-1] + ', "x": ' + "9" * 5000 + "}")
    assert "not a readable JSON file" in refused(env, [tmp_path])
