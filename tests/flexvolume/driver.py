"""Calling the installed FlexVolume driver exactly as kubelet does: exec, argv, stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import kvmount
from kvmount.flexvolume.install import DRIVER, DRIVER_DIR

SRC = os.path.dirname(os.path.dirname(kvmount.__file__))


@dataclass(frozen=True)
class Call:
    returncode: int
    stdout: str
    stderr: str

    @property
    def doc(self) -> dict[str, Any]:
        """The reply, asserting stdout holds one JSON document and nothing else."""
        lines = self.stdout.splitlines()
        assert len(lines) == 1, f"stdout must be one JSON line, got {self.stdout!r}"
        doc = json.loads(lines[0])
        assert isinstance(doc, dict)
        return doc


class Driver:
    """``<plugin dir>/azure~kv/kv`` as installed by ``kvmount flexvolume install``."""

    def __init__(self, plugin_dir: str, log_file: str, env: dict[str, str] | None = None) -> None:
        self.plugin_dir = plugin_dir
        self.log_file = log_file
        self.env = dict(os.environ) if env is None else env
        self.path = os.path.join(plugin_dir, DRIVER_DIR, DRIVER)

    def install(self, *extra: str) -> Call:
        argv = [sys.executable, "-m", "kvmount.cli", "flexvolume", "install"]
        argv += ["--plugin-dir", self.plugin_dir, "--log-file", self.log_file, *extra]
        return self._run(argv)

    def tree_interpreter(self) -> str:
        """This interpreter, importing the kvmount under test (for ``install --python``): the
        launcher runs it with -I, which ignores PYTHONPATH, and the interpreter's own
        installed kvmount may be another tree's."""
        path = os.path.join(os.path.dirname(self.plugin_dir), "python")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(f'#!/bin/sh\n[ "$1" = -I ] && shift\nPYTHONPATH={SRC} exec {sys.executable} "$@"\n')
        os.chmod(path, 0o755)
        return path

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Call:
        return self._run([self.path, *args], env)

    def mount(self, target: str, options: dict[str, str]) -> Call:
        return self("mount", target, json.dumps(options))

    def _run(self, argv: list[str], env: dict[str, str] | None = None) -> Call:
        done = subprocess.run(argv, capture_output=True, text=True, env=env or self.env, timeout=120)
        return Call(done.returncode, done.stdout, done.stderr)

    def log(self) -> str:
        try:
            with open(self.log_file, encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""
