"""The README's demo: the whole Key Vault path on one machine, on local defaults.

1. starts the Key Vault double (tests/peers/keyvault_double/) and seeds a
   vault with a secret and its history, a certificate with a three-level
   chain, an RSA and an EC key, and a service principal;
2. writes a SecretProviderClass and a node-publish Secret for it;
3. runs `kvmount mount` (the main job: class file -> files) and prints the tree;
4. as root, runs the CSI path too (scripts/demo-driver): `kvmount provider`,
   `kvmount driver` in standalone mode and a NodePublishVolume as kubelet sends it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.certs import make_chain  # noqa: E402
from tests.peers.keyvault_double import KeyVaultDouble  # noqa: E402

VAULT = "kvtest"
OBJECTS = [
    {"objectName": "db-password", "objectType": "secret"},
    {"objectName": "api-token", "objectType": "secret", "objectVersionHistory": 2},
    {"objectName": "web-tls", "objectType": "secret", "objectAlias": "tls.pem", "filePermission": "0600"},
    {"objectName": "web-tls", "objectType": "cert", "objectAlias": "tls.crt"},
    {"objectName": "signing", "objectType": "key", "objectAlias": "signing.pub"},
    {"objectName": "ecdsa", "objectType": "key", "objectAlias": "ecdsa.pub"},
]


def seed(kv: KeyVaultDouble) -> None:
    kv.put_secret(VAULT, "db-password", "correct horse battery staple")
    kv.put_secret(VAULT, "api-token", "token-v1")
    kv.put_secret(VAULT, "api-token", "token-v2")
    kv.import_certificate(VAULT, "web-tls", make_chain("web.example").pfx(("root", "intermediate")))
    kv.create_key(VAULT, "signing", kty="RSA", size=2048)
    kv.create_key(VAULT, "ecdsa", kty="EC", curve="P-256")


def describe(path: Path) -> str:
    data = path.read_bytes()
    first = data.split(b"\n", 1)[0].decode(errors="replace")
    blocks = data.count(b"-----BEGIN ")
    what = f"{first[:40]}" + (f" (+{blocks - 1} more PEM blocks)" if blocks > 1 else "")
    return f"{oct(path.stat().st_mode & 0o777)[2:]:>4} {len(data):>5} B  {what}"


def print_tree(root: Path) -> None:
    # The user-visible entries are symlinks into ..data; follow them, skip the writer's own.
    for top, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".."))
        for name in sorted(names):
            path = Path(top, name)
            print(f"  {path.relative_to(root)!s:<16} {describe(path)}")


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="kvmount-demo."))
    with KeyVaultDouble(state_dir=str(work / "kv")).start() as kv:
        seed(kv)
        kv.register_aad_client("demo-app", secret="demo-client-secret")
        spc = {
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClass",
            "metadata": {"name": "demo", "namespace": "default"},
            "spec": {
                "provider": "azure",
                "parameters": {
                    "keyvaultName": VAULT,
                    "tenantID": kv.tenant,
                    "cloudName": "AzureStackCloud",
                    "cloudEnvFileName": kv.write_cloud_env(work / "azurestack.json"),
                    "objects": yaml.safe_dump({"array": [yaml.safe_dump(o) for o in OBJECTS]}),
                },
            },
        }
        (work / "spc.yaml").write_text(yaml.safe_dump(spc, sort_keys=False))
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "kv-creds"},
            "stringData": {"clientid": "demo-app", "clientsecret": "demo-client-secret"},
        }
        (work / "secret.yaml").write_text(yaml.safe_dump(secret))
        env = {**os.environ, **kv.env()}
        target = work / "mount"
        print(f"== kvmount mount --class {work}/spc.yaml --target {target}")
        done = subprocess.run(
            [sys.executable, "-m", "kvmount.cli", "mount", "--class", str(work / "spc.yaml"),
             "--target", str(target), "--secrets", str(work / "secret.yaml")],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        print_tree(target)
        if os.geteuid() != 0:
            print("(not root: skipping the CSI driver demo, which mounts tmpfs)")
            return 0
        print("\n== the CSI path: scripts/demo-driver")
        driver_env = {
            **env,
            "PYTHON": sys.executable,
            "CLASS_FILE": str(work / "spc.yaml"),
            "NODE_PUBLISH_SECRETS": "clientid=demo-app clientsecret=demo-client-secret",
            "DEMO_DIR": str(work / "csi"),
            # The class's cloud environment file lives beside it, outside DEMO_DIR.
            "CLOUD_ENV_DIRS": str(work),
        }
        return subprocess.run(["bash", str(REPO / "scripts" / "demo-driver")], env=driver_env).returncode


if __name__ == "__main__":
    sys.exit(main())
