"""A throwaway OpenSSH server on 127.0.0.1 for the remote-worker tests and benchmark.

Fresh host and user keys in a temporary folder, only this user, keys only, no forwarding, listening on
loopback only, on a free port. ``with LoopbackSSHD(folder) as sshd: spec = sshd.spec(cache_dir=...)``
gives a :class:`da3_blender.remote.RemoteSpec` that reaches it (own known_hosts, no ~/.ssh/config).
Needs ``sshd``, ``ssh`` and ``ssh-keygen`` (Debian: ``apt-get install openssh-server``).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def find_sshd() -> str | None:
    found = shutil.which("sshd") or next((p for p in SSHD_CANDIDATES if os.path.isfile(p)), None)
    return found if found and shutil.which("ssh") and shutil.which("ssh-keygen") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackSSHD:
    def __init__(self, folder: str | os.PathLike, timeout: float = 15.0):
        self.dir = Path(folder)
        self.timeout = timeout
        self.port = free_port()
        self.key = str(self.dir / "user_key")
        self.user = getpass.getuser()
        self.proc: subprocess.Popen | None = None

    def start(self) -> LoopbackSSHD:
        sshd = find_sshd()
        if sshd is None:
            raise FileNotFoundError("OpenSSH server/client not found (Debian: apt-get install openssh-server)")
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        for name in ("host_key", "user_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True,
                           stdin=subprocess.DEVNULL)
        (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
        os.chmod(d / "authorized_keys", 0o600)
        (d / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\nAllowUsers {self.user}\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nAllowTcpForwarding no\n"
            "X11Forwarding no\nPermitTTY no\nLogLevel ERROR\n"
            "Subsystem sftp internal-sftp\n")  # scp (the fetch command a kept remote result names) uses SFTP
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        self._log = open(d / "sshd.log", "wb")
        self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(d / "sshd_config")], stdout=self._log,
                                     stderr=self._log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"sshd did not start: {(d / 'sshd.log').read_text()[-500:]}") from None
                time.sleep(0.1)

    def spec(self, **kw):
        """A RemoteSpec for this server (``port=`` may name another, e.g. a closed one)."""
        from da3_blender.runtime.ssh import RemoteSpec

        options = (f"UserKnownHostsFile={self.dir / 'known_hosts'}", "StrictHostKeyChecking=accept-new")
        return RemoteSpec(f"{self.user}@127.0.0.1", port=kw.pop("port", self.port), identity=self.key,
                          ssh_config="/dev/null", ssh_options=options + tuple(kw.pop("ssh_options", ())), **kw)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None) is not None:
            self._log.close()

    def __enter__(self) -> LoopbackSSHD:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
