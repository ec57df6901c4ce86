"""The exec interface without Key Vault: replies, usage errors, the installer, the launcher."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kvmount.volume import mounts
from tests.flexvolume.driver import Call, Driver


def test_init_reports_no_attach(driver: Driver) -> None:
    done = driver("init")
    assert (done.returncode, done.doc, done.stderr) == (
        0,
        {"status": "Success", "capabilities": {"attach": False}},
        "",
    )


def test_other_operations_are_not_supported(driver: Driver) -> None:
    for operation in ("attach", "getvolumename", "mountdevice", "expandvolume"):
        done = driver(operation, "{}")
        assert done.doc == {"status": "Not supported"}


def test_wrong_operands_fail_with_one_document(driver: Driver, target: str) -> None:
    for args in ([], ["mount", target], ["unmount"], ["init", "extra"]):
        done = driver(*args)
        assert done.returncode != 0
        assert done.doc["status"] == "Failure"
        assert "usage" in done.doc["message"]


def test_argparse_errors_still_end_in_one_document(driver: Driver) -> None:
    done = driver("--no-such-flag")
    assert done.returncode != 0
    assert done.doc["status"] == "Failure"
    assert "unrecognized arguments" in driver.log()


def test_help_is_a_failure_with_a_failing_status(driver: Driver) -> None:
    # No operation ran: the Failure document and the exit status agree.
    done = driver("--help")
    assert (done.returncode, done.doc["status"], done.stderr) == (1, "Failure", "")
    assert "usage: kvmount flexvolume" in driver.log()


def test_malformed_json_fails_and_mounts_nothing(driver: Driver, target: str) -> None:
    done = driver("mount", target, '{"keyvaultname": "kv1",')
    assert (done.returncode, done.doc) == (1, {"status": "Failure", "message": "options: is not valid JSON"})
    assert done.stderr == ""
    assert not mounts.is_mounted(target)


def test_missing_options_fail_and_mount_nothing(driver: Driver, target: str) -> None:
    done = driver.mount(target, {"keyvaultname": "kv1", "keyvaultobjectnames": "a"})
    assert done.returncode == 1
    assert done.doc == {
        "status": "Failure",
        "message": "keyvaultobjecttypes: is required: one of secret, key, cert for each object",
    }
    assert not mounts.is_mounted(target)
    assert "keyvaultobjecttypes" in driver.log()


def test_the_installed_kubelet_root_bounds_the_targets(driver: Driver, tmp_path: Path) -> None:
    outside = f"/run/kvmount-flex-{tmp_path.name}"
    options = {"keyvaultname": "kv1", "keyvaultobjectnames": "a", "keyvaultobjecttypes": "secret"}
    for done in (driver.mount(outside, options), driver("unmount", outside)):
        assert done.returncode == 1 and done.doc["status"] == "Failure"
        assert f"not below the kubelet root '{tmp_path}'" in done.doc["message"]
    assert not os.path.lexists(outside)


def test_unmount_of_what_is_not_mounted_succeeds(driver: Driver, target: str) -> None:
    assert driver("unmount", target).doc == {"status": "Success"}
    os.makedirs(target)
    assert driver("unmount", target).doc == {"status": "Success"}


def run_cli_with(prelude: str, *args: str) -> Call:
    """``kvmount flexvolume`` in a Python whose state ``prelude`` has spoiled first."""
    code = f"{prelude}\nimport sys\nfrom kvmount.cli import main\nsys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "flexvolume", *args], capture_output=True, text=True, timeout=60
    )
    return Call(done.returncode, done.stdout, done.stderr)


@pytest.mark.peer
def test_library_output_on_stdout_goes_to_stderr(target: str) -> None:
    prelude = (
        "import os, kvmount.flexvolume.volume as v\n"
        "def noisy(target, options, root, timeout):\n"
        "    print('chatty library')\n"
        "    os.write(1, b'raw fd write\\n')\n"
        "v.mount = noisy"
    )
    done = run_cli_with(prelude, "mount", target, "{}")
    assert (done.returncode, done.doc) == (0, {"status": "Success"})
    assert "chatty library" in done.stderr
    assert "raw fd write" in done.stderr


@pytest.mark.peer
def test_an_import_error_ends_in_one_failure_document(target: str) -> None:
    done = run_cli_with("import sys\nsys.modules['kvmount.keyvault.mount'] = None", "mount", target, "{}")
    assert done.returncode == 1
    assert done.doc["status"] == "Failure"
    assert done.doc["message"] == "internal error (ModuleNotFoundError); see the driver log"
    assert not mounts.is_mounted(target)


@pytest.mark.peer
def test_a_crash_outside_the_call_ends_in_one_failure_document() -> None:
    prelude = (
        "import kvmount.flexvolume.command as c\ndef boom(args):\n    raise RuntimeError('x')\nc.run = boom"
    )
    done = run_cli_with(prelude, "init")
    assert done.returncode == 1
    assert done.doc["status"] == "Failure"
    assert "RuntimeError" in done.stderr


@pytest.mark.peer
def test_installer_writes_an_executable_launcher_atomically(tmp_path: Path) -> None:
    plugins = tmp_path / "etc" / "kubernetes" / "volumeplugins"
    installed = Driver(str(plugins), str(tmp_path / "kv.log"))
    first = installed.install()
    assert first.returncode == 0
    assert first.doc == {"status": "Success", "message": f"installed {installed.path}"}
    again = installed.install()
    assert again.returncode == 0
    assert os.listdir(plugins) == ["azure~kv"]
    assert os.listdir(plugins / "azure~kv") == ["kv"]  # no temporary file left behind
    assert stat.S_IMODE(os.stat(installed.path).st_mode) == 0o755
    with open(installed.path, encoding="utf-8") as fh:
        script = fh.read()
    assert script.startswith("#!/bin/sh\n")
    assert f"python={sys.executable}\n" in script
    assert installed("init").doc["status"] == "Success"


def test_launcher_ignores_kubelets_python_environment(driver: Driver, tmp_path: Path) -> None:
    (tmp_path / "kvmount").mkdir()
    (tmp_path / "kvmount" / "__init__.py").write_text("raise SystemExit('shadowed')\n")
    done = driver("init", env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.doc["status"] == "Success"


@pytest.mark.peer
def test_launcher_answers_when_its_interpreter_is_gone(tmp_path: Path) -> None:
    installed = Driver(str(tmp_path / "plugins"), str(tmp_path / "kv.log"))
    assert installed.install("--python", str(tmp_path / "gone" / "python3")).returncode == 0
    done = installed("init")
    assert done.returncode == 1
    assert done.doc["status"] == "Failure"
    assert "re-run kvmount flexvolume install" in done.doc["message"]


@pytest.mark.peer
def test_launcher_logs_to_dev_null_when_the_log_cannot_be_written(tmp_path: Path) -> None:
    installed = Driver(str(tmp_path / "plugins"), str(tmp_path / "no" / "such" / "dir" / "kv.log"))
    assert installed.install().returncode == 0
    done = installed("mount", str(tmp_path / "t"), "{")
    assert (done.doc["status"], done.stderr) == ("Failure", "")
