"""The `wsserver` command line: serve (the default), check-config, gen-config, gentoken,
systemd-unit, version, client.

Invariants:

- `main(argv)` never calls `sys.exit`; it returns the exit status (argparse itself
  still exits with 2 on a malformed command line, and 0 after `--help`).
- Exit status 2 means the configuration (or a file it names) is unusable; the
  reason goes to stderr as `config error: <key>: <message>`.
- The config file is `--config FILE`, else `$WSSERVER_CONFIG`, else the built-in
  defaults (no file needed). `WSSERVER_<SECTION>_<KEY>` variables override the
  file and flags override both.
- Heavy modules (the server, JWT minting, the client) are imported only by the
  subcommand that needs them, so `version`, `gen-config` and `check-config` stay light.
- stdin, stdout and stderr are UTF-8 on every platform (`_utf8_stdio`), also
  where Windows would use its ANSI code page for a redirected stream.
"""

import argparse
import codecs
import io
import os
import re
import sys
from collections.abc import Sequence

from wsserver._version import __version__
from wsserver.config import CONFIG_PATH_ENV, Config, ConfigError, default_config_text, load_config

__all__ = ["main"]

_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")


def _id(value: str) -> int | str:
    """An ID from the command line: an int when it is written as one ("42"), else the string ("u42", "007")."""
    return int(value) if _INTEGER.fullmatch(value) else value


def _config_path(args: argparse.Namespace) -> str | None:
    path: str | None = args.config or os.environ.get(CONFIG_PATH_ENV) or None
    return path


def _load(args: argparse.Namespace, overrides: dict[str, object]) -> Config | None:
    """Load the config for a subcommand, or print why not and return None."""
    try:
        return load_config(_config_path(args), overrides=overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    if args.host is not None:
        overrides["server.host"] = args.host
    if args.port is not None:
        overrides["server.port"] = args.port
    if args.data_dir is not None:
        overrides["storage.dir"] = args.data_dir
    config = _load(args, overrides)
    if config is None:
        return 2
    if args.workers:
        return _serve_workers(args, config)
    if args.worker:  # one of `--workers N`: its own directory, the shared port
        from wsserver.ops.workers import worker_dir

        overrides["storage.dir"] = worker_dir(config.storage.dir, args.worker)
        config = _load(args, overrides)
        if config is None:
            return 2
    from wsserver.embed import install_http_api
    from wsserver.net.server import Server, run_server

    def setup(server: Server) -> None:
        install_http_api(server)
        server.reuse_port = bool(args.worker)

    # The path and the flags are kept so that SIGHUP can read the file again.
    return int(run_server(config, config_path=_config_path(args), overrides=overrides, setup=setup))


def _serve_workers(args: argparse.Namespace, config: Config) -> int:
    """`serve --workers N`: the parent of N workers (`wsserver.ops.workers`)."""
    if args.workers < 1 or args.worker:
        print("--workers: must be at least 1", file=sys.stderr)
        return 2
    if not config.cluster.redis_url:
        print("--workers needs cluster.redis_url: the workers are nodes of one cluster", file=sys.stderr)
        return 2
    from wsserver.ops.workers import can_reuse_port

    if not can_reuse_port():
        print("--workers needs SO_REUSEPORT, which this platform lacks", file=sys.stderr)
        return 2
    if config.server.port == 0:
        print("--workers needs a fixed server.port (0 would give each worker its own)", file=sys.stderr)
        return 2
    from wsserver.ops.logging import setup_logging
    from wsserver.ops.workers import run_workers

    setup_logging(config.log.level, config.log.format)
    argv = list(args.argv)
    if argv and argv[0] == "serve":
        argv = argv[1:]
    return run_workers(_without_workers(argv), args.workers)


def _without_workers(argv: list[str]) -> list[str]:
    """`argv` without `--workers N` / `--workers=N`."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out


def _check_config(args: argparse.Namespace) -> int:
    if _load(args, {}) is None:
        return 2
    print(f"ok: {_config_path(args) or '(built-in defaults)'}")
    return 0


def _gen_config(args: argparse.Namespace) -> int:
    sys.stdout.write(default_config_text())
    return 0


def _gentoken(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    if args.data_dir is not None:
        overrides["storage.dir"] = args.data_dir
    config = _load(args, overrides)
    if config is None:
        return 2
    private_key_pem: str | None = None
    if args.private_key is not None:
        try:
            with open(args.private_key, encoding="utf-8") as file:
                private_key_pem = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            print(f"config error: --private-key {args.private_key}: {exc}", file=sys.stderr)
            return 2
    claims: dict[str, object] = {"user_id": _id(args.user)}
    if args.group is not None:
        claims["group_id"] = _id(args.group)
    if args.role is not None:
        claims["role"] = args.role
    if args.user_type is not None:
        claims["user_type"] = args.user_type
    if args.username is not None:
        claims["username"] = args.username
    if args.rooms is not None:
        claims["rooms"] = list(args.rooms)
    from wsserver.tokens import SECRET_FILE, mint_token

    # Without auth.jwt_secret the token is signed with the data directory's
    # generated secret; a directory without one gets a new secret, which only a
    # server using that directory accepts (a common mistake: another directory).
    secret_file = os.path.join(config.storage.dir, SECRET_FILE)
    creates_secret = (
        private_key_pem is None and not config.auth.jwt_secret and not os.path.exists(secret_file)
    )
    try:
        token = mint_token(config, claims, args.ttl, private_key_pem)
    except ValueError as exc:  # e.g. no configured algorithm fits the key given
        print(f"gentoken: {exc}", file=sys.stderr)
        return 2
    if creates_secret:
        print(
            f"gentoken: warning: created a new secret in {os.path.abspath(secret_file)}; "
            "a server using another data directory rejects this token "
            "(use --data-dir, or set auth.jwt_secret)",
            file=sys.stderr,
        )
    print(token)
    return 0


def _running_pyz() -> str | None:
    """The absolute path of the pyz this process runs from, if it does."""
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0.endswith(".pyz") and os.path.isfile(argv0):
        return os.path.abspath(argv0)
    return None


def _systemd_unit(args: argparse.Namespace) -> int:
    from wsserver.ops.systemd import DEFAULT_CONFIG, DEFAULT_PYZ, render_unit

    pyz = args.pyz or _running_pyz() or DEFAULT_PYZ
    config = args.config or DEFAULT_CONFIG
    sys.stdout.write(
        render_unit(
            pyz=os.path.abspath(pyz),
            config=os.path.abspath(config),
            user=None if args.dynamic_user else args.user,
            python=args.python,
            version=__version__,
        )
    )
    return 0


def _client(args: argparse.Namespace) -> int:
    from wsserver.client.cli import run

    return run(args)


def _version(args: argparse.Namespace) -> int:
    print(f"wsserver {__version__}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsserver",
        description="A real-time WebSocket hub. Without a subcommand, runs `serve`.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def config_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--config",
            metavar="FILE",
            help=f"TOML config file (default: ${CONFIG_PATH_ENV}, else built-in defaults)",
        )

    serve = commands.add_parser("serve", help="run the server (the default)")
    config_option(serve)
    serve.add_argument("--host", metavar="H", help="listen address (overrides server.host)")
    serve.add_argument(
        "--port",
        metavar="P",
        type=int,
        help="listen port, 0 = any free one (overrides server.port)",
    )
    serve.add_argument("--data-dir", metavar="D", help="state directory (overrides storage.dir)")
    serve.add_argument(
        "--workers",
        metavar="N",
        type=int,
        default=0,
        help="run N processes on one port (SO_REUSEPORT), each a node of the cluster at "
        "cluster.redis_url (docs/CLUSTER.md)",
    )
    serve.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)  # (one of them)
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check-config", help="load and validate the config, then exit")
    config_option(check)
    check.set_defaults(run=_check_config)

    gen = commands.add_parser("gen-config", help="print the documented default wsserver.toml")
    gen.set_defaults(run=_gen_config)

    token = commands.add_parser("gentoken", help="print a signed JWT for testing")
    token.add_argument("--user", required=True, metavar="U", help="user_id claim (digits = int)")
    token.add_argument("--group", metavar="G", help="group_id claim (digits = int)")
    token.add_argument("--role", metavar="R", help='role claim ("admin" grants admin rights)')
    token.add_argument(
        "--user-type", metavar="T", type=int, help="user_type claim (1 user, 2 merchant, 3 admin)"
    )
    token.add_argument("--username", metavar="N", help="username claim")
    token.add_argument(
        "--rooms", nargs="+", metavar="PATTERN", help="rooms claim: glob patterns the user may join"
    )
    token.add_argument(
        "--ttl",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="lifetime in seconds (default 3600; 0 or negative mints an already expired token); "
        "every token carries exp",
    )
    config_option(token)
    token.add_argument(
        "--data-dir", metavar="D", help="state directory holding a generated jwt_secret"
    )
    token.add_argument(
        "--private-key", metavar="FILE", help="PEM private key for RS256/ES256 tokens"
    )
    token.set_defaults(run=_gentoken)

    unit = commands.add_parser(
        "systemd-unit", help="print a systemd service unit for the pyz (Type=notify, hardened)"
    )
    unit.add_argument(
        "--pyz", metavar="PATH", help="the pyz on the server (default: this pyz, else /opt/wsserver/wsserver.pyz)"
    )
    unit.add_argument(
        "--config", metavar="PATH", help="the config file on the server (default: /etc/wsserver/wsserver.toml)"
    )
    unit.add_argument(
        "--user", metavar="NAME", default="wsserver", help="run as this system user (default: wsserver)"
    )
    unit.add_argument(
        "--dynamic-user", action="store_true", help="run as a transient user (DynamicUser=yes) instead"
    )
    unit.add_argument(
        "--python", metavar="PATH", default="/usr/bin/python3", help="interpreter (default: /usr/bin/python3)"
    )
    unit.set_defaults(run=_systemd_unit)

    client = commands.add_parser(
        "client", help="connect to a hub: print what it sends as JSON lines, send the JSON lines typed on stdin"
    )
    client.add_argument("--url", required=True, help="the hub's WebSocket URL, e.g. ws://127.0.0.1:8080/ws")
    credential = client.add_mutually_exclusive_group()
    credential.add_argument("--token", metavar="JWT", help="authenticate with a JWT (see `gentoken`)")
    credential.add_argument("--activation-code", metavar="CODE", help="authenticate as a desktop client (seed 000)")
    client.add_argument("--device-id", metavar="D", help="this device's id (shown in the device list)")
    client.add_argument(
        "--last-seq", metavar="N", type=int, help="resume the inbox after this seq (default: only undelivered messages)"
    )
    client.add_argument("--auto-ack", action="store_true", help="send message_delivered for each message received")
    client.add_argument(
        "--wait", metavar="SECONDS", type=float, default=10.0, help="after EOF on stdin, wait this long at most for replies (default 10)"
    )
    client.set_defaults(run=_client)

    version = commands.add_parser("version", help="print the version")
    version.set_defaults(run=_version)
    return parser


def _utf8_stdio() -> None:
    """Make the standard streams UTF-8, whatever the platform's code page.

    Why: on Windows a redirected stream (a pipe, `> file`) is encoded in the
    ANSI code page (cp1252, cp936, ...): `gen-config > wsserver.toml` wrote a
    file that TOML, which is UTF-8, could not load, and `wsserver client` failed
    on the first message holding a character that page lacks (the `connected`
    message's own text). JSON lines and TOML are UTF-8 by their specifications.
    A Windows console is not affected (CPython writes it as Unicode either way),
    nor is a UTF-8 locale; each stream keeps its error handler.
    """
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and codecs.lookup(stream.encoding).name != "utf-8":
            stream.reconfigure(encoding="utf-8", errors=stream.errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `wsserver` command line with `argv` (default `sys.argv[1:]`); return the exit status."""
    _utf8_stdio()
    args_list = list(sys.argv[1:] if argv is None else argv)
    # No subcommand means serve, including `wsserver --config FILE`.
    if not args_list or (args_list[0].startswith("-") and args_list[0] not in ("-h", "--help")):
        args_list.insert(0, "serve")
    args = _parser().parse_args(args_list)
    args.argv = args_list  # (`serve --workers` starts its workers with the same arguments)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
