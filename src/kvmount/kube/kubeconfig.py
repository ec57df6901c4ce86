"""Where the API server is and who we are to it: a kubeconfig file, or the pod's service account.

What kube/rest.py connects with. A kubeconfig gives the server, its CA (file
or data) or insecure-skip-tls-verify, tls-server-name, proxy-url, and a user
with a token, a tokenFile or a client certificate (file or data). Users that
run a program or a plugin to get credentials (exec, auth-provider) are refused
with one line naming the field. Relative paths are relative to the kubeconfig
file, as kubectl has them; $KUBECONFIG may list several files, merged as
kubectl merges them (the first file that names a thing wins).
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class ConfigError(Exception):
    """A kubeconfig or in-cluster setting that cannot be used; the message names it and the fix."""


class BearerToken:
    """A token given inline, or read from a file and read again whenever the file changes:
    bound service account tokens are rotated by kubelet while the driver runs."""

    def __init__(self, value: str = "", path: str = "") -> None:
        self._value = value.strip()
        self._path = path
        self._seen: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        if path:
            self.value()  # a missing or unreadable file is a configuration error, found now

    def value(self) -> str:
        if not self._path:
            return self._value
        with self._lock:
            try:
                info = os.stat(self._path)
                seen = (info.st_ino, info.st_mtime_ns, info.st_size)
                if seen != self._seen:
                    with open(self._path, encoding="utf-8") as f:
                        self._value, self._seen = f.read().strip(), seen
            except OSError as err:
                if self._seen is None:
                    raise ConfigError(f"cannot read the token file {self._path}: {err.strerror}") from None
                # Mid-rotation: the last token read is still valid for a while.
            return self._value


@dataclass(frozen=True)
class Connection:
    """The API server's URL, the TLS settings to reach it, and the token to send (if any)."""

    server: str
    tls: ssl.SSLContext | None  # None for http://
    token: BearerToken | None
    tls_server_name: str = ""
    proxy: str = ""
    namespace: str = ""  # the context's namespace, kubectl's default for -n


def load(kubeconfig: str = "", env: Mapping[str, str] = os.environ, context: str = "") -> Connection:
    """From ``kubeconfig`` if given, else from $KUBECONFIG's files if set, else in-cluster;
    ``context`` instead of the files' current-context."""
    if kubeconfig:
        return from_kubeconfig([kubeconfig], context)
    listed = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        present = [p for p in listed if os.path.exists(p)]
        if not present:
            raise ConfigError(f"none of the files in $KUBECONFIG exists ({', '.join(listed)})")
        return from_kubeconfig(present, context)
    if context:
        raise ConfigError(f"context {context!r} needs a kubeconfig: pass --kubeconfig or set $KUBECONFIG")
    return in_cluster(env)


def in_cluster(env: Mapping[str, str] = os.environ, directory: str = SERVICE_ACCOUNT_DIR) -> Connection:
    """The API server as a pod sees it: the service's address and the mounted service account."""
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigError(
            "not running in a pod (KUBERNETES_SERVICE_HOST/PORT are not set) and no kubeconfig: "
            "pass --kubeconfig or set $KUBECONFIG"
        )
    if ":" in host:
        host = f"[{host}]"  # IPv6
    ca = os.path.join(directory, "ca.crt")
    return Connection(
        f"https://{host}:{port}",
        _tls_context(ca_file=ca, where=f"the service account's {ca}"),
        BearerToken(path=os.path.join(directory, "token")),
    )


def from_kubeconfig(paths: list[str], use_context: str = "") -> Connection:
    """The current context (or ``use_context``) of the kubeconfig files ``paths``, merged."""
    current, named = _merged(paths)
    current = use_context or current
    where = f"kubeconfig {os.pathsep.join(paths)}"
    if not current:
        raise ConfigError(f"{where}: no current-context; choose one with kubectl config use-context")
    if current not in named["contexts"]:
        chosen = "context" if use_context else "current-context"
        raise ConfigError(f"{where}: {chosen} {current!r} is not among its contexts")
    context_base, context = named["contexts"][current]
    cluster_name, user_name = _text(context, "cluster", where), _text(context, "user", where)
    if cluster_name not in named["clusters"]:
        raise ConfigError(
            f"{where}: context {current!r} names cluster {cluster_name!r}, which is not defined"
        )
    base, cluster = named["clusters"][cluster_name]
    at = f"{where}: cluster {cluster_name!r}"
    server = _text(cluster, "server", at).rstrip("/")
    if not server.startswith(("https://", "http://")):
        raise ConfigError(f"{at}: server must be an https:// URL, not {server!r}")
    user_base, user = named["users"].get(user_name, (context_base, {}))
    who = f"{where}: user {user_name!r}"
    for field in ("exec", "auth-provider", "username"):
        if user.get(field):
            raise ConfigError(
                f"{who}: {field} credentials are not supported here; "
                "use a token, tokenFile or client-certificate and client-key"
            )
    token = None
    if user.get("tokenFile"):
        token = BearerToken(path=_path(user_base, _text(user, "tokenFile", who)))
    elif user.get("token"):
        token = BearerToken(_text(user, "token", who))
    tls = None
    if server.startswith("https://"):
        insecure = cluster.get("insecure-skip-tls-verify") is True
        tls = _tls_context(
            ca_file=_path(base, str(cluster.get("certificate-authority") or "")),
            ca_data=_decoded(cluster, "certificate-authority-data", at),
            insecure=insecure,
            where=at,
        )
        cert = _decoded(user, "client-certificate-data", who) or _read(
            user_base, user, "client-certificate", who
        )
        key = _decoded(user, "client-key-data", who) or _read(user_base, user, "client-key", who)
        if bool(cert) != bool(key):
            raise ConfigError(f"{who}: a client certificate needs both its certificate and its key")
        if cert:
            _load_client_certificate(tls, cert, key, who)
    return Connection(
        server,
        tls,
        token,
        tls_server_name=str(cluster.get("tls-server-name") or ""),
        proxy=str(cluster.get("proxy-url") or ""),
        namespace=str(context.get("namespace") or ""),
    )


_Named = dict[str, dict[str, tuple[str, dict[str, Any]]]]


def _merged(paths: list[str]) -> tuple[str, _Named]:
    """(current-context, {clusters|users|contexts: {name: (file's directory, entry)}}), first wins."""
    import yaml  # only when there is a kubeconfig: a pod's driver has none

    current = ""
    named: _Named = {"clusters": {}, "users": {}, "contexts": {}}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                doc = yaml.safe_load(f) or {}
        except OSError as err:
            raise ConfigError(f"cannot read kubeconfig {path}: {err.strerror}") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f" (line {mark.line + 1})" if mark is not None else ""
            raise ConfigError(f"kubeconfig {path} is not valid YAML{line}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"kubeconfig {path} is not a kubeconfig (a YAML mapping)")
        current = current or str(doc.get("current-context") or "")
        base = os.path.dirname(os.path.abspath(path))
        for kind, entry_key in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            for entry in doc.get(kind) or []:
                if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                    raise ConfigError(f"kubeconfig {path}: every entry of {kind} needs a name")
                body = entry.get(entry_key) or {}
                if not isinstance(body, dict):
                    raise ConfigError(f"kubeconfig {path}: {kind} {entry['name']!r} must be a mapping")
                named[kind].setdefault(entry["name"], (base, body))
    return current, named


def _text(entry: Mapping[str, Any], field: str, where: str) -> str:
    value = entry.get(field)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {field} must be a non-empty string")
    return value


def _path(base: str, path: str) -> str:
    return os.path.join(base, path) if path else ""


def _decoded(entry: Mapping[str, Any], field: str, where: str) -> bytes:
    value = entry.get(field)
    if not value:
        return b""
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: {field} is not base64") from None


def _read(base: str, entry: Mapping[str, Any], field: str, where: str) -> bytes:
    path = _path(base, str(entry.get(field) or ""))
    if not path:
        return b""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise ConfigError(f"{where}: cannot read {field} {path}: {err.strerror}") from None


def _tls_context(
    ca_file: str = "", ca_data: bytes = b"", insecure: bool = False, where: str = ""
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the server and its name
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        if ca_data:
            context.load_verify_locations(cadata=ca_data.decode("ascii", "replace"))
        if not ca_file and not ca_data:
            context.load_default_certs()  # only then: a named CA is the only one trusted, as kubectl
    except (OSError, ssl.SSLError) as err:
        what = "certificate-authority-data" if ca_data else (ca_file or "the CA")
        raise ConfigError(f"{where}: cannot load {what}: {getattr(err, 'strerror', None) or err}") from None
    return context


def _load_client_certificate(context: ssl.SSLContext, cert: bytes, key: bytes, where: str) -> None:
    """Loaded from memory (memfd): the key is never written to a file."""
    fds = [os.memfd_create("kvmount-client-cert"), os.memfd_create("kvmount-client-key")]
    try:
        for fd, content in zip(fds, (cert, key), strict=True):
            os.write(fd, content)
        context.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
    except (OSError, ssl.SSLError):
        raise ConfigError(
            f"{where}: the client certificate and key cannot be loaded (PEM, unencrypted, a matching pair)"
        ) from None
    finally:
        for fd in fds:
            os.close(fd)
