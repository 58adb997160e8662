"""The DA3 worker on another machine, over SSH: the same JSON-lines protocol on ssh's stdin/stdout.

OpenSSH carries the worker: the user's keys, agent, jump hosts and ``~/.ssh/config`` work as for
``ssh HOST``, and nothing listens on a port. :class:`RemoteSpec` says where (``host`` is an
``~/.ssh/config`` alias or ``user@host``), with which Python, and where the remote keeps its
files (``cache_dir``: the DA3 package, job folders, uploaded local models). ``WorkerClient(remote=
RemoteSpec(...))`` then runs every job there; :mod:`.remote` moves each job's files.

How the remote finds the code: the client uploads the ``da3_blender`` package (pure Python, ~100 kB
compressed) once per version into ``cache_dir/pkg/<digest>`` and starts
``env PYTHONPATH=... <python> -m da3_blender.worker --jobs-dir cache_dir/jobs`` in that folder. So the
GPU box needs only a Python with the pinned dependencies (:func:`remote_setup_command` prints the one
command; ``runtime.envs.create_remote_environment`` runs the same over SSH), never a matching checkout; client
and worker always run the same code, and nothing else on the remote named ``da3_blender`` shadows it.

Security: the ssh command is an argument list (no local shell); the host, Python, folders and ssh
options are validated; the remote command line is built only from shell-quoted pieces (ssh hands
it to the remote login shell, which must be POSIX: sh, bash, dash or zsh). ``-o`` options come from an
allowlist (:data:`ALLOWED_OPTIONS`; ProxyCommand, PKCS11Provider, ... belong in ``~/.ssh/config``).
Standard library only.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shlex
import subprocess
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInputError, DA3Error
from ..options import DEFAULT_REMOTE_CACHE_DIR as DEFAULT_CACHE_DIR
from ..options import DEFAULT_REMOTE_PYTHON as DEFAULT_PYTHON
from .protocol import UNTRUSTED_MARKER, UNTRUSTED_STATUS
from .requirements import DEPENDENCIES, TORCH_INDEX, requirement_name
from .transfer import map_prefix

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # da3_blender/
CONNECT_TIMEOUT = 15  # seconds for ssh to reach the host
INSTALL_TIMEOUT = 120.0  # seconds to upload the package
MISSING_PACKAGE_MARKER = "da3-remote: package not installed"
MISSING_PACKAGE_STATUS = 3  # the worker command's exit status when this version is not there yet
# POSIX sh: is "$1" a real folder (no link), owned by this user and writable by no one else?
_OWN_FUNCTION = ('da3_own() { [ -d "$1" ] && [ ! -L "$1" ] || return 1; set -- $(ls -ldn -- "$1"); '
                 'case "$1" in ?????w*|????????w*) return 1;; esac; [ "$3" = "$(id -u)" ]; }')

_HOST_RE = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}@)?(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*)$")
_OPTION_RE = re.compile(r"^([A-Za-z][A-Za-z0-9]*)[= ](.+)$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# ``-o`` options accepted from the preferences (an allowlist: anything else, e.g. ProxyCommand,
# PKCS11Provider or SecurityKeyProvider (both load a local library), ControlMaster/ControlPersist or
# forwarding, belongs in ~/.ssh/config, where the user wrote it themselves)
ALLOWED_OPTIONS = {o.lower(): o for o in (
    "AddressFamily", "BatchMode", "BindAddress", "BindInterface", "CASignatureAlgorithms", "CertificateFile",
    "CheckHostIP", "Ciphers", "Compression", "ConnectionAttempts", "ConnectTimeout", "FingerprintHash",
    "GlobalKnownHostsFile", "HashKnownHosts", "HostKeyAlgorithms", "HostKeyAlias", "HostName", "IdentitiesOnly",
    "IdentityFile", "IPQoS", "KbdInteractiveAuthentication", "KexAlgorithms", "LogLevel", "MACs",
    "NumberOfPasswordPrompts", "PasswordAuthentication", "Port", "PreferredAuthentications", "ProxyJump",
    "PubkeyAcceptedAlgorithms", "PubkeyAuthentication", "RekeyLimit", "RequiredRSASize", "ServerAliveCountMax",
    "ServerAliveInterval", "StrictHostKeyChecking", "TCPKeepAlive", "UpdateHostKeys", "User", "UserKnownHostsFile",
    "VerifyHostKeyDNS")}
# the client's worker environment variables that also apply on the remote (HF_HOME & co name local folders)
REMOTE_ENV = ("HF_ENDPOINT", "HF_HUB_OFFLINE", "DA3_WORKER_LOG")


def check_host(host: Any) -> str:
    """An ``~/.ssh/config`` alias, ``host`` or ``user@host`` (IPv4/IPv6 literal allowed); one-line error otherwise."""
    if not isinstance(host, str) or not host.strip():
        raise BadInputError("no remote host given: enter an ~/.ssh/config alias or user@host")
    host = host.strip()
    if host.startswith("-") or not _HOST_RE.match(host):
        raise BadInputError(f"remote host {host!r:.80} is not a host name: use an ~/.ssh/config alias or user@host "
                            "(letters, digits, '.', '-', '_'; no spaces, no leading '-')")
    return host


def _check_text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadInputError(f"no {what} given")
    value = value.strip()
    if value.startswith("-") or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise BadInputError(f"{what} {value!r:.80} is not usable: no control characters, no leading '-'")
    return value


def check_ssh_options(options) -> tuple[str, ...]:
    """``Key=Value`` strings for ``ssh -o``: only :data:`ALLOWED_OPTIONS` (none runs a command or loads code)."""
    checked = []
    for opt in options or ():
        text = _check_text(opt, "ssh option")
        m = _OPTION_RE.match(text)
        if not m:
            raise BadInputError(f"ssh option {text!r:.80} must look like Key=Value (e.g. ConnectTimeout=10)")
        key, value = m.group(1), m.group(2).strip()
        if key.lower() not in ALLOWED_OPTIONS:
            raise BadInputError(f"ssh option {key} is not accepted here (only connection and authentication "
                                "options such as ConnectTimeout, Port, User, IdentityFile, ProxyJump): put it in "
                                "~/.ssh/config for this host instead")
        if value.startswith("-") or (key.lower() == "proxyjump" and any(c in value for c in " \t'\"")):
            raise BadInputError(f"ssh option {key}={value!r:.80} is not usable (no leading '-', no spaces or quotes)")
        checked.append(f"{ALLOWED_OPTIONS[key.lower()]}={value}")
    return tuple(checked)


def sh_path(path: str) -> str:
    """A remote path as one POSIX shell word: quoted, with a leading ``~`` as ``$HOME``."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/")] + [p.strip("/") for p in parts])


@dataclass(frozen=True)
class RemoteSpec:
    """Where and how to run the worker over SSH.

    ``path_map``: pairs (local prefix, remote prefix) for storage both machines see; inputs, output
    and exports under a mapped prefix are not copied. ``ssh_config``: a config file for ``ssh -F``
    (tests); ``identity``: a key for ``-i``; ``ssh``: the client program.
    """

    host: str
    python: str = DEFAULT_PYTHON
    cache_dir: str = DEFAULT_CACHE_DIR
    ssh_options: tuple[str, ...] = ()
    port: int | None = None
    identity: str | None = None
    ssh_config: str | None = None
    path_map: tuple[tuple[str, str], ...] = ()
    ssh: str = "ssh"
    connect_timeout: int = CONNECT_TIMEOUT
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "host", check_host(self.host))
        object.__setattr__(self, "python", _check_text(self.python or DEFAULT_PYTHON, "remote Python"))
        cache = _check_text(self.cache_dir or DEFAULT_CACHE_DIR, "remote cache folder")
        if not cache.startswith(("/", "~")):
            cache = "~/" + cache  # relative to the remote home, as ssh's own paths
        object.__setattr__(self, "cache_dir", cache)
        object.__setattr__(self, "ssh_options", check_ssh_options(self.ssh_options))
        if self.port is not None and (isinstance(self.port, bool) or not isinstance(self.port, int)
                                      or not 0 < self.port < 65536):
            raise BadInputError(f"ssh port must be 1-65535, got {self.port!r}")
        for name in ("identity", "ssh_config"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _check_text(os.path.expanduser(value), f"ssh {name} file"))
        pairs = []
        for pair in self.path_map or ():
            if len(pair) != 2:
                raise BadInputError("each path map entry is (local folder, remote folder)")
            local, remote = (_check_text(p, "path map folder") for p in pair)
            if not remote.startswith(("/", "~")):
                raise BadInputError(f"path map: the remote folder {remote} must be absolute")
            pairs.append((os.path.abspath(os.path.expanduser(local)), remote.rstrip("/") or "/"))
        object.__setattr__(self, "path_map", tuple(pairs))
        for key in self.env:
            if not _ENV_RE.match(key):
                raise BadInputError(f"environment variable name {key!r:.40} is not valid")

    @property
    def label(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    # -- command lines ---------------------------------------------------------------------------
    def ssh_argv(self, remote_command: str) -> list[str]:
        """``ssh -T ... -- HOST COMMAND``: an argument list, never a local shell string."""
        argv = [self.ssh, "-T", "-x", "-a", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(self.connect_timeout)}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        if self.ssh_config:
            argv += ["-F", self.ssh_config]
        if self.port is not None:
            argv += ["-p", str(self.port)]
        if self.identity:
            argv += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        for opt in self.ssh_options:
            argv += ["-o", opt]
        return argv + ["--", self.host, remote_command]

    def package_dir(self, digest: str) -> str:
        return _join(self.cache_dir, "pkg", digest)

    def jobs_dir(self) -> str:
        return _join(self.cache_dir, "jobs")

    def _trusted(self, *folders: str) -> str:
        """Shell: exit 4 (with :data:`UNTRUSTED_MARKER`) unless every folder is private (see _OWN_FUNCTION)."""
        checks = " && ".join(f"da3_own {f}" for f in folders)
        return (f"{_OWN_FUNCTION}; {checks} || {{ echo {shlex.quote(UNTRUSTED_MARKER)} >&2; "
                f"exit {UNTRUSTED_STATUS}; }}")

    def worker_command(self, digest: str) -> str:
        """The remote command line: exit status 3 if the package folder is not there yet, 4 if it (or the
        cache folder) is not private (code is never run from a folder others can write), else in it
        ``env PYTHONPATH=<package> <python> -u -m da3_blender.worker --jobs-dir ...``."""
        package = sh_path(self.package_dir(digest))
        trusted = self._trusted(sh_path(self.cache_dir), sh_path(_join(self.cache_dir, "pkg")), package)
        words = [f"[ -d {package} ] || {{ echo {shlex.quote(MISSING_PACKAGE_MARKER)} >&2; "
                 f"exit {MISSING_PACKAGE_STATUS}; }}; {trusted}; cd {package} && exec", "env", "PYTHONPATH=" + package,
                 "PYTHONUNBUFFERED=1", "PYTHONIOENCODING=utf-8"]
        words += [f"{k}={shlex.quote(str(v))}" for k, v in sorted(self.env.items())]
        words += [sh_path(self.python), "-u", "-m", "da3_blender.worker", "--jobs-dir", sh_path(self.jobs_dir())]
        for _local, remote in self.path_map:
            words += ["--allow", sh_path(remote)]
        return " ".join(words)

    def worker_argv(self) -> list[str]:
        return self.ssh_argv(self.worker_command(package_archive()[0]))

    def install_command(self, digest: str) -> str:
        """Unpack the package tarball from stdin into ``pkg/<digest>`` (atomically: a temp folder, then mv)."""
        parent, final = sh_path(_join(self.cache_dir, "pkg")), sh_path(self.package_dir(digest))
        return (f"umask 077 && mkdir -p {parent} && {{ {self._trusted(sh_path(self.cache_dir), parent)}; }} && "
                f"t=$(mktemp -d {parent}/.up.XXXXXX) && tar -xzf - -C \"$t\" && "
                f"if [ -d {final} ]; then rm -rf \"$t\"; {self._trusted(final)}; else mv \"$t\" {final}; fi")

    def fetch_command(self, remote_path: str, local_path: str, folder: bool = False) -> str:
        """An ``scp`` command line (for a terminal: quoted) that copies ``remote_path`` here, with this
        spec's port, key, config and options."""
        argv = ["scp", "-p"] + (["-r"] if folder else [])
        if self.ssh_config:
            argv += ["-F", self.ssh_config]
        if self.port is not None:
            argv += ["-P", str(self.port)]
        if self.identity:
            argv += ["-i", self.identity]
        for opt in self.ssh_options:
            argv += ["-o", opt]
        source = f"{self.host}:{remote_path.rstrip('/')}/*" if folder else f"{self.host}:{remote_path}"
        command = " ".join(shlex.quote(a) for a in argv + ["--", source, local_path])
        return f"mkdir -p {shlex.quote(local_path)} && {command}" if folder else command

    # -- paths -------------------------------------------------------------------------------------
    def map_path(self, local: str) -> str | None:
        """The remote name of a local path under a path-map prefix, else None."""
        return map_prefix(os.path.abspath(os.path.expanduser(local)), self.path_map, os.sep, "/")


# -- the package upload --------------------------------------------------------------------------
_archive_lock = threading.Lock()
_archive: tuple[str, bytes] | None = None


def package_files() -> list[Path]:
    return sorted(p for p in PACKAGE_DIR.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo"))


def package_archive() -> tuple[str, bytes]:
    """(digest, tar.gz bytes) of the ``da3_blender`` package as it is on this machine (cached)."""
    global _archive
    with _archive_lock:
        if _archive is None:
            h = hashlib.sha256()
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
                for path in package_files():
                    rel = "da3_blender/" + path.relative_to(PACKAGE_DIR).as_posix()
                    data = path.read_bytes()
                    h.update(rel.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
                    info = tarfile.TarInfo(rel)
                    info.size, info.mode, info.mtime = len(data), 0o644, 0
                    tar.addfile(info, io.BytesIO(data))
            _archive = (h.hexdigest()[:20], buf.getvalue())
        return _archive


def install_package(spec: RemoteSpec, timeout: float = INSTALL_TIMEOUT) -> str:
    """Upload this machine's ``da3_blender`` to ``spec``'s cache folder; returns the digest."""
    digest, data = package_archive()
    argv = spec.ssh_argv(spec.install_command(digest))
    try:
        proc = subprocess.run(argv, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                              **no_window())
    except FileNotFoundError:
        raise ssh_missing(spec) from None
    except subprocess.TimeoutExpired:
        raise DA3Error(f"uploading DA3 to {spec.label} took over {timeout:.0f} s: check the connection",
                       kind="connection") from None
    if proc.returncode != 0:
        found = death_message(spec, proc.returncode, proc.stderr.decode("utf-8", "replace").splitlines())
        if found is not None and found[0] == "bad_input":  # not private: say so, not "not writable"
            raise DA3Error(found[1], kind=found[0])
        last = last_line(proc.stderr.decode("utf-8", "replace"))
        raise DA3Error(f"could not install DA3 in {spec.cache_dir} on {spec.label} (exit status {proc.returncode}: "
                       f"{last}): check the remote cache folder is writable", kind="connection")
    return digest


def ssh_missing(spec: RemoteSpec) -> DA3Error:
    return DA3Error(f"the ssh program ({spec.ssh}) was not found: install the OpenSSH client", kind="missing_dependency")


def no_window() -> dict[str, Any]:
    return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)} if os.name == "nt" else {}


def last_line(output) -> str:
    """The last non-blank line of a process's output (text, or a sequence of lines: a stderr tail), for
    one-line errors; "no output" if there is none. The one place that picks it."""
    lines = output.splitlines() if isinstance(output, str) else list(output)
    lines = [line.strip() for line in lines if line.strip()]
    return lines[-1] if lines else "no output"


def death_message(spec: RemoteSpec, code: int | None, lines: list[str]) -> tuple[str, str] | None:
    """(kind, one line) for a remote worker's ssh that ended with ``code``; None: not an SSH matter."""
    last = last_line(lines)
    if code == UNTRUSTED_STATUS and any(UNTRUSTED_MARKER in line for line in lines):
        return "bad_input", (f"the remote cache folder {spec.cache_dir} on {spec.label} is not private (another user "
                             "owns it or can write to it): DA3 runs no code from it; remove it, or choose a remote "
                             "cache folder of your own that only you can write (chmod 700)")
    if code == 127 or (code is not None and code != 0 and "No such file or directory" in last and spec.python in last):
        return "missing_dependency", (f"the remote Python {spec.python} was not found on {spec.label} ({last}): "
                                      "install Python 3.10+ with DA3's packages there (README: remote worker) or "
                                      "set the remote Python path")
    if code == 255:
        return "connection", (f"SSH to {spec.label} failed ({last}): check the host name, that 'ssh {spec.host}' "
                              "logs in without a password prompt (keys or agent), and the network")
    if code is not None and code < 0:
        return "connection", (f"the connection to {spec.label} was lost ({last}); run the job again (it reconnects)")
    return None


# -- the setup command for the GPU box -------------------------------------------------------------
def remote_setup_command(venv: str = "~/da3-env", torch_variant: str = "cu128") -> str:
    """The one command that prepares a GPU box: a venv with DA3's pinned packages (torch from its index;
    the pins' markers let that box's pip pick the numpy for its Python)."""
    torch = [r for r in DEPENDENCIES if requirement_name(r) == "torch"]
    rest = [shlex.quote(r) for r in DEPENDENCIES if requirement_name(r) != "torch"]
    pip = f"{venv}/bin/pip install"
    return (f"python3 -m venv {venv} && {pip} {' '.join(torch)} --index-url {TORCH_INDEX.format(variant=torch_variant)}"
            f" && {pip} {' '.join(rest)}")
