"""`kvmount kms`: a volume's passphrase in Key Vault, for cryptsetup.

The passphrase is written to stdout as it is, with no newline, because
``cryptsetup --key-file -`` takes every byte it reads as key material. Nothing
else ever goes to stdout: messages and errors go to stderr, and no log record
carries a passphrase. The re-keying steps and exit statuses are in ``_EPILOG``,
which ``--help`` shows.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from kvmount.base.flags import positive_duration, positive_int
from kvmount.base.logs import JsonShape, setup_logging
from kvmount.keyvault import (
    DEFAULT_MAX_OBJECT_BYTES,
    DEFAULT_MAX_TOKEN_ANSWER_BYTES,
    Category,
    KeyVaultError,
)
from kvmount.kms.auth import build_credential
from kvmount.kms.config import AuthMethod, KMSConfig, load_client_certificate, load_config
from kvmount.kms.store import PASSPHRASE_BYTES, PassphraseStore, Stored, check_volume_id

log = logging.getLogger(__name__)

_EXIT = {Category.INVALID: 2, Category.NOT_FOUND: 3}
# --timeout: as long as `kvmount mount` gives a mount's reads.
DEFAULT_TIMEOUT = 120.0
_EPILOG = """\
The passphrase goes to stdout without a newline, for cryptsetup --key-file -.

re-keying a LUKS volume:
  kvmount kms rotate ... > new.key             # a new version; the old one is kept
  kvmount kms fetch --previous ... > old.key
  cryptsetup luksChangeKey DEV --key-file old.key new.key
  kvmount kms rotate --confirm ...             # disables the old version
  (rotate again before --confirm prints the same new passphrase)

Every answer of Key Vault and Entra ID is bounded while it arrives: in bytes
(--max-object-bytes, --max-token-answer-bytes), whole within 30 s, and the call
within --timeout.

exit status: 0 done, 2 invalid input or configuration (or a Key Vault answer
past --max-object-bytes), 3 no such passphrase (or no rotation pending), 1 any
other failure.
"""


def _add_kind(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--type", dest="kind", choices=sorted(PASSPHRASE_BYTES), default="luks", help="passphrase size"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        required=True,
        metavar="FILE",
        help="Ceph-CSI KMS configuration: config.json, or the csi-kms-connection-details ConfigMap",
    )
    common.add_argument("--kms-id", required=True, help="the entry of the configuration to use")
    common.add_argument("--volume-id", required=True, help="the volume; names its Key Vault secret")
    common.add_argument(
        "--credentials",
        metavar="PATH",
        help="the Secret holding CLIENT_CERT (manifest, or mounted directory), or the certificate file",
    )
    common.add_argument("--log-format", choices=("text", "json"), default="text", help="stderr log format")
    common.add_argument(
        "--max-object-bytes",
        type=positive_int,
        default=DEFAULT_MAX_OBJECT_BYTES,
        help="bytes of one Key Vault answer, decoded, counted as it arrives (default %(default)s, "
        "1 MiB; a secret is at most 25 KB)",
    )
    common.add_argument(
        "--max-token-answer-bytes",
        type=positive_int,
        default=DEFAULT_MAX_TOKEN_ANSWER_BYTES,
        help="bytes of one answer of Entra ID (a token, the authority's metadata), decoded, counted "
        "as it arrives (default %(default)s, 64 KiB; a token answer is a few KB)",
    )
    common.add_argument(
        "--timeout",
        type=positive_duration,
        default=DEFAULT_TIMEOUT,
        help="time the call's Key Vault and token requests may take in all, retries included "
        "(default 2m); each answer must also arrive whole within 30s",
    )

    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", parents=[common], help="store a new passphrase and print it")
    _add_kind(create)
    fetch = actions.add_parser("fetch", parents=[common], help="print the passphrase")
    fetch.add_argument(
        "--previous", action="store_true", help="print the passphrase a pending rotation replaces"
    )
    actions.add_parser("remove", parents=[common], help="delete the passphrase (not purged)")
    rotate = actions.add_parser(
        "rotate", parents=[common], help="store a new passphrase as a new version and print it"
    )
    _add_kind(rotate)
    rotate.add_argument(
        "--confirm", action="store_true", help="the volume is re-keyed: disable the previous version"
    )


def _open(args: argparse.Namespace, deadline: float) -> tuple[KMSConfig, PassphraseStore]:
    config = load_config(args.config, args.kms_id)
    client_cert = None
    if config.auth_method is AuthMethod.CLIENT_CERTIFICATE:
        if not args.credentials:
            raise KeyVaultError(
                f"--credentials is required: the Secret {config.cert_secret_name!r} holding CLIENT_CERT",
                Category.INVALID,
            )
        client_cert = load_client_certificate(args.credentials, config.cert_secret_name)
    elif args.credentials:
        raise KeyVaultError(
            f"--credentials is not used: KMS {config.kms_id!r} authenticates with workload identity",
            Category.INVALID,
        )
    credential = build_credential(config, client_cert, args.max_token_answer_bytes)
    return config, PassphraseStore(config, credential, deadline, args.max_object_bytes)


def _print(stored: Stored) -> None:
    sys.stdout.write(stored.passphrase)
    sys.stdout.flush()


def _act(args: argparse.Namespace, store: PassphraseStore, fields: dict[str, str]) -> None:
    volume = args.volume_id
    if args.action == "create":
        stored = store.create(volume, args.kind)
        log.info("passphrase created", extra={**fields, "version": stored.version})
        _print(stored)
    elif args.action == "fetch":
        _print(store.fetch_previous(volume) if args.previous else store.fetch(volume))
    elif args.action == "remove":
        removed = store.remove(volume)
        log.info("passphrase removed" if removed else "passphrase already gone", extra=fields)
    elif args.confirm:
        previous = store.confirm_rotation(volume)
        if previous:
            log.info("rotation confirmed", extra={**fields, "disabled_version": previous})
        else:
            log.info("no rotation pending", extra=fields)
    else:
        stored = store.rotate(volume, args.kind)
        log.info(
            "rotation pending; confirm once the volume is re-keyed",
            extra={**fields, "version": stored.version, "previous_version": stored.previous_version},
        )
        _print(stored)


def run(args: argparse.Namespace) -> int:
    setup_logging(json_shape=JsonShape.KLOG if args.log_format == "json" else None)
    deadline = time.monotonic() + args.timeout
    try:
        check_volume_id(args.volume_id)
        config, store = _open(args, deadline)
        try:
            _act(args, store, {"kms_id": config.kms_id, "volume_id": args.volume_id})
        finally:
            store.close()
    except KeyVaultError as err:
        print(f"kvmount kms {args.action}: {err}", file=sys.stderr)
        return _EXIT.get(err.category, 1)
    return 0
