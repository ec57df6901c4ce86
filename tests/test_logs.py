"""The JSON line shapes: field names, types and level mapping of each upstream binary's shape.
(tests/compat/test_log_shapes.py holds them against upstream's real output.)"""

from __future__ import annotations

import io
import json
import logging
import re
import time

from kvmount.base.logs import JsonShape, setup_logging


def logged(shape: JsonShape) -> list[dict[str, object]]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(json_shape=shape, level=logging.DEBUG, stream=stream)
        log = logging.getLogger("kvmount.test")
        log.debug("debug line", extra={"volume": "v1"})
        log.info("info line", extra={"count": 3})
        log.warning("warning line", extra={"error": "slow"})
        log.error("error line", extra={"error": "refused"})
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_driver_shape_is_mlogs() -> None:
    debug, info, warning, error = logged(JsonShape.DRIVER)
    assert [debug["level"], info["level"], warning["level"], error["level"]] == [
        "debug",
        "info",
        "info",
        "error",
    ]
    assert warning["warning"] is True and "warning" not in info
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", str(info["timestamp"]))
    assert info["message"] == "info line" and info["logger"] == "kvmount.test" and info["count"] == 3
    assert re.fullmatch(r"test_logs\.py:\d+\$test_logs\.logged", str(info["caller"]))
    assert error["error"] == "refused"
    assert not {"ts", "msg", "v", "err"} & set(info)


def test_klog_shape_is_component_bases() -> None:
    before = time.time() * 1000
    debug, info, warning, error = logged(JsonShape.KLOG)
    assert isinstance(info["ts"], float) and before <= info["ts"] <= time.time() * 1000
    assert [debug["v"], info["v"], warning["v"]] == [1, 0, 0] and "v" not in error
    assert error["err"] == "refused" and warning["err"] == "slow" and "error" not in error
    assert info["msg"] == "info line" and re.fullmatch(r"test_logs\.py:\d+", str(info["caller"]))
    assert not {"level", "timestamp", "message"} & set(info)
