"""The ``feedagent`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from agent import __version__

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 64
EX_CONFIG = 78  # sysexits EX_CONFIG: systemd and operators know it means "fix the config"
EX_BROKEN_PIPE = 128 + signal.SIGPIPE  # what `yes | head` reports: the reader left, nothing went wrong here

log = logging.getLogger("agent.cli")


def default_config_path() -> Path:
    """``$FEEDAGENT_CONFIG``, else ./configs/feedagent.yaml when present, else /etc/feedagent/feedagent.yaml."""
    env = os.environ.get("FEEDAGENT_CONFIG")
    if env:
        return Path(env)
    local = Path("configs/feedagent.yaml")
    return local if local.exists() else Path("/etc/feedagent/feedagent.yaml")


def _load_or_report(path: Path, *, require_secrets: bool = True):  # type: ignore[no-untyped-def]
    """Load the config, or print every problem as FILE:LINE:COL: path: message and return None."""
    from agent.config.loader import ConfigError, load_config

    try:
        return load_config(path, require_secrets=require_secrets)
    except ConfigError as exc:
        for issue in [*exc.issues, *exc.warnings]:
            print(str(issue), file=sys.stderr)
        return None


def _environment_ok(loaded, *, for_run: bool) -> bool:  # type: ignore[no-untyped-def]
    """The second phase of validation (state_dir, sink files, admin.listen on this machine); prints problems."""
    from agent.config.environment import check_environment

    issues = check_environment(loaded, for_run=for_run)
    for issue in issues:
        print(str(issue), file=sys.stderr)
    return not any(issue.is_error for issue in issues)


def cmd_validate(args: argparse.Namespace) -> int:
    check_machine = not args.no_environment
    loaded = _load_or_report(args.config, require_secrets=check_machine)
    if loaded is None:
        return EX_CONFIG
    for warning in getattr(loaded, "warnings", []):
        print(str(warning), file=sys.stderr)
    if check_machine and not _environment_ok(loaded, for_run=False):
        return EX_CONFIG
    print(f"{args.config}: ok ({len(loaded.config.exchanges)} exchanges)")
    return EX_OK


def cmd_print_config(args: argparse.Namespace) -> int:
    from agent.config.render import render_redacted

    loaded = _load_or_report(args.config)
    if loaded is None:
        return EX_CONFIG
    sys.stdout.write(render_redacted(loaded))
    return EX_OK


def cmd_version(args: argparse.Namespace) -> int:
    print(f"feedagent {__version__} (python {sys.version.split()[0]})")
    return EX_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from agent.simulator import SimulatorConfig, run_standalone
    from agent.telemetry.logging import configure_logging

    configure_logging("json", "warning")
    try:
        config = SimulatorConfig(seed=args.seed, initial_positions_per_venue=args.initial_positions,
                                 position_change_interval_seconds=args.position_change_interval_seconds)
        asyncio.run(run_standalone(host=args.host, port=args.port, config=config))
    except KeyboardInterrupt:
        pass
    return EX_OK


def cmd_run(args: argparse.Namespace) -> int:
    from agent.admin.server import AdminListenError
    from agent.telemetry.logging import configure_logging

    loaded = _load_or_report(args.config)
    if loaded is None:
        return EX_CONFIG
    if not _environment_ok(loaded, for_run=True):
        return EX_CONFIG
    log_cfg = loaded.config.telemetry.log
    configure_logging(log_cfg.format, log_cfg.level)
    try:
        asyncio.run(_run(loaded))
    except KeyboardInterrupt:
        pass
    except AdminListenError as exc:  # taken between the check above and the bind: the same message
        print(str(loaded.issue(("admin", "listen"), str(exc))), file=sys.stderr)
        return EX_CONFIG
    return EX_OK


async def _run(loaded) -> None:  # type: ignore[no-untyped-def]
    from agent.config.issues import ReloadError
    from agent.supervisor import Supervisor
    from agent.telemetry.sdnotify import Notifier

    notifier = Notifier()  # systemd Type=notify; a no-op without NOTIFY_SOCKET
    supervisor = Supervisor(loaded, notifier=notifier)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def reload_on_hup() -> None:
        try:
            await supervisor.reload("sighup")
        except ReloadError:
            pass  # logged with file:line by the supervisor; the running config stays

    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload_on_hup(), name="agent/reload"))
    try:
        await supervisor.start()
        notifier.ready()
        notifier.start_watchdog()  # task "sdnotify/watchdog": WATCHDOG=1 every WATCHDOG_USEC/2
        await stop.wait()
        log.info("shutting down", extra={"event": "agent_stopping"})
    finally:
        notifier.stopping()
        try:
            async with asyncio.timeout(loaded.config.agent.shutdown_timeout_seconds):
                await supervisor.stop()
        except TimeoutError:
            log.error("shutdown timed out", extra={"event": "shutdown_timeout"})
        notifier.close()


def _admin_target(args: argparse.Namespace) -> tuple[str, str] | int:
    """The running agent's admin URL and the name of the token variable, or the exit code after saying why.

    The address comes from ``--admin-url``, or from a *valid* config: its agent's
    ``state_dir/agent.json``, else ``admin.listen``. Never a guess: with an invalid or
    missing config the CLI refuses (a default address may be another agent, and the
    token would go to it).
    """
    from agent.admin.client import AdminError, admin_url
    from agent.config.loader import ConfigError, load_config

    if args.admin_url:
        if not args.admin_url.startswith(("http://", "https://")):
            print(f"feedagent {args.command}: --admin-url must be an http:// or https:// URL, "
                  f"got {args.admin_url!r}", file=sys.stderr)
            return EX_USAGE
        return args.admin_url.rstrip("/"), _token_env_for_explicit_url(args.config)
    try:
        config = load_config(args.config, require_secrets=False).config
    except ConfigError as exc:
        for issue in exc.issues:
            print(str(issue), file=sys.stderr)
        print(f"feedagent {args.command}: the config is invalid, so the agent's address is unknown; "
              "fix it, or pass --admin-url", file=sys.stderr)
        return EX_CONFIG
    try:
        return admin_url(config), config.admin.token_env or ""
    except AdminError as exc:
        print(f"feedagent {args.command}: {exc}", file=sys.stderr)
        return EX_FAILURE


def _token_env_for_explicit_url(path: Path) -> str:
    """With ``--admin-url``: the config's ``admin.token_env`` if the config (or its ``admin`` part) is valid,
    else the default (the RUNBOOK passes --admin-url exactly when the file is broken)."""
    from agent.config.loader import ConfigError, load_config
    from agent.config.models import AdminSection

    try:
        return load_config(path, require_secrets=False).config.admin.token_env or ""
    except ConfigError:
        pass
    try:
        from agent.config.yaml_source import parse_yaml

        data = parse_yaml(path.read_text(), str(path)).data
        return AdminSection.model_validate((data or {}).get("admin") or {}).token_env or ""
    except Exception:  # noqa: BLE001 - any problem with the broken file: the documented default
        return AdminSection().token_env or ""


def cmd_status(args: argparse.Namespace) -> int:
    from agent.admin.client import AdminError, format_status, get_status

    target = _admin_target(args)
    if isinstance(target, int):
        return target
    try:
        doc = get_status(target[0])
    except AdminError as exc:
        print(f"feedagent status: {exc}", file=sys.stderr)
        return EX_FAILURE
    print(json.dumps(doc, indent=2, default=str) if args.json else format_status(doc))
    return EX_OK


def cmd_mode(args: argparse.Namespace) -> int:
    from agent.admin.client import AdminError, set_mode, token_from_env

    target = _admin_target(args)
    if isinstance(target, int):
        return target
    pin = True if args.pin else False if args.unpin else None
    try:
        result = set_mode(target[0], token_from_env(target[1]), args.exchange, args.mode, pin, args.reason)
    except AdminError as exc:
        print(f"feedagent mode: {exc}", file=sys.stderr)
        return EX_FAILURE
    state = "changed" if result.get("changed") else "unchanged"
    pinned = f", pinned to {result['pinned']}" if result.get("pinned") else ""
    print(f"{result['exchange']}: mode {result['mode']} ({state}{pinned})")
    return EX_OK


def cmd_reload(args: argparse.Namespace) -> int:
    from agent.admin.client import AdminError, reload, token_from_env

    target = _admin_target(args)
    if isinstance(target, int):
        return target
    try:
        result = reload(target[0], token_from_env(target[1]))
    except AdminError as exc:
        print(f"feedagent reload: {exc}", file=sys.stderr)
        return EX_FAILURE
    print(json.dumps(result, indent=2))
    return EX_OK


def cmd_report(args: argparse.Namespace) -> int:
    from agent.shadow.cli import write_report

    loaded = _load_or_report(args.config)
    if loaded is None:
        return EX_CONFIG
    try:
        return write_report(loaded, exchange=args.exchange, since=args.since, fmt=args.format, out=args.out)
    except ValueError as exc:
        print(f"feedagent report: {exc}", file=sys.stderr)
        return EX_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feedagent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"feedagent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-c", "--config", type=Path, default=None,
                       help="config file (default: $FEEDAGENT_CONFIG, ./configs/feedagent.yaml, /etc/feedagent/feedagent.yaml)")
        return p

    with_config(sub.add_parser("run", help="run the agent")).set_defaults(func=cmd_run)
    validate = with_config(sub.add_parser("validate", help="check a config file and this machine for it; "
                                                           "exit 78 when invalid"))
    validate.add_argument("--no-environment", action="store_true",
                          help="check the file only: not the secrets, state_dir, sink files or admin.listen "
                               "(for a config meant for another machine)")
    validate.set_defaults(func=cmd_validate)
    with_config(sub.add_parser("print-config", help="print the effective config, secrets redacted")).set_defaults(
        func=cmd_print_config)
    sub.add_parser("version", help="print the version").set_defaults(func=cmd_version)

    def with_admin(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        with_config(p)
        p.add_argument("--admin-url", default=None,
                       help="the agent's admin URL (default: from the config, which must be valid: its agent's "
                            "state_dir/agent.json, else admin.listen)")
        return p

    status = with_admin(sub.add_parser("status", help="the running agent's exchanges: mode, breaker, why"))
    status.add_argument("--json", action="store_true", help="the whole /status document")
    status.set_defaults(func=cmd_status)
    mode = with_admin(sub.add_parser("mode", help="switch an exchange's mode in the running agent (needs the token)"))
    mode.add_argument("exchange")
    mode.add_argument("mode", choices=["rest", "hybrid", "shadow"])
    pin = mode.add_mutually_exclusive_group()
    pin.add_argument("--pin", action="store_true", help="automation never changes this mode until --unpin")
    pin.add_argument("--unpin", action="store_true", help="hand the exchange back to automation")
    mode.add_argument("--reason", default="operator", help="recorded with the transition")
    mode.set_defaults(func=cmd_mode)
    with_admin(sub.add_parser("reload", help="reload the running agent's config (same as SIGHUP)")).set_defaults(
        func=cmd_reload)
    report = with_config(sub.add_parser("report", help="render the shadow comparison report"))
    report.add_argument("--exchange", default=None)
    report.add_argument("--since", default="24h", help="how far back, e.g. 30m, 2h, 7d (default 24h)")
    report.add_argument("--format", choices=["json", "md", "html"], default="md")
    report.add_argument("--out", type=Path, default=None, help="write here instead of stdout")
    report.set_defaults(func=cmd_report)
    sim = sub.add_parser("simulate", help="run the exchange simulator standalone; prints its URLs as one JSON line")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=0)
    sim.add_argument("--seed", type=int, default=None, help="seed of the price walk and autopilot (reproducible runs)")
    sim.add_argument("--initial-positions", type=int, default=2, help="positions opened per venue at start")
    sim.add_argument("--position-change-interval-seconds", type=float, default=2.0,
                     help="autopilot period; 0 turns it off (positions only change through the control API)")
    sim.set_defaults(func=cmd_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``feedagent`` console script."""
    args = build_parser().parse_args(argv)
    if getattr(args, "config", "absent") is None:
        args.config = default_config_path()
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, not at exit: a closed pipe is seen while we can still handle it
    except BrokenPipeError:
        # `feedagent status | head`: the reader is gone. Point stdout at /dev/null so that the
        # interpreter's own flush at exit does not raise again, and leave quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EX_BROKEN_PIPE
    return code


if __name__ == "__main__":
    raise SystemExit(main())
