"""JWTs: their verification into an `Identity` (a core value, `core.identity`), the
generated secret of a data directory, and minting (`wsserver gentoken`, tests).

Invariants:
- `none` is never accepted, whatever the configuration says; a token whose
  header names an algorithm outside `auth.algorithms` is refused before any
  signature check.
- With `auth.require_exp` (the default) a token without `exp` is refused
  (`token_no_exp`): it would never expire. With `auth.require_user_type` a
  token without `user_type` is refused (`token_no_user_type`).
- Tokens and activation codes are never put into an exception message or a
  log line; `AuthError` carries only a catalogue key.
- When `auth.jwt_secret` is empty and an HS* algorithm is allowed, the secret
  is generated once and kept in `<storage.dir>/jwt_secret` (mode 0600), so the
  embedded defaults work and `wsserver gentoken` mints tokens the server takes.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
from jwt.algorithms import HMACAlgorithm
from jwt.warnings import InsecureKeyLengthWarning

from wsserver.core.identity import Identity
from wsserver.errors import AuthError

if TYPE_CHECKING:
    from wsserver.config import Config

log = logging.getLogger("wsserver.auth")  # the name operators filter the logs by

MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
KEY_ALGORITHMS = frozenset({"RS256", "ES256"})
_HMAC_HASHES = {"HS256": HMACAlgorithm.SHA256, "HS384": HMACAlgorithm.SHA384, "HS512": HMACAlgorithm.SHA512}
SECRET_FILE = "jwt_secret"


def load_or_create_secret(data_dir: str | os.PathLike[str]) -> str:
    """The generated HMAC secret of this data directory, created on first use."""
    path = Path(data_dir) / SECRET_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # storage.dir: owner only
    secret = secrets.token_urlsafe(48)
    # Written whole under a private name, then put in place atomically: a
    # process racing us sees either no file or the complete secret.
    tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secret + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # fails if another process won the race
    except FileExistsError:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError:
        # No hard links on this file system (FAT, some network shares): place the
        # file only if it is still absent, and use whatever secret ended up there.
        _place_if_absent(tmp, path)
        secret = path.read_text(encoding="utf-8").strip()
    finally:
        if tmp.exists():
            tmp.unlink()
    return secret


def _place_if_absent(tmp: Path, path: Path) -> None:
    """Move `tmp` to `path` unless `path` exists. On Windows `os.rename` refuses an
    existing target, so this is atomic there; elsewhere (only on file systems without
    hard links) two processes starting at the same instant could still both write."""
    try:
        if os.name == "nt" or not path.exists():
            os.rename(tmp, path)
    except FileExistsError:
        pass


def _hmac_secret(config: Config) -> str:
    if config.auth.jwt_secret:
        return config.auth.jwt_secret
    return load_or_create_secret(config.storage.dir)


class _PreparedHMAC(HMACAlgorithm):
    """PyJWT's HMAC algorithm with our secret prepared once.

    PyJWT prepares the key on every `decode` (for an HMAC secret that includes
    trying to parse it as a DER public key, to refuse asymmetric keys); that was
    a third of a verification. The secret is checked once here instead.
    """

    def __init__(self, hash_alg: Any, secret: str) -> None:
        super().__init__(hash_alg)
        self._secret = secret
        self._prepared = super().prepare_key(secret)

    def prepare_key(self, key: str | bytes) -> bytes:
        return self._prepared if key is self._secret else super().prepare_key(key)


class TokenVerifier:
    """Checks JWTs against `[auth]`; built once at start-up (and on reload)."""

    def __init__(self, config: Config) -> None:
        auth = config.auth
        self._algorithms = [a for a in auth.algorithms if a.lower() != "none"]
        self._issuer = auth.issuer or None
        self._require_user_type = auth.require_user_type
        self._audience = auth.audience or None
        self._hmac_key: str | None = None
        self._public_key: Any = None
        self._short_secret = False
        # our own PyJWT object, so that its algorithms can hold prepared keys
        self._jwt = jwt.PyJWT()
        jws = self._jwt._jws
        hmac_algs = [a for a in self._algorithms if a in HMAC_ALGORITHMS]
        key_algs = [a for a in self._algorithms if a in KEY_ALGORITHMS]
        if hmac_algs:
            self._hmac_key = _hmac_secret(config)
            if len(self._hmac_key.encode()) < MIN_SECRET_BYTES:
                self._short_secret = True
                log.warning(
                    "auth.jwt_secret is shorter than %d bytes; use a longer secret", MIN_SECRET_BYTES
                )
            for alg in hmac_algs:
                jws.unregister_algorithm(alg)
                jws.register_algorithm(alg, _PreparedHMAC(_HMAC_HASHES[alg], self._hmac_key))
        if key_algs and auth.jwt_public_key_file:
            pem = Path(auth.jwt_public_key_file).read_text(encoding="utf-8")
            self._public_key = pem
            for alg in key_algs:  # a key object, parsed once, where the file suits the algorithm
                try:
                    self._public_key = jws.get_algorithm_by_name(alg).prepare_key(pem)
                    break
                except (jwt.PyJWTError, ValueError, TypeError):
                    continue
        # Without both kinds of key there is one key for every allowed algorithm,
        # and PyJWT itself refuses a token whose `alg` is not allowed.
        self._single_key: Any = None
        if hmac_algs and not key_algs:
            self._single_key = self._hmac_key
        elif key_algs and not hmac_algs:
            self._single_key = self._public_key
        self._options: Any = {
            "verify_aud": self._audience is not None,
            # `sub` may be an integer id (SPEC: ids are strings or integers);
            # identity_from_claims checks its type instead.
            "verify_sub": False,
            # `auth.require_exp`: a token that never expires cannot be revoked
            "require": ["exp"] if auth.require_exp else [],
        }

    def verify(self, token: str) -> Identity:
        """The identity in `token`, or `AuthError` saying why not."""
        key = self._single_key
        algorithms = self._algorithms
        if key is None:
            try:
                header = jwt.get_unverified_header(token)
            except jwt.PyJWTError:
                raise AuthError("token_invalid") from None
            alg = header.get("alg")
            if not isinstance(alg, str) or alg not in self._algorithms:
                raise AuthError("token_algorithm")
            key = self._hmac_key if alg in HMAC_ALGORITHMS else self._public_key
            algorithms = [alg]
        if not key:
            raise AuthError("jwt_not_configured")
        try:
            if self._short_secret:
                with warnings.catch_warnings():
                    # a short shared secret is reported once at start-up, not per token
                    warnings.simplefilter("ignore", InsecureKeyLengthWarning)
                    claims = self._decode(token, key, algorithms)
            else:
                claims = self._decode(token, key, algorithms)
        except jwt.MissingRequiredClaimError as err:
            reason = {"iss": "token_issuer", "aud": "token_audience", "exp": "token_no_exp"}.get(
                err.claim, "token_invalid"
            )
            raise AuthError(reason) from None
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token_not_yet_valid") from None
        except jwt.InvalidIssuerError:
            raise AuthError("token_issuer") from None
        except jwt.InvalidAudienceError:
            raise AuthError("token_audience") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError("token_algorithm") from None
        except jwt.PyJWTError:
            raise AuthError("token_invalid") from None
        identity = identity_from_claims(claims)
        if self._require_user_type and identity.user_type is None:
            # `auth.require_user_type`: user 5 and merchant 5 never merge by accident
            raise AuthError("token_no_user_type")
        return identity

    def _decode(self, token: str, key: Any, algorithms: list[str]) -> dict[str, Any]:
        return self._jwt.decode(
            token,
            key,
            algorithms=algorithms,
            issuer=self._issuer,
            audience=self._audience,
            options=self._options,
        )


def _is_id(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool) and value != ""


def identity_from_claims(claims: dict[str, Any]) -> Identity:
    """Map verified claims to an `Identity`; `user_id` (else `sub`) is required."""
    user_id = claims.get("user_id", claims.get("sub"))
    if not _is_id(user_id):
        raise AuthError("token_claims")
    group_id = claims.get("group_id")
    if group_id is not None and not _is_id(group_id):
        raise AuthError("token_invalid")
    user_type = claims.get("user_type")
    if user_type is not None and not _is_id(user_type):
        raise AuthError("token_invalid")
    username = claims.get("username")
    rooms = claims.get("rooms")
    if rooms is not None:
        if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
            raise AuthError("token_invalid")
        rooms = tuple(rooms)
    role = claims.get("role")
    avatar = claims.get("avatar")
    chat_role = claims.get("chat_role")
    exp = claims.get("exp")
    return Identity(
        user_id=user_id,
        user_type=user_type,
        username=username if isinstance(username, str) else None,
        group_id=group_id,
        role=role if isinstance(role, str) else None,
        rooms=rooms,
        expires_at=float(exp) if isinstance(exp, int | float) else None,
        avatar=avatar if isinstance(avatar, str) else None,
        chat_role=chat_role if isinstance(chat_role, str) else None,
    )


def mint_token(
    config: Config,
    claims: dict[str, Any],
    ttl: float,
    private_key_pem: str | None = None,
) -> str:
    """Make a token the server configured by `config` accepts (for `gentoken` and tests).

    Uses the first allowed HS* algorithm with the configured or generated
    secret; with `private_key_pem`, the first allowed RS256/ES256 instead.
    """
    now = int(time.time())
    payload: dict[str, Any] = {"iat": now, "exp": now + int(ttl), **claims}
    if config.auth.issuer:
        payload.setdefault("iss", config.auth.issuer)
    if config.auth.audience:
        payload.setdefault("aud", config.auth.audience)
    algs = list(config.auth.algorithms)
    if private_key_pem is not None:
        alg = next((a for a in algs if a in KEY_ALGORITHMS), None)
        if alg is None:
            raise ValueError("auth.algorithms allows no RS256/ES256 algorithm")
        return jwt.encode(payload, private_key_pem, algorithm=alg)
    alg = next((a for a in algs if a in HMAC_ALGORITHMS), None)
    if alg is None:
        raise ValueError("auth.algorithms allows no HS* algorithm; pass a private key")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(payload, _hmac_secret(config), algorithm=alg)
