"""kubelet's FlexVolume options as the provider's attributes, validated by the same code."""

from __future__ import annotations

import base64

import pytest

from kvmount.flexvolume.options import FlexOptions, parse_json, translate
from kvmount.keyvault import IdentityMode, InvalidSpec, ObjectSpec, ObjectType, parse_mount


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def options(**extra: str) -> dict[str, str]:
    base = {
        "keyvaultname": "kvtest",
        "tenantid": "tenant",
        "keyvaultobjectnames": "a",
        "keyvaultobjecttypes": "secret",
        "kubernetes.io/secret/clientid": b64("app"),
        "kubernetes.io/secret/clientsecret": b64("s3cret"),
        "kubernetes.io/fsType": "",
        "kubernetes.io/readwrite": "rw",
    }
    base.update(extra)
    return base


def parsed(flex: FlexOptions) -> tuple[ObjectSpec, ...]:
    return parse_mount(flex.attributes, flex.secrets).objects


def test_lists_become_objects_with_types_versions_and_aliases() -> None:
    flex = translate(
        options(
            keyvaultobjectnames="s; k;c",
            keyvaultobjecttypes="secret;key;cert",
            keyvaultobjectversions=";v2;",
            keyvaultobjectaliases="s.txt;;tls/c.pem",
        ),
        environ={},
    )
    assert parsed(flex) == (
        ObjectSpec("s", ObjectType.SECRET, alias="s.txt"),
        ObjectSpec("k", ObjectType.KEY, version="v2"),
        ObjectSpec("c", ObjectType.CERT, alias="tls/c.pem"),
    )


def test_legacy_singular_keys() -> None:
    extra = {
        "keyvaultobjectname": "one",
        "keyvaultobjecttype": "key",
        "keyvaultobjectversion": "v1",
        "keyvaultobjectalias": "one.pem",
    }
    base = options()
    del base["keyvaultobjectnames"], base["keyvaultobjecttypes"]
    base.update(extra)
    assert parsed(translate(base, environ={})) == (
        ObjectSpec("one", ObjectType.KEY, alias="one.pem", version="v1"),
    )


def test_service_principal_from_kubelet_secret_and_pod_info() -> None:
    flex = translate(
        options(
            **{
                "kubernetes.io/pod.name": "web",
                "kubernetes.io/pod.namespace": "ns",
                "kubernetes.io/pod.uid": "uid-1",
                "kubernetes.io/secret/clientsecret": b64("s3cret") + "\n",
            }
        ),
        environ={},
    )
    params = parse_mount(flex.attributes, flex.secrets)
    assert params.identity is IdentityMode.SERVICE_PRINCIPAL
    assert (params.sp_client_id, params.sp_client_secret) == ("app", "s3cret")
    assert (params.pod_name, params.pod_namespace) == ("web", "ns")
    assert flex.attributes["csi.storage.k8s.io/pod.uid"] == "uid-1"
    assert "s3cret" not in repr(flex)


def test_identity_options_map_onto_the_provider_attributes() -> None:
    flex = translate(
        options(usevmmanagedidentity="true", vmmanagedidentityclientid="cid", nmiport="3000"), environ={}
    )
    params = parse_mount(flex.attributes, flex.secrets)
    assert (params.identity, params.client_id, flex.nmi_port) == (IdentityMode.MANAGED, "cid", 3000)
    assert translate(options(), environ={}).nmi_port == 2579


def test_cloud_environment_file_from_option_or_node_environment() -> None:
    env = {"AZURE_ENVIRONMENT_FILEPATH": "/etc/node.json"}
    assert translate(options(cloudname="AzureStackCloud"), env).attributes["cloudEnvFileName"] == (
        "/etc/node.json"
    )
    flex = translate(options(cloudname="AzureStackCloud", cloudenvfilename="/etc/vol.json"), env)
    assert flex.attributes["cloudEnvFileName"] == "/etc/vol.json"
    assert "cloudEnvFileName" not in translate(options(), environ={}).attributes


def test_option_values_cannot_smuggle_yaml() -> None:
    flex = translate(options(keyvaultobjectaliases="x\nobjectType: key", keyvaultobjectnames="a: b"), {})
    assert parsed(flex) == (ObjectSpec("a: b", ObjectType.SECRET, alias="x\nobjectType: key"),)


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        ({"keyvaultobjecttypes": "secret;key"}, "keyvaultobjecttypes", "2 entries but"),
        ({"keyvaultobjectversions": "v1;v2"}, "keyvaultobjectversions", "2 entries but"),
        ({"keyvaultobjectaliases": "a;b"}, "keyvaultobjectaliases", "2 entries but"),
        (
            {"keyvaultobjectnames": "a;;b", "keyvaultobjecttypes": "key;key;key"},
            "keyvaultobjectnames",
            "entry 2",
        ),
        ({"keyvaultobjectnames": ""}, "keyvaultobjectnames", "is required"),
        ({"keyvaultobjecttypes": ""}, "keyvaultobjecttypes", "is required"),
        ({"keyvaultname": ""}, "keyvaultname", "is required"),
        ({"keyvaultobjectname": "b"}, "keyvaultobjectnames", "both set"),
        ({"keyvaultobjectnmes": "b"}, "keyvaultobjectnmes", "not an option"),
        ({"nmiport": "http"}, "nmiport", "not a port"),
        # str.isdigit() takes these; int() refuses the first with its own message, reads the second as 33.
        ({"nmiport": "²"}, "nmiport", "not a port"),
        ({"nmiport": "٣٣"}, "nmiport", "not a port"),
        ({"nmiport": "9" * 5000}, "nmiport", "not a port"),
        ({"nmiport": "65536"}, "nmiport", "not a port"),
        ({"kubernetes.io/secret/clientsecret": "%%%"}, "kubernetes.io/secret/clientsecret", "base64"),
    ],
)
def test_bad_options_are_refused(change: dict[str, str], field: str, text: str) -> None:
    with pytest.raises(InvalidSpec, match=text) as info:
        translate(options(**change), environ={})
    assert info.value.field == field


def test_unknown_type_is_refused_by_the_shared_validation() -> None:
    flex = translate(options(keyvaultobjecttypes="certificate"), environ={})
    with pytest.raises(InvalidSpec, match="'certificate' is not one of secret, key, cert"):
        parsed(flex)


def test_legacy_resource_options_are_accepted() -> None:
    flex = translate(options(resourcegroup="rg", subscriptionid="sub"), environ={})
    assert "resourcegroup" not in flex.attributes


@pytest.mark.parametrize("raw", ["{", "[]", '{"keyvaultname": 3}', ""])
def test_options_json_must_be_an_object_of_strings(raw: str) -> None:
    with pytest.raises(InvalidSpec):
        parse_json(raw)
