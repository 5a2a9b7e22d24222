"""Credentials from a WebSocket handshake (`wsserver.net.admission`): where a
token, an activation code and a device id are taken from, in SPEC order.
What the server answers each is tested on the real server
(tests/test_integration.py, tests/test_auth_throttle.py)."""

from wsserver.net.admission import Credentials, credentials_from_handshake


def headers(**values: str):
    """A case-insensitive header lookup like the HTTP layer's."""
    table = {k.replace("_", "-").lower(): v for k, v in values.items()}
    return lambda name: table.get(name.lower())


def test_bearer_header_wins_over_token_query_parameter():
    creds = credentials_from_handshake(
        headers(Authorization="Bearer from-header"), {"token": "from-query"}
    )
    assert creds.token == "from-header"


def test_bearer_scheme_is_case_insensitive():
    assert credentials_from_handshake(headers(Authorization="bearer abc"), {}).token == "abc"


def test_token_query_parameter_is_used_without_a_bearer_header():
    assert credentials_from_handshake(headers(), {"token": "q"}).token == "q"
    basic = credentials_from_handshake(headers(Authorization="Basic dXNlcjpwdw=="), {"token": "q"})
    assert basic.token == "q"


def test_empty_bearer_header_falls_back_to_the_query_token():
    creds = credentials_from_handshake(headers(Authorization="Bearer   "), {"token": "q"})
    assert creds.token == "q"


def test_no_credentials_gives_nothing():
    assert credentials_from_handshake(headers(), {}) == Credentials()


def test_activation_code_comes_from_the_query():
    creds = credentials_from_handshake(headers(), {"activation_code": "CODE1"})
    assert creds.activation_code == "CODE1"
    assert creds.token is None


def test_activation_code_comes_from_the_x_activation_code_header():
    creds = credentials_from_handshake(headers(X_Activation_Code="CODE2"), {})
    assert creds.activation_code == "CODE2"


def test_device_id_comes_from_the_query():
    creds = credentials_from_handshake(headers(), {"token": "t", "device_id": "pc-1"})
    assert creds.device_id == "pc-1"
    assert credentials_from_handshake(headers(), {}).device_id is None
