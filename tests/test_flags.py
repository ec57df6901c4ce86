"""Go's flag syntax (kvmount.base.flags) and upstream's common flags (kvmount.base.upstream_flags)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

from kvmount.base import upstream_flags
from kvmount.base.flags import (
    GoFlagParser,
    add_bool,
    go_duration,
    go_int,
    go_port,
    listen_address,
    message_size,
    seconds,
)
from kvmount.base.logs import JsonShape
from kvmount.cli import COMMANDS, build_parser, main


def parser() -> GoFlagParser:
    p = GoFlagParser(prog="t")
    add_bool(p, "--on", False, "a boolean")
    p.add_argument("--name", default="")
    p.add_argument("--n", type=go_int, default=0)
    p.add_argument("--log_dir", default="")
    return p


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-name=x"], {"name": "x"}),
        (["--name=x"], {"name": "x"}),
        (["-name", "x"], {"name": "x"}),
        (["--name", "-x"], {"name": "-x"}),  # a separate value is taken whatever it looks like
        (["-n", "-1"], {"n": -1}),
        (["-n=0x10"], {"n": 16}),
        (["-n=010"], {"n": 8}),
        (["-on"], {"on": True}),
        (["--on=false"], {"on": False}),
        (["-on=T", "-log_dir=/d"], {"on": True, "log_dir": "/d"}),
        (["--name=a=b"], {"name": "a=b"}),
        ([], {"on": False, "name": "", "n": 0}),
    ],
)
def test_go_spellings(argv: list[str], expected: dict[str, object]) -> None:
    args = vars(parser().parse_args(argv))
    assert {k: args[k] for k in expected} == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["--on", "false"],  # a boolean takes no separate value: "false" ends the flags, as in Go
        ["-nam=x"],  # no abbreviations
        ["---name=x"],
        ["-unknown"],
        ["-on=maybe"],
        ["-n=ten"],
        ["-name"],
        ["stray", "-name=x"],
    ],
)
def test_refused_as_go_refuses(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parser().parse_args(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5), ("1m30s", 90), ("1.5h", 5400), (".5s", 0.5), ("300ms", 0.3), ("-1s", -1), ("0", 0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["5", "", "5x", "1m 30s", "s", "٣s", "²s", "9" * 5000 + "s", "99999999999999999999h", "1" * 100 + "ns"],
)
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        go_duration(text)


def common(*argv: str) -> argparse.Namespace:
    p = GoFlagParser(prog="t")
    upstream_flags.add_arguments(p, pprof_port=6060)
    return p.parse_args(argv)


def test_verbosity_maps_to_log_levels() -> None:
    assert [upstream_flags.log_level(common(f"-v={v}").v) for v in (-1, 0, 1, 5)] == [
        logging.INFO,
        logging.INFO,
        logging.DEBUG,
        logging.DEBUG,
    ]


def test_metrics_backend_is_prometheus_in_any_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert common("--metrics-backend=Prometheus").metrics_backend == "prometheus"
    with pytest.raises(SystemExit):
        common("--metrics-backend=stackdriver")
    assert "unsupported metrics backend 'stackdriver'" in capsys.readouterr().err


def test_stderrthreshold_defaults_to_error_as_klog() -> None:
    assert [common().stderrthreshold, common("-stderrthreshold=1").stderrthreshold] == [
        logging.ERROR,
        logging.WARNING,
    ]


def test_log_file_gets_everything_and_stderr_errors_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.log"
    args = common("-v=1", "--logtostderr=false", f"--log_file={path}", "-stderrthreshold=ERROR")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        assert upstream_flags.start(args, "provider", JsonShape.KLOG) is None
        log = logging.getLogger("kvmount.test")
        log.debug("debug line")
        log.error("error line")
        for handler in root.handlers:
            handler.flush()
        assert ["debug line" in path.read_text(), "error line" in path.read_text()] == [True, True]
        err = capsys.readouterr().err
        assert "error line" in err and "debug line" not in err
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def test_klogs_newer_stderr_thresholds(capsys: pytest.CaptureFixture[str]) -> None:
    """upstream's driver v1.6.1 (klog v2.130): --legacy_stderr_threshold_behavior=false applies
    --stderrthreshold to --logtostderr's stderr; --alsologtostderrthreshold defaults to all."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    args = common("--legacy_stderr_threshold_behavior=false", "-stderrthreshold=WARNING")
    try:
        assert upstream_flags.start(args, "driver", JsonShape.KLOG) is None
        log = logging.getLogger("kvmount.test")
        log.info("info line")
        log.warning("warning line")
        err = capsys.readouterr().err
        assert "warning line" in err and "info line" not in err
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert common().legacy_stderr_threshold_behavior is True
    assert common().alsologtostderrthreshold == logging.INFO
    assert common("-alsologtostderrthreshold=2").alsologtostderrthreshold == logging.ERROR


def test_unwritable_log_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = common("--logtostderr=false", f"--log_file={tmp_path}/missing/dir/p.log")
    assert upstream_flags.start(args, "provider", JsonShape.KLOG) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--log_file" in err


# Every flag naming a TCP port or a listen address, in every command; unix socket paths
# (--endpoint, --csi-address) are not ports.
PORT_VALUES = ["65536", "999999", "-1", "²", "٣٣", "9" * 5000, "1e3", " 80"]
ADDRESS_VALUES = [":65536", ":999999", "0.0.0.0:٣٣", ":" + "9" * 5000, "8080", "host:"]
_NOT_PORTS = {"endpoint", "csi_address"}


def _port_flags() -> list[tuple[str, str, str]]:
    """(command, flag, value) for every port and address flag of every command."""
    found = []
    for command in COMMANDS:
        if command == "flexvolume":  # kubelet's exec interface: no flags of a port
            continue
        made = build_parser(command)
        for action in made._actions:
            flag = next((o for o in action.option_strings if o.startswith("--")), "")
            if action.dest.endswith("_port"):
                found += [(command, flag, value) for value in PORT_VALUES]
            elif action.dest.endswith(("_addr", "_address", "_endpoint")) and action.dest not in _NOT_PORTS:
                found += [(command, flag, value) for value in ADDRESS_VALUES]
    return found


PORT_FLAGS = _port_flags()


def test_the_port_flags_are_found() -> None:
    flags = {(command, flag) for command, flag, _ in PORT_FLAGS}
    assert ("livenessprobe", "--health-port") in flags and ("driver", "--metrics-addr") in flags
    assert ("sync-controller", "--health-probe-bind-address") in flags and ("doctor", "--nmi-port") in flags
    assert len(flags) >= 15


@pytest.mark.parametrize(("command", "flag", "value"), PORT_FLAGS)
def test_every_port_flag_of_every_command_is_range_checked(
    command: str, flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A port out of 0-65535, or not in ASCII digits, is a one-line usage error, exit 2: never
    an OverflowError from bind() (``--health-port=999999``) or a port read from other scripts' digits."""
    with pytest.raises(SystemExit) as info:
        main([command, f"{flag}={value}"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if "error:" in line]
    assert flag in line and len(line) < 400, line


def test_ports_in_range_are_taken() -> None:
    assert go_port("0") == 0 and go_port("65535") == 65535 and go_port("0x50") == 80
    assert listen_address(":8080") == ":8080" and listen_address("[::1]:9808") == "[::1]:9808"
    assert seconds("0.5") == 0.5 and message_size("4194304") == 4 << 20
    for bad in ("nan", "inf", "\u0661", "-1", "1e3"):
        with pytest.raises(argparse.ArgumentTypeError):
            seconds(bad)
