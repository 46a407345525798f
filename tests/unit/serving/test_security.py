"""API tokens (UNAUTHENTICATED / PERMISSION_DENIED), TLS and mTLS."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from feature_store.adapters.file_registry_store import FileRegistryStore
from feature_store.core.model import Registry
from feature_store.serving.auth import Authenticator
from feature_store.serving.client import FeatureClient, FeatureServingError, TlsOptions
from feature_store.serving.settings import ServeSettings
from feature_store.serving.testing import ManualClock, ServerThread, test_settings
from tests.unit.serving.conftest import make_reader
from tests.unit.serving.support import NOW

RANKER = "ranker-secret-token"
ADMIN = "admin-secret-token"
USERS = {"user_id": ["u1"]}


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens.yaml"
    digest = hashlib.sha256(RANKER.encode()).hexdigest()
    path.write_text(
        "tokens:\n"
        f"  - {{name: ranker, token_sha256: {digest}, services: [ranking_v1]}}\n"
        f"  - {{name: admin, token: {ADMIN}, services: ['*']}}\n"
    )
    return path


@pytest.fixture(scope="module")
def secured(
    applied: tuple[FileRegistryStore, Registry],
    events: dict[str, list[dict[str, Any]]],
    tokens_file: Path,
) -> Iterator[ServerThread]:
    store, registry = applied
    settings = test_settings(auth_enabled=True, tokens_file=tokens_file, tokens={"env-token": ["pair_v1"]})
    with ServerThread(
        settings, registry_store=store, reader=make_reader(registry, events), clock=ManualClock(NOW)
    ) as st:
        yield st


def denied(target: str, token: str | None, **kwargs: Any) -> FeatureServingError:
    with FeatureClient(target, token=token) as client, pytest.raises(FeatureServingError) as info:
        client.get_online_features(entities=USERS, **kwargs)
    return info.value


def test_missing_or_wrong_token_is_unauthenticated(secured: ServerThread) -> None:
    for token in (None, "wrong", RANKER + "x"):
        error = denied(secured.target, token, service="ranking_v1")
        assert error.code is grpc.StatusCode.UNAUTHENTICATED
        assert RANKER not in error.details
    with FeatureClient(secured.target) as client, pytest.raises(FeatureServingError) as info:
        client.list_feature_services()
    assert info.value.code is grpc.StatusCode.UNAUTHENTICATED


def test_a_token_reads_only_its_services(secured: ServerThread) -> None:
    with FeatureClient(secured.target, token=RANKER) as client:
        assert client.get_online_features("ranking_v1", entities=USERS).statuses[0][0] == "PRESENT"
        assert [s.name for s in client.list_feature_services()] == ["ranking_v1"]
        allowed_refs = ["user_calls:calls_lifetime", "user_chat:chat_messages_24h"]
        assert len(client.get_online_features(features=allowed_refs, entities=USERS).feature_names) == 2
    error = denied(secured.target, RANKER, service="abuse_v1")
    assert error.code is grpc.StatusCode.PERMISSION_DENIED
    assert error.details == "token 'ranker' may not read feature service 'abuse_v1'"
    # even a service that does not exist: existence is not revealed to a token without access
    assert denied(secured.target, RANKER, service="nope").code is grpc.StatusCode.PERMISSION_DENIED
    error = denied(secured.target, RANKER, features=["user_calls:recent_partners"])
    assert error.code is grpc.StatusCode.PERMISSION_DENIED
    assert "user_calls:recent_partners" in error.details
    with FeatureClient(secured.target, token=RANKER) as client, pytest.raises(FeatureServingError) as info:
        client.get_feature_service_schema("pair_v1")
    assert info.value.code is grpc.StatusCode.PERMISSION_DENIED


def test_wildcard_and_env_tokens(secured: ServerThread) -> None:
    with FeatureClient(secured.target, token=ADMIN) as client:
        assert len(client.list_feature_services()) == 3
        assert client.get_online_features(features=["user_calls:recent_partners"], entities=USERS)
    with FeatureClient(secured.target, token="env-token") as client:
        assert [s.name for s in client.list_feature_services()] == ["pair_v1"]


def test_authenticator_accepts_only_bearer_and_checks_every_grant(tokens_file: Path) -> None:
    auth = Authenticator.from_settings(ServeSettings(auth_enabled=True, tokens_file=tokens_file))
    assert auth.grant_count == 2
    assert auth.authenticate([("authorization", f"Bearer {ADMIN}")]).name == "admin"
    assert auth.authenticate([("authorization", f"bearer  {RANKER} ")]).name == "ranker"
    with pytest.raises(Exception, match="missing API token"):
        auth.authenticate([("authorization", ADMIN)])
    assert not Authenticator.from_settings(ServeSettings()).enabled


def test_bad_tokens_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"tokens": [{"name": "x", "services": ["a"]}]}))
    with pytest.raises(ValueError, match="needs `token_sha256` or `token`"):
        Authenticator.from_settings(ServeSettings(tokens_file=path))
    path.write_text(json.dumps({"tokens": [{"token_sha256": "abcd", "services": ["a"]}]}))
    with pytest.raises(ValueError, match="64 hex digits"):
        Authenticator.from_settings(ServeSettings(tokens_file=path))


# --- TLS ----------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=test-ca", cwd=d)  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", "san.cnf", cwd=d)  # fmt: skip
    return d


def test_tls_and_mtls(
    certs: Path, applied: tuple[FileRegistryStore, Registry], events: dict[str, list[dict[str, Any]]]
) -> None:
    store, registry = applied
    settings = test_settings(
        tls_cert_file=certs / "server.pem",
        tls_key_file=certs / "server.key",
        tls_client_ca_file=certs / "ca.pem",
    )
    reader = make_reader(registry, events)
    with ServerThread(settings, registry_store=store, reader=reader, clock=ManualClock(NOW)) as st:
        target = f"localhost:{st.server.port}"
        mtls = TlsOptions(
            ca_file=certs / "ca.pem", cert_file=certs / "client.pem", key_file=certs / "client.key"
        )
        with FeatureClient(target, tls=mtls) as client:
            assert client.get_online_features("ranking_v1", entities=USERS).statuses[0][0] == "PRESENT"
        with FeatureClient(target, tls=TlsOptions(ca_file=certs / "ca.pem"), timeout_s=2) as client:
            with pytest.raises(FeatureServingError) as info:
                client.get_online_features("ranking_v1", entities=USERS)
            assert info.value.code is grpc.StatusCode.UNAVAILABLE  # no client certificate
        with FeatureClient(target, timeout_s=2) as client, pytest.raises(FeatureServingError):
            client.get_online_features("ranking_v1", entities=USERS)  # plaintext to a TLS port


def test_tls_settings_must_be_complete(certs: Path) -> None:
    with pytest.raises(ValueError, match="both tls_cert_file and tls_key_file"):
        ServeSettings(tls_cert_file=certs / "server.pem")
    with pytest.raises(ValueError, match="mTLS"):
        ServeSettings(tls_client_ca_file=certs / "ca.pem")
    with pytest.raises(ValueError, match=r"tls_key_file: .*missing\.pem is not a file"):
        ServeSettings(tls_cert_file=certs / "server.pem", tls_key_file=certs / "missing.pem")
