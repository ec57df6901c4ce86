"""The installer DaemonSet: its install step writes where kubelet looks and runs what it copied."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from kvmount.flexvolume.install import DEFAULT_PLUGIN_DIR

MANIFEST = Path(__file__).parents[2] / "deploy" / "flexvolume" / "daemonset.yaml"


def daemonset() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    (found,) = [d for d in docs if d["kind"] == "DaemonSet"]
    assert isinstance(found, dict)
    return found


def test_install_step_targets_the_hostpath_plugin_dir_and_the_copied_runtime() -> None:
    pod = daemonset()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    mounted = {m["mountPath"]: host_paths[m["name"]] for m in container["volumeMounts"]}
    script = container["args"][0].replace("\\\n", " ")
    install = next(line for line in script.splitlines() if "flexvolume install" in line)
    argv = shlex.split(install)
    plugin_dir = argv[argv.index("--plugin-dir") + 1]
    assert mounted[plugin_dir] == DEFAULT_PLUGIN_DIR
    # The launcher runs on the node: its interpreter is a node path inside the runtime hostPath.
    python = argv[argv.index("--python") + 1]
    runtime = re.search(r'node_runtime="([^"$]+)', script)
    assert runtime is not None
    assert python.startswith("$node_runtime/")
    node_root = runtime.group(1).rstrip("/")
    assert any(f"/host{node_root}" == path and host == node_root for path, host in mounted.items())
