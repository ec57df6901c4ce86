"""The one `kvmount` entry point: each subcommand lives in its component.

A component's command module defines ``add_arguments(parser)`` and
``run(args) -> int``, and may name its parser class in ``PARSER`` (the
daemons read Go-style flags, as upstream's binaries) and define
``prepare(parser)``, called only when the command runs, before parsing.
``add_arguments`` only defines flags, so ``build_parser`` gives any command's
parser without running it (scripts/gen-flags-reference documents them all
from it). Only the module of the chosen subcommand is imported,
because kubelet execs the FlexVolume driver for every operation and start-up
time is paid each time.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from kvmount import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "provider": ("kvmount.provider.command", "serve the Azure Key Vault provider over gRPC"),
    "driver": ("kvmount.driver.command", "serve the Secrets Store CSI node driver"),
    "mount": ("kvmount.mount.command", "mount a SecretProviderClass into a directory"),
    "flexvolume": ("kvmount.flexvolume.command", "FlexVolume driver (kubelet exec interface)"),
    "kms": ("kvmount.kms.command", "Ceph-CSI compatible passphrase store in Key Vault"),
    "validate": ("kvmount.validate.command", "check SecretProviderClass and SecretSync manifests offline"),
    "admission": ("kvmount.admission.command", "admission webhook: validate's findings at kubectl apply"),
    "doctor": ("kvmount.doctor.command", "find out why a pod's secrets do not mount"),
    "sync-controller": ("kvmount.synccontroller.command", "SecretSync objects -> Secrets, no pod needed"),
    "registrar": ("kvmount.sidecars.registrar", "register a CSI driver with kubelet (node-driver-registrar)"),
    "livenessprobe": ("kvmount.sidecars.livenessprobe", "/healthz from a CSI driver's Probe (livenessprobe)"),
}
# The daemons: glibc's malloc arenas are capped before their threads start (malloc_arenas.py).
LONG_RUNNING = frozenset({"provider", "driver", "sync-controller", "registrar", "livenessprobe", "admission"})


def _usage() -> str:
    lines = ["usage: kvmount COMMAND [options]", "", "commands:"]
    width = max(map(len, COMMANDS))
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += ["", "kvmount COMMAND --help shows a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        print(f"kvmount {__version__}")
        return 0
    name = args[0]
    if name not in COMMANDS:
        print(f"kvmount: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if name in LONG_RUNNING:
        from kvmount.base import malloc_arenas  # ctypes: not for the commands kubelet execs per call

        malloc_arenas.limit()
    module = importlib.import_module(COMMANDS[name][0])
    parser = build_parser(name)
    prepare = getattr(module, "prepare", None)
    if prepare is not None:
        prepare(parser)
    code: int = module.run(parser.parse_args(args[1:]))
    return code


def build_parser(name: str) -> argparse.ArgumentParser:
    """The parser of `kvmount NAME`, with every flag defined and nothing run."""
    module = importlib.import_module(COMMANDS[name][0])
    parser_class: type[argparse.ArgumentParser] = getattr(module, "PARSER", argparse.ArgumentParser)
    parser = parser_class(prog=f"kvmount {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    return parser


# kubectl runs `kubectl-kvmount` for `kubectl kvmount ...`: the commands a workstation needs.
PLUGIN_COMMANDS = ("doctor", "validate")


def kubectl_main(argv: Sequence[str] | None = None) -> int:
    """`kubectl kvmount doctor|validate ...` with kubectl's --kubeconfig, --context, -n and, for
    validate, -f FILE (none: the cluster's classes). The namespace defaults as kubectl's does: the
    context's, else "default"; --pod NAME is a pod of that namespace."""
    plugin = argparse.ArgumentParser(prog="kubectl kvmount", add_help=False)
    plugin.add_argument("command", nargs="?", choices=PLUGIN_COMMANDS)
    plugin.add_argument("--kubeconfig", default="")
    plugin.add_argument("--context", default="")
    plugin.add_argument("-n", "--namespace", default="")
    plugin.add_argument("-A", "--all-namespaces", action="store_true")
    plugin.add_argument("-f", "--filename", action="append", default=[])
    plugin.add_argument("--pod", default="")
    known, rest = plugin.parse_known_args(sys.argv[1:] if argv is None else argv)
    if known.command is None:
        print(f"usage: kubectl kvmount {{{','.join(PLUGIN_COMMANDS)}}} [options]", file=sys.stderr)
        return 0 if "-h" in rest or "--help" in rest else 2
    kubeconfig = known.kubeconfig or _default_kubeconfig()
    args = [known.command, *rest, f"--context={known.context}"]
    if kubeconfig:
        args.append(f"--kubeconfig={kubeconfig}")
    namespace = known.namespace or _context_namespace(kubeconfig, known.context)
    if known.command == "validate":
        args += known.filename or ["--cluster"] + (
            [] if known.all_namespaces else [f"--namespace={namespace}"]
        )
        return main(args)
    if known.pod:
        args.append(f"--pod={known.pod if '/' in known.pod else f'{namespace}/{known.pod}'}")
    return main([*args, f"--namespace={namespace}"])


def _default_kubeconfig() -> str:
    """kubectl's: $KUBECONFIG (which the doctor reads itself), else ~/.kube/config."""
    if os.environ.get("KUBECONFIG"):
        return ""
    home = os.path.join(os.path.expanduser("~"), ".kube", "config")
    return home if os.path.exists(home) else ""


def _context_namespace(kubeconfig: str, context: str) -> str:
    from kvmount.kube.kubeconfig import ConfigError, load

    try:
        return load(kubeconfig, context=context).namespace or "default"
    except ConfigError:
        return "default"  # the command itself reports the kubeconfig's problem


if __name__ == "__main__":
    sys.exit(main())
