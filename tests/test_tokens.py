"""Tests for wsserver.tokens: who a token or activation code says a client is.

Plain functions, no sockets. pyjwt reads the wall clock for `exp` and `nbf`, so
tokens are minted already expired (or not yet valid) rather than moving a clock.
Keys for RS256/ES256 are generated with `cryptography` into `tmp_path`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from wsserver.config import Config, load_config
from wsserver.errors import AuthError
from wsserver.tokens import (
    SECRET_FILE,
    Identity,
    TokenVerifier,
    identity_from_claims,
    load_or_create_secret,
    mint_token,
)

# 64 bytes: long enough for HS512 too, so pyjwt raises no InsecureKeyLengthWarning.
SECRET = "s" * 64
OTHER_SECRET = "o" * 64


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    """A config with an HS256 secret and its storage in `tmp_path`; dotted overrides win."""
    values: dict[str, Any] = {"auth.jwt_secret": SECRET, "storage.dir": str(tmp_path)}
    values.update(overrides)
    return load_config(None, env={}, overrides=values)


def refusal_key(verifier: TokenVerifier, token: str) -> str:
    """The catalogue key of the AuthError `verify(token)` raises."""
    with pytest.raises(AuthError) as info:
        verifier.verify(token)
    return info.value.key


def in_an_hour() -> int:
    """An `exp` claim an hour from now."""
    return int(time.time()) + 3600


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def hand_made_token(header: dict[str, Any], payload: dict[str, Any], sign_key: bytes | None) -> str:
    """A JWT built by hand, so it can carry what pyjwt refuses to produce."""
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    if sign_key is None:
        return signing_input + "."
    sig = hmac.new(sign_key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def rsa_pem_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _pem_pair(key)


def ec_pem_pair() -> tuple[str, str]:
    return _pem_pair(ec.generate_private_key(ec.SECP256R1()))


def _pem_pair(key: Any) -> tuple[str, str]:
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[str, str]:
    return rsa_pem_pair()


@pytest.fixture(scope="module")
def ec_keys() -> tuple[str, str]:
    return ec_pem_pair()


def key_config(tmp_path: Path, public_pem: str, algorithms: list[str]) -> Config:
    path = tmp_path / "jwt_public.pem"
    path.write_text(public_pem, encoding="utf-8")
    return make_config(
        tmp_path,
        **{
            "auth.algorithms": algorithms,
            "auth.jwt_public_key_file": str(path),
            "auth.jwt_secret": "",
        },
    )


# --- HS256 with a shared secret -------------------------------------------------------


def test_good_token_gives_the_identity_of_its_claims(tmp_path: Path):
    config = make_config(tmp_path)
    claims = {
        "user_id": 42,
        "sub": "ignored",
        "username": "alice",
        "group_id": "g1",
        "user_type": 2,
        "role": "admin",
        "rooms": ["chat:*", "news"],
    }
    token = mint_token(config, claims, ttl=600)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]

    ident = TokenVerifier(config).verify(token)

    assert ident.user_id == 42
    assert ident.username == "alice"
    assert ident.group_id == "g1"
    assert ident.user_type == 2
    assert ident.role == "admin"
    assert ident.rooms == ("chat:*", "news")
    assert ident.expires_at == float(exp)
    assert ident.activation_code is None
    assert not ident.is_device


def test_token_without_user_id_uses_sub(tmp_path: Path):
    config = make_config(tmp_path)
    ident = TokenVerifier(config).verify(mint_token(config, {"sub": "u-7"}, ttl=60))
    assert ident.user_id == "u-7"
    assert ident.username is None
    assert ident.group_id is None
    assert ident.rooms is None
    assert ident.role is None


def test_token_without_exp_is_refused_as_never_expiring(tmp_path: Path):
    token = jwt.encode({"user_id": "u1"}, SECRET, algorithm="HS256")
    assert refusal_key(TokenVerifier(make_config(tmp_path)), token) == "token_no_exp"


def test_token_with_a_null_exp_is_refused_as_never_expiring(tmp_path: Path):
    token = jwt.encode({"user_id": "u1", "exp": None}, SECRET, algorithm="HS256")
    assert refusal_key(TokenVerifier(make_config(tmp_path)), token) == "token_no_exp"


def test_token_without_exp_has_no_expiry_when_exp_is_not_required(tmp_path: Path):
    token = jwt.encode({"user_id": "u1"}, SECRET, algorithm="HS256")
    ident = TokenVerifier(make_config(tmp_path, **{"auth.require_exp": False})).verify(token)
    assert ident.user_id == "u1"
    assert ident.expires_at is None


def test_expired_token_is_refused_as_expired(tmp_path: Path):
    config = make_config(tmp_path)
    token = mint_token(config, {"user_id": 1}, ttl=-60)
    assert refusal_key(TokenVerifier(config), token) == "token_expired"


def test_token_not_valid_before_a_future_nbf_is_refused_as_not_yet_valid(tmp_path: Path):
    config = make_config(tmp_path)
    token = mint_token(config, {"user_id": 1, "nbf": int(time.time()) + 3600}, ttl=7200)
    assert refusal_key(TokenVerifier(config), token) == "token_not_yet_valid"


def test_unsigned_alg_none_token_is_refused(tmp_path: Path):
    token = hand_made_token({"alg": "none", "typ": "JWT"}, {"user_id": 1}, None)
    assert refusal_key(TokenVerifier(make_config(tmp_path)), token) == "token_algorithm"


@pytest.mark.parametrize("alg", ["None", "NONE", ""])
def test_alg_none_in_any_spelling_is_refused(tmp_path: Path, alg: str):
    token = hand_made_token({"alg": alg}, {"user_id": 1}, None)
    assert refusal_key(TokenVerifier(make_config(tmp_path)), token) == "token_algorithm"


def test_header_without_alg_is_refused(tmp_path: Path):
    token = hand_made_token({"typ": "JWT"}, {"user_id": 1}, SECRET.encode())
    assert refusal_key(TokenVerifier(make_config(tmp_path)), token) == "token_algorithm"


def test_hs512_token_is_refused_when_only_hs256_is_allowed(tmp_path: Path):
    token = jwt.encode({"user_id": 1}, SECRET, algorithm="HS512")
    assert refusal_key(TokenVerifier(make_config(tmp_path)), token) == "token_algorithm"


def test_hs512_token_is_accepted_when_hs512_is_allowed(tmp_path: Path):
    config = make_config(tmp_path, **{"auth.algorithms": ["HS256", "HS512"]})
    token = jwt.encode({"user_id": 1, "exp": in_an_hour()}, SECRET, algorithm="HS512")
    assert TokenVerifier(config).verify(token).user_id == 1


def test_token_signed_with_another_secret_is_invalid(tmp_path: Path):
    token = jwt.encode({"user_id": 1}, OTHER_SECRET, algorithm="HS256")
    assert refusal_key(TokenVerifier(make_config(tmp_path)), token) == "token_invalid"


def test_token_with_a_tampered_payload_is_invalid(tmp_path: Path):
    config = make_config(tmp_path)
    header, _, sig = mint_token(config, {"user_id": 1}, ttl=60).split(".")
    forged = b64url(json.dumps({"user_id": 1, "role": "admin"}).encode())
    assert refusal_key(TokenVerifier(config), f"{header}.{forged}.{sig}") == "token_invalid"


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "a.b", "....", "Bearer x.y.z"])
def test_garbage_token_is_invalid(tmp_path: Path, garbage: str):
    assert refusal_key(TokenVerifier(make_config(tmp_path)), garbage) == "token_invalid"


def test_token_whose_payload_is_not_an_object_is_invalid(tmp_path: Path):
    header = b64url(json.dumps({"alg": "HS256"}).encode())
    body = b64url(b"[1,2]")
    sig = hmac.new(SECRET.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    token = f"{header}.{body}.{b64url(sig)}"
    assert refusal_key(TokenVerifier(make_config(tmp_path)), token) == "token_invalid"


def test_token_without_user_id_or_sub_is_refused_for_its_claims(tmp_path: Path):
    config = make_config(tmp_path)
    token = mint_token(config, {"username": "nobody"}, ttl=60)
    assert refusal_key(TokenVerifier(config), token) == "token_claims"


@pytest.mark.parametrize("user_id", [True, False, "", None, 1.5, [1], {"id": 1}])
def test_token_with_an_unusable_user_id_is_refused_for_its_claims(tmp_path: Path, user_id: Any):
    config = make_config(tmp_path)
    token = mint_token(config, {"user_id": user_id}, ttl=60)
    assert refusal_key(TokenVerifier(config), token) == "token_claims"


def test_refusal_never_carries_the_token(tmp_path: Path):
    config = make_config(tmp_path)
    token = mint_token(config, {"user_id": 1}, ttl=-60)
    with pytest.raises(AuthError) as info:
        TokenVerifier(config).verify(token)
    assert token not in str(info.value)
    assert token not in repr(info.value.args)
    assert info.value.params == {}


# --- issuer and audience --------------------------------------------------------------


def test_token_from_the_configured_issuer_is_accepted(tmp_path: Path):
    config = make_config(tmp_path, **{"auth.issuer": "https://crm.example"})
    token = mint_token(config, {"user_id": 1}, ttl=60)  # mint_token adds iss
    assert TokenVerifier(config).verify(token).user_id == 1


def test_token_from_another_issuer_is_refused_as_wrong_issuer(tmp_path: Path):
    config = make_config(tmp_path, **{"auth.issuer": "https://crm.example"})
    token = mint_token(config, {"user_id": 1, "iss": "https://evil.example"}, ttl=60)
    assert refusal_key(TokenVerifier(config), token) == "token_issuer"


def test_token_without_issuer_is_refused_as_wrong_issuer_when_an_issuer_is_configured(
    tmp_path: Path,
):
    config = make_config(tmp_path, **{"auth.issuer": "https://crm.example"})
    token = jwt.encode({"user_id": 1, "exp": in_an_hour()}, SECRET, algorithm="HS256")
    assert refusal_key(TokenVerifier(config), token) == "token_issuer"


def test_token_for_another_audience_is_refused_as_wrong_audience(tmp_path: Path):
    config = make_config(tmp_path, **{"auth.audience": "wsserver"})
    token = mint_token(config, {"user_id": 1, "aud": "billing"}, ttl=60)
    assert refusal_key(TokenVerifier(config), token) == "token_audience"


def test_token_listing_the_configured_audience_among_others_is_accepted(tmp_path: Path):
    config = make_config(tmp_path, **{"auth.audience": "wsserver"})
    token = mint_token(config, {"user_id": 1, "aud": ["billing", "wsserver"]}, ttl=60)
    assert TokenVerifier(config).verify(token).user_id == 1


def test_token_without_audience_is_refused_when_an_audience_is_configured(tmp_path: Path):
    config = make_config(tmp_path, **{"auth.audience": "wsserver"})
    token = jwt.encode({"user_id": 1, "exp": in_an_hour()}, SECRET, algorithm="HS256")
    assert refusal_key(TokenVerifier(config), token) == "token_audience"


def test_integer_sub_is_a_user_id(tmp_path: Path):
    token = jwt.encode({"sub": 5, "exp": in_an_hour()}, SECRET, algorithm="HS256")
    assert TokenVerifier(make_config(tmp_path)).verify(token).user_id == 5


def test_short_secret_still_verifies_without_warning_per_token(tmp_path: Path):
    config = make_config(tmp_path, **{"auth.jwt_secret": "short"})
    verifier = TokenVerifier(config)
    token = mint_token(config, {"user_id": 1}, ttl=60)
    assert verifier.verify(token).user_id == 1  # filterwarnings=error would raise


def test_token_carrying_an_audience_is_accepted_when_none_is_configured(tmp_path: Path):
    config = make_config(tmp_path)
    token = mint_token(config, {"user_id": 1, "aud": "anything"}, ttl=60)
    assert TokenVerifier(config).verify(token).user_id == 1


# --- RS256 / ES256 with a public key file ---------------------------------------------


def test_rs256_token_signed_by_the_private_key_is_accepted(
    tmp_path: Path, rsa_keys: tuple[str, str]
):
    private, public = rsa_keys
    config = key_config(tmp_path, public, ["RS256"])
    token = mint_token(config, {"user_id": "r1", "group_id": 3}, ttl=60, private_key_pem=private)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    ident = TokenVerifier(config).verify(token)
    assert (ident.user_id, ident.group_id) == ("r1", 3)


def test_es256_token_signed_by_the_private_key_is_accepted(
    tmp_path: Path, ec_keys: tuple[str, str]
):
    private, public = ec_keys
    config = key_config(tmp_path, public, ["ES256"])
    token = mint_token(config, {"user_id": "e1"}, ttl=60, private_key_pem=private)
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert TokenVerifier(config).verify(token).user_id == "e1"


def test_rs256_token_signed_by_another_key_is_invalid(tmp_path: Path, rsa_keys: tuple[str, str]):
    _, public = rsa_keys
    other_private, _ = rsa_pem_pair()
    config = key_config(tmp_path, public, ["RS256"])
    token = mint_token(config, {"user_id": 1}, ttl=60, private_key_pem=other_private)
    assert refusal_key(TokenVerifier(config), token) == "token_invalid"


def test_expired_rs256_token_is_refused_as_expired(tmp_path: Path, rsa_keys: tuple[str, str]):
    private, public = rsa_keys
    config = key_config(tmp_path, public, ["RS256"])
    token = mint_token(config, {"user_id": 1}, ttl=-60, private_key_pem=private)
    assert refusal_key(TokenVerifier(config), token) == "token_expired"


def test_hs256_token_keyed_with_the_rsa_public_key_is_refused_when_only_rs256_is_allowed(
    tmp_path: Path, rsa_keys: tuple[str, str]
):
    # Algorithm confusion: the public key is public, so an attacker can HMAC with it.
    _, public = rsa_keys
    config = key_config(tmp_path, public, ["RS256"])
    token = hand_made_token({"alg": "HS256", "typ": "JWT"}, {"user_id": "root"}, public.encode())
    assert refusal_key(TokenVerifier(config), token) == "token_algorithm"


def test_hs256_token_keyed_with_the_rsa_public_key_is_invalid_when_both_are_allowed(
    tmp_path: Path, rsa_keys: tuple[str, str]
):
    _, public = rsa_keys
    config = key_config(tmp_path, public, ["HS256", "RS256"])
    token = hand_made_token({"alg": "HS256", "typ": "JWT"}, {"user_id": "root"}, public.encode())
    assert refusal_key(TokenVerifier(config), token) == "token_invalid"


def test_rs256_token_is_refused_when_only_hs256_is_allowed(
    tmp_path: Path, rsa_keys: tuple[str, str]
):
    private, _ = rsa_keys
    token = jwt.encode({"user_id": 1}, private, algorithm="RS256")
    assert refusal_key(TokenVerifier(make_config(tmp_path)), token) == "token_algorithm"


# --- the generated secret -------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_secret_file_is_created_once_readable_only_by_its_owner(tmp_path: Path):
    data_dir = tmp_path / "data"
    first = load_or_create_secret(data_dir)
    path = data_dir / SECRET_FILE
    assert path.is_file()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(first) >= 32
    assert path.read_text(encoding="utf-8").strip() == first
    before = os.stat(path).st_mtime_ns

    assert load_or_create_secret(data_dir) == first
    assert os.stat(path).st_mtime_ns == before


def test_each_data_directory_gets_its_own_secret(tmp_path: Path):
    assert load_or_create_secret(tmp_path / "a") != load_or_create_secret(tmp_path / "b")


def test_existing_secret_file_is_used_as_written(tmp_path: Path):
    (tmp_path / SECRET_FILE).write_text(
        "my-own-secret-that-is-long-enough-1234\n", encoding="utf-8"
    )
    assert load_or_create_secret(tmp_path) == "my-own-secret-that-is-long-enough-1234"


def test_token_minted_without_a_configured_secret_is_accepted_by_the_server(tmp_path: Path):
    config = make_config(tmp_path, **{"auth.jwt_secret": ""})
    token = mint_token(config, {"user_id": "u1"}, ttl=60)

    secret = (tmp_path / SECRET_FILE).read_text(encoding="utf-8").strip()
    assert jwt.decode(token, secret, algorithms=["HS256"])["user_id"] == "u1"
    # a verifier built later (a restarted server) reads the same file
    assert TokenVerifier(config).verify(token).user_id == "u1"


def test_token_minted_with_the_generated_secret_is_refused_by_another_data_directory(
    tmp_path: Path,
):
    minted = mint_token(make_config(tmp_path / "a", **{"auth.jwt_secret": ""}), {"user_id": 1}, 60)
    other = TokenVerifier(make_config(tmp_path / "b", **{"auth.jwt_secret": ""}))
    assert refusal_key(other, minted) == "token_invalid"


def test_configured_secret_means_no_secret_file_is_written(tmp_path: Path):
    config = make_config(tmp_path)
    TokenVerifier(config).verify(mint_token(config, {"user_id": 1}, ttl=60))
    assert not (tmp_path / SECRET_FILE).exists()


def test_mint_token_sets_the_configured_issuer_and_audience(tmp_path: Path):
    config = make_config(tmp_path, **{"auth.issuer": "me", "auth.audience": "them"})
    token = mint_token(config, {"user_id": 1}, ttl=60)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["iss"], claims["aud"]) == ("me", "them")
    assert claims["exp"] - claims["iat"] == 60


def test_mint_token_without_a_private_key_needs_an_hs_algorithm(
    tmp_path: Path, rsa_keys: tuple[str, str]
):
    config = key_config(tmp_path, rsa_keys[1], ["RS256"])
    with pytest.raises(ValueError):
        mint_token(config, {"user_id": 1}, ttl=60)


# --- Identity -------------------------------------------------------------------------


def test_principal_of_a_user_is_user_type_and_user_id_as_strings():
    assert Identity(user_id=42, user_type=1).principal == ("user", "1", "42")
    assert (
        Identity(user_id="42", user_type="1").principal
        == Identity(user_id=42, user_type=1).principal
    )
    assert Identity(user_id=42).principal == ("user", "", "42")


def test_no_token_can_claim_the_principal_of_an_activation_code():
    impostor = Identity(user_id="CODE1", user_type="code")
    assert impostor.principal != Identity(activation_code="CODE1").principal
    assert Identity(user_id="CODE1", user_type="device").principal != Identity(activation_code="CODE1").principal


def test_same_user_id_with_another_user_type_is_another_principal():
    assert Identity(user_id=7, user_type=1).principal != Identity(user_id=7, user_type=2).principal


def test_principal_of_a_desktop_client_is_its_activation_code():
    ident = Identity(activation_code="CODE1", group_id=5)
    assert ident.is_device
    assert ident.principal == ("device", "CODE1")
    assert Identity(activation_code="CODE1", group_id=6).principal == ident.principal


@pytest.mark.parametrize(
    ("role", "user_type", "admin"),
    [
        ("admin", None, True),
        ("admin", 1, True),
        ("Admin", None, False),
        ("administrator", None, False),
        (None, 3, False),
        ("user", None, False),
    ],
)
def test_only_role_admin_grants_admin_rights(role: Any, user_type: Any, admin: bool):
    assert Identity(user_id=1, role=role, user_type=user_type).is_admin is admin


def test_group_ids_compare_by_their_string_form():
    assert Identity(group_id="1").group_key == Identity(group_id=1).group_key == "1"
    assert Identity(group_id=None).group_key == ""
    assert Identity(group_id=1).group_key != Identity(group_id=2).group_key


def test_claims_with_a_boolean_group_id_are_refused():
    with pytest.raises(AuthError) as info:
        identity_from_claims({"user_id": 1, "group_id": True})
    assert info.value.key == "token_invalid"


def test_claims_with_rooms_that_are_not_a_list_of_strings_are_refused():
    for rooms in ("chat:*", [1], [["a"]]):
        with pytest.raises(AuthError):
            identity_from_claims({"user_id": 1, "rooms": rooms})


def test_claims_with_non_string_username_or_role_ignore_them():
    ident = identity_from_claims({"user_id": 1, "username": 5, "role": ["admin"]})
    assert ident.username is None
    assert ident.role is None
    assert not ident.is_admin
