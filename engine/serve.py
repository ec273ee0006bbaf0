"""Start the app in personal or workshop mode, with the server settings each needs.

    python -m engine.serve [--port 8501]                 # personal (make run): 127.0.0.1 only, no login
    python -m engine.serve --workshop [--port 8501]      # workshop (make workshop): all interfaces, login
    TUNEWISE_MODE=workshop python -m engine.serve        # the same

Workshop mode refuses to start until `python -m engine.users setup --instructor NAME` has made the server's secret
and first instructor. Both modes keep Streamlit's XSRF protection on and hide the "Deploy" button; the upload
limit is TUNEWISE_MAX_UPLOAD_MB (default engine/datafile.py's), passed to Streamlit as server.maxUploadSize.

Personal mode answers only a browser that names this computer (Host localhost, 127.0.0.1 or ::1: Streamlit's
server.allowedHosts), so a web page elsewhere cannot reach it through DNS rebinding and read the files its user can.
Workshop mode answers any name students use (everything there is behind the login); TUNEWISE_ALLOWED_HOSTS
(comma-separated, e.g. `gpu1.lab.example,10.0.0.5`) narrows either. Personal mode on another address (--address)
has no login: it says so when it starts, and its address is added to the allowed names.
Workshop mode makes every file it writes readable by the server's account only (umask 077): students with a shell
on the server cannot read each other's uploads, runs and exports, nor the registry.
"""

import argparse
import ipaddress
import os
import sys

from engine import paths


def command(workshop: bool, port: int, address: str | None = None) -> list[str]:
    from engine.datafile import max_upload_mb

    return (
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(paths.REPO / "app.py"),
            "--server.port",
            str(port),
            "--server.address",
            address or ("0.0.0.0" if workshop else "127.0.0.1"),
            "--server.headless",
            "true",
            "--server.enableXsrfProtection",
            "true",
            "--server.maxUploadSize",
            str(max(1, int(max_upload_mb()))),
            "--client.toolbarMode",
            "minimal",
            "--server.fileWatcherType",
            "none",
            "--browser.gatherUsageStats",
            "false",
        ]
        + [f"--server.allowedHosts={host}" for host in allowed_hosts(workshop, address)]
        + (_workshop_flags() if workshop else [])
    )


LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def allowed_hosts(workshop: bool, address: str | None) -> list[str]:
    """The Host names the server answers; ["*"] = any (.streamlit/config.toml lists only this computer's)."""
    listed = [h.strip() for h in os.environ.get("TUNEWISE_ALLOWED_HOSTS", "").split(",") if h.strip()]
    if listed:
        return [*LOCAL_NAMES, *listed]
    if workshop or (address and _unspecified(address)):
        return ["*"]  # the names students (or this person's other computers) use are not known here
    return [*LOCAL_NAMES, *([address] if address and address not in LOCAL_NAMES else [])]


def _unspecified(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified  # 0.0.0.0 or ::, every interface
    except ValueError:
        return False  # a host name


def _workshop_flags() -> list[str]:
    """No tracebacks on students' pages; HTTPS when the admin gives a certificate (TUNEWISE_SSL_CERT and
    TUNEWISE_SSL_KEY: passwords and the login cookie then never cross the room's network in clear)."""
    flags = ["--client.showErrorDetails", "none"]
    cert, key = os.environ.get("TUNEWISE_SSL_CERT"), os.environ.get("TUNEWISE_SSL_KEY")
    if cert and key:
        flags += ["--server.sslCertFile", cert, "--server.sslKeyFile", key]
    return flags


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--workshop", action="store_true", help="all interfaces, behind a login")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8501)))
    p.add_argument("--address", help="listen on this address instead (e.g. one network card's)")
    a = p.parse_args(argv)
    workshop = a.workshop or os.environ.get("TUNEWISE_MODE", "").strip().lower() == "workshop"
    env = dict(os.environ, TUNEWISE_MODE="workshop" if workshop else "personal")
    # The browser's address (the login's per-computer count, engine/users.py) is the connection's own, never an
    # X-Forwarded-For header, which uvicorn trusts from 127.0.0.1 by default: anyone with a shell on the server could
    # name any address. Behind a reverse proxy, TUNEWISE_TRUSTED_PROXY names the proxy's address instead.
    env["FORWARDED_ALLOW_IPS"] = os.environ.get("TUNEWISE_TRUSTED_PROXY", "")
    if workshop:
        os.environ["TUNEWISE_MODE"] = "workshop"
        from engine import users

        problem = users.setup_problem()
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        print(f"Workshop mode: students open http://<this server's address>:{a.port} and log in.", flush=True)
    if workshop:
        os.umask(0o077)  # the server's files are its own; Streamlit and every run it starts inherit this
        paths.home().chmod(0o700)  # and what `setup` (or an earlier server) made before: nobody else gets in
    elif a.address and a.address not in LOCAL_NAMES:
        print(
            f"warning: personal mode has no login, and on {a.address} anyone who can reach port {a.port} can use "
            "this app and read every file you can. For a class, use --workshop (README, Running a workshop).",
            file=sys.stderr,
            flush=True,
        )
    cmd = command(workshop, a.port, a.address)
    os.chdir(paths.REPO)
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    sys.exit(main())
