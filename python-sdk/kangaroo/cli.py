"""The ``kangaroo`` command: run a local gateway and check on it.

``kangaroo up`` starts ``kangaroo-gateway`` on this machine in the background
(its own session, log and pid file in the state folder), with a self-signed
TLS certificate for ``127.0.0.1`` / ``localhost`` and a random bearer token,
both made once and kept in the state folder. It waits until the gateway is
ready, then writes the client connection file so that ``kangaroo.Client()``
needs no arguments. ``kangaroo status`` checks the process and the API;
``kangaroo down`` stops the gateway (SIGTERM, then SIGKILL after a timeout).

State folder: ``--state-dir``, else ``$KANGAROO_STATE_DIR``, else
``$XDG_STATE_HOME/kangaroo``, else ``~/.local/state/kangaroo``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from . import __version__
from . import config as _config

__all__ = ["main", "state_dir", "find_binary"]

TENANT = "local"
DEFAULT_PORT = 8443


# ---------------------------------------------------------------------------
# locations


def state_dir(explicit: Optional[str] = None) -> Path:
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get("KANGAROO_STATE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base, "kangaroo").resolve()


class _Paths:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.cert = root / "tls" / "cert.pem"
        self.key = root / "tls" / "key.pem"
        self.tokens = root / "tokens"
        self.pid = root / "gateway.pid"
        self.log = root / "gateway.log"
        self.ready = root / "gateway.ready"
        self.instance = root / "instance.json"
        self.gateway_state = root / "gateway"


def _source_tree() -> Path:
    """The repository root when the package runs from its source tree."""
    return Path(__file__).resolve().parents[2]


def find_binary(name: str, explicit: Optional[str], env_var: str, build_subdir: str) -> Optional[str]:
    """``explicit``, then ``$<env_var>``, then a build folder (``$KANGAROO_BUILD_DIR``,
    ``build/`` of the source tree the package runs from, ``build/`` of the current
    folder, for a package installed into a virtual environment), then ``PATH``."""
    for candidate in (explicit, os.environ.get(env_var)):
        if candidate:
            return str(Path(candidate).expanduser().resolve())
    build = os.environ.get("KANGAROO_BUILD_DIR")
    build_dirs = [Path(build) if os.path.isabs(build) else _source_tree() / build] if build else []
    build_dirs += [_source_tree() / "build", Path.cwd() / "build"]
    for b in build_dirs:
        p = b / build_subdir / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return shutil.which(name)


# ---------------------------------------------------------------------------
# credentials


def _ensure_certificate(paths: _Paths) -> None:
    if paths.cert.is_file() and paths.key.is_file():
        return
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SystemExit("kangaroo up: the 'openssl' command is needed to make the gateway's TLS certificate "
                         "(Debian package openssl)")
    paths.cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    old = os.umask(0o077)
    try:
        r = subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(paths.key), "-out", str(paths.cert), "-days", "3650", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
             "-addext", "keyUsage=critical,digitalSignature,keyCertSign"],
            capture_output=True, text=True)
    finally:
        os.umask(old)
    if r.returncode != 0:
        raise SystemExit(f"kangaroo up: openssl failed to make a certificate:\n{r.stderr.strip()}")
    os.chmod(paths.key, 0o600)
    os.chmod(paths.cert, 0o644)


def _read_token(tokens: Path) -> Optional[str]:
    with contextlib.suppress(FileNotFoundError):
        for line in tokens.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                return line.split()[0]
    return None


def _ensure_token(paths: _Paths) -> str:
    token = _read_token(paths.tokens)
    if token:
        return token
    token = secrets.token_urlsafe(32)
    fd = os.open(paths.tokens, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# token tenant (kangaroo up)\n")
        f.write(f"{token} {TENANT}\n")
    return token


# ---------------------------------------------------------------------------
# process helpers


def _read_pid(paths: _Paths) -> Optional[int]:
    try:
        return int(paths.pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        # Reap it first when it is our own child (in-process use of `up` and `down`).
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_gateway(pid: int, instance: Dict[str, Any]) -> bool:
    """Guards against a recycled pid: the process must run the recorded binary."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc to ask: trust the pid file
    expected = instance.get("gateway_bin")
    # argv[1] covers a gateway started through an interpreter (a script with a shebang line).
    names = {os.path.basename(a.decode(errors="replace")) for a in argv[:2]}
    return not expected or os.path.basename(expected) in names


def _instance(paths: _Paths) -> Dict[str, Any]:
    try:
        return json.loads(paths.instance.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _running_pid(paths: _Paths) -> Optional[int]:
    pid = _read_pid(paths)
    if pid is None or not _alive(pid) or not _is_our_gateway(pid, _instance(paths)):
        return None
    return pid


def _log_tail(paths: _Paths, lines: int = 30) -> str:
    try:
        text = paths.log.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _probe(url: str, token: Optional[str], ca_cert: Optional[str], timeout: float = 5.0):
    """(health, info, error message): one quick look at the API."""
    from .client import Client
    from .errors import GatewayError

    try:
        c = Client(url, token, ca_cert, timeout=timeout, retries=1, backoff=0.1)
        try:
            return c.health(), c.info(), None
        finally:
            c.close()
    except (GatewayError, OSError, ValueError) as e:
        return None, None, f"{type(e).__name__}: {e}"


# ---------------------------------------------------------------------------
# commands


def cmd_up(args: argparse.Namespace) -> int:
    paths = _Paths(state_dir(args.state_dir))
    paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    pid = _running_pid(paths)
    if pid is not None:
        inst = _instance(paths)
        print(f"kangaroo: gateway already up at {inst.get('url', '?')} (pid {pid}); 'kangaroo down' stops it")
        if inst.get("url"):
            _config.write_client_config({"url": inst["url"], "token": _read_token(paths.tokens),
                                         "ca_cert": str(paths.cert)})
        return 0

    gateway = find_binary("kangaroo-gateway", args.gateway_bin, "KANGAROO_GATEWAY_BIN", "gateway")
    if not gateway or not os.access(gateway, os.X_OK):
        print("kangaroo up: kangaroo-gateway not found (give --gateway-bin, set KANGAROO_GATEWAY_BIN, build it "
              "with scripts/build.sh, or put it on PATH)", file=sys.stderr)
        return 1
    worker = find_binary("kangaroo-worker", args.worker_bin, "KANGAROO_WORKER_BIN", "worker")
    _ensure_certificate(paths)
    token = _ensure_token(paths)
    roots = [str(Path(r).expanduser().resolve()) for r in (args.data_root or [os.getcwd()])]
    for r in roots:
        if not os.path.isdir(r):
            print(f"kangaroo up: data root {r} is not a folder", file=sys.stderr)
            return 1
    paths.gateway_state.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileNotFoundError):
        paths.ready.unlink()

    cmd = [gateway, "--listen", f"127.0.0.1:{args.port}", "--cert", str(paths.cert), "--key", str(paths.key),
           "--tokens", str(paths.tokens), "--state-dir", str(paths.gateway_state), "--ready-file", str(paths.ready)]
    for r in roots:
        cmd += ["--data-root", r]
    if worker:
        cmd += ["--worker-bin", worker]
    for flag, value in (("--workers", args.workers), ("--queue", args.queue), ("--ranks", args.ranks),
                        ("--mem-cap", args.mem_cap), ("--max-body", args.max_body)):
        if value is not None:
            cmd += [flag, str(value)]

    with open(paths.log, "ab") as log:
        log.write(f"\n--- kangaroo up {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, cwd=str(paths.root))
    paths.pid.write_text(f"{proc.pid}\n")

    deadline = time.monotonic() + args.timeout
    url = None
    while time.monotonic() < deadline:
        if paths.ready.is_file():
            text = paths.ready.read_text().strip()
            if text:
                url = text.splitlines()[0].strip()
                break
        if proc.poll() is not None:
            paths.pid.unlink(missing_ok=True)
            print(f"kangaroo up: the gateway exited with status {proc.returncode} before it was ready; "
                  f"log {paths.log}:\n{_log_tail(paths)}", file=sys.stderr)
            return 1
        time.sleep(0.05)
    if url is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()
        paths.pid.unlink(missing_ok=True)
        print(f"kangaroo up: the gateway was not ready within {args.timeout:g} s; log {paths.log}:\n"
              f"{_log_tail(paths)}", file=sys.stderr)
        return 1

    paths.instance.write_text(json.dumps({"url": url, "pid": proc.pid, "gateway_bin": gateway,
                                          "worker_bin": worker, "data_roots": roots}, indent=2) + "\n")
    cfg = _config.write_client_config({"url": url, "token": token, "ca_cert": str(paths.cert)})
    print(url)
    print(f"kangaroo: gateway up (pid {proc.pid}), data roots {', '.join(roots)}; client settings in {cfg}",
          file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    paths = _Paths(state_dir(args.state_dir))
    pid = _running_pid(paths)
    inst = _instance(paths)
    if pid is None:
        print(f"kangaroo: no gateway running (state {paths.root})")
        return 1
    url = inst.get("url")
    health, info, err = _probe(url, _read_token(paths.tokens), str(paths.cert)) if url else (None, None, "no URL")
    if err is not None:
        print(f"kangaroo: gateway pid {pid} is running but {url} does not answer: {err}")
        return 1
    print(f"kangaroo: gateway up at {url} (pid {pid}): health {health.get('status')}, version {info.get('version')}, "
          f"workers {info.get('workers')}, world size {info.get('world_size')}, "
          f"data roots {', '.join(info.get('data_roots') or [])}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    paths = _Paths(state_dir(args.state_dir))
    pid = _running_pid(paths)
    if pid is None:
        paths.pid.unlink(missing_ok=True)
        print("kangaroo: no gateway running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)
        print(f"kangaroo: gateway pid {pid} did not stop within {args.timeout:g} s; killed")
    else:
        print(f"kangaroo: gateway pid {pid} stopped")
    paths.pid.unlink(missing_ok=True)
    paths.ready.unlink(missing_ok=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kangaroo", description="Run a local Kangaroo gateway and check on it.")
    p.add_argument("--version", action="version", version=f"kangaroo {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start a local gateway in the background and write the client settings")
    up.add_argument("--data-root", action="append", metavar="DIR",
                    help="folder the gateway may read datasets from (repeatable; default: the current folder)")
    up.add_argument("--workers", type=int, help="jobs run at once")
    up.add_argument("--queue", type=int, help="queued jobs accepted")
    up.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; "
                    "0 picks a free one)")
    up.add_argument("--ranks", type=int, help="worker ranks per job (local processes; default 1)")
    up.add_argument("--mem-cap", type=int, metavar="BYTES",
                    help="memory cap per rank of a job; chunks beyond it spill to the state folder")
    up.add_argument("--max-body", type=int, metavar="BYTES", help="largest request body accepted")
    up.add_argument("--gateway-bin", metavar="PATH", help="the kangaroo-gateway binary")
    up.add_argument("--worker-bin", metavar="PATH", help="the kangaroo-worker binary")
    up.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the gateway (default 30)")

    status = sub.add_parser("status", help="is the local gateway running and answering? (exit status 0 or 1)")
    down = sub.add_parser("down", help="stop the local gateway")
    down.add_argument("--timeout", type=float, default=10.0, help="seconds before SIGKILL (default 10)")
    for sp in (up, status, down):
        sp.add_argument("--state-dir", metavar="DIR", help="state folder (default: $KANGAROO_STATE_DIR, "
                        "$XDG_STATE_HOME/kangaroo or ~/.local/state/kangaroo)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"up": cmd_up, "status": cmd_status, "down": cmd_down}[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
