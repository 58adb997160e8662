"""The process boundary against hostile peers and damaged files (issue 19, S1-S4).

S1 names a remote sends back are checked with Windows' rules (ntpath) on any OS; S3 ssh options come
from an allowlist; S4 code is never run from a remote cache folder others can write (a real sshd on
127.0.0.1, scripts/loopback_sshd.py). The reliability items R1-R5 are in tests/test_reliability.py.
"""

from __future__ import annotations

import ntpath
import os
import posixpath
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from da3_blender.errors import BadInputError, DA3Error
from da3_blender.runtime.client import WorkerClient
from da3_blender.runtime.remote import RemoteJob
from da3_blender.runtime.ssh import RemoteSpec, check_ssh_options, package_archive
from da3_blender.runtime.transfer import JobFiles, local_path


WINDOWS_ESCAPES = ["C:/Windows/x.dll", "C:x.dll", "a:b", "a:b:$DATA", "sub/con.txt", "NUL", "lpt1.exr",
                   "COM3", "x.", "x ", "aux.tar.gz", "a<b", "a|b", "a?b", "a*b", 'a"b', "a\x01b"]


# -- S1: names from the remote, on a Windows client -------------------------------------------------
@pytest.mark.parametrize("name", WINDOWS_ESCAPES)
def test_windows_drive_stream_and_device_names_are_refused_on_any_os(name):
    for pathmod, base in ((ntpath, "C:\\Users\\me\\shot\\exports"), (posixpath, "/home/me/shot/exports")):
        with pytest.raises(BadInputError, match="portable|outside|backslash|'\\.\\.'"):
            local_path(base, name, pathmod)


def test_ordinary_export_names_land_inside_the_folder_on_windows_and_posix():
    base = "C:\\Users\\me\\shot\\exports"
    assert local_path(base, "exr/depth.0001.exr", ntpath) == "C:\\Users\\me\\shot\\exports\\exr\\depth.0001.exr"
    assert local_path("/srv/x", "colmap/sparse/0/cameras.txt", posixpath) == "/srv/x/colmap/sparse/0/cameras.txt"
    # what os.path.join would have made of the old names: outside the folder, or a stream of a file
    assert ntpath.join(base, "D:Windows", "x.dll") == "D:Windows\\x.dll"


def test_a_remote_listing_with_windows_names_writes_nothing(tmp_path):
    """The client refuses the whole listing before fetching: nothing lands anywhere."""
    for evil in ("exports/C:/Windows/x.dll", "exports/a:b", "exports/con.txt", "exports/x. "):
        fetched = []
        client = SimpleNamespace(remote=RemoteSpec("gpu-box"),
                                 _call=lambda kind, timeout, evil=evil, **f: {"files": [{"path": evil, "size": 1}]})
        job = RemoteJob(client, {"inputs": ["a.png"], "output": str(tmp_path / "r.npz")}, "job-1")
        job.download = lambda *a, **k: fetched.append(a)
        with pytest.raises(DA3Error, match="portable"):
            job.download_folder("exports", str(tmp_path / "ex"))
        assert fetched == []
    assert list(tmp_path.iterdir()) == []


def test_chunks_from_the_remote_are_capped_and_checked():
    """S2: a chunk's base64 is decoded only up to the chunk size, and truncated base64 is a protocol error."""
    import base64

    from da3_blender.runtime.protocol import CHUNK_SIZE
    from da3_blender.runtime.remote import decode_chunk

    assert decode_chunk(base64.b64encode(b"abc").decode()) == b"abc"
    for bad in ("QUJDR", "!!!!", None, 7, base64.b64encode(b"x" * (CHUNK_SIZE + 3)).decode()):
        with pytest.raises(DA3Error) as err:
            decode_chunk(bad)
        assert err.value.kind == "protocol"


# -- S3: ssh options -------------------------------------------------------------------------------
def test_ssh_options_come_from_an_allowlist():
    assert check_ssh_options(["connecttimeout=5", "ProxyJump=me@bastion:22", "Port=2222"]) == (
        "ConnectTimeout=5", "ProxyJump=me@bastion:22", "Port=2222")
    for bad in ("PKCS11Provider=/tmp/evil.so", "SecurityKeyProvider=/tmp/evil.so", "ControlPersist=yes",
                "ControlMaster=auto", "ControlPath=/tmp/x", "LocalForward=8080 localhost:80", "DynamicForward=1080",
                "RemoteForward=9000 localhost:22", "ForwardAgent=yes", "ForwardX11=yes", "ProxyCommand=nc %h %p",
                "LocalCommand=id", "PermitLocalCommand=yes", "KnownHostsCommand=id", "Include=/tmp/x",
                "ProxyJump=-oProxyCommand=id", "ProxyJump=a b", "Tunnel=yes", "IdentityAgent=/tmp/sock"):
        with pytest.raises(BadInputError, match="not accepted|not usable"):
            check_ssh_options([bad])
    with pytest.raises(BadInputError):
        RemoteSpec("gpu", ssh_options=("PKCS11Provider=/tmp/evil.so",))


# -- S4: a remote cache folder others can write is never run from -----------------------------------
def _plant_package(cache: Path, marker: Path) -> Path:
    """What another user of the GPU box could leave in a shared cache: pkg/<our digest> with a trojan."""
    digest = package_archive()[0]
    pkg = cache / "pkg" / digest
    (pkg / "da3_blender").mkdir(parents=True)
    trojan = f"open({str(marker)!r}, 'w').write('ran')\n"
    for name in ("__init__.py", "worker.py"):
        (pkg / "da3_blender" / name).write_text(trojan)
    return pkg


@pytest.mark.slow
def test_code_is_not_run_from_a_remote_cache_others_can_write(sshd, tmp_path):
    marker = tmp_path / "trojan-ran"
    cache = tmp_path / "cache"
    pkg = _plant_package(cache, marker)
    spec = sshd.spec(cache_dir=str(cache), python=sys.executable)
    for loose in (cache, cache / "pkg", pkg):  # any folder on the way, writable by others
        for folder in (cache, cache / "pkg", pkg):
            os.chmod(folder, 0o700)
        os.chmod(loose, 0o777)
        client = WorkerClient(remote=spec)
        try:
            with pytest.raises(DA3Error, match="not private") as err:
                client.hello(timeout=60)
            assert str(cache) in str(err.value) and "\n" not in str(err.value)
        finally:
            client.kill()
        assert not marker.exists(), f"code ran from {pkg} while {loose} was writable by others"
    # no package yet, in a cache others can write: the upload refuses too (nothing is unpacked there)
    fresh = tmp_path / "fresh"
    fresh.mkdir(mode=0o777)
    os.chmod(fresh, 0o777)
    client = WorkerClient(remote=sshd.spec(cache_dir=str(fresh), python=sys.executable))
    try:
        with pytest.raises(DA3Error, match="not private"):
            client.hello(timeout=60)
    finally:
        client.kill()
    assert not (fresh / "pkg").exists() or not any((fresh / "pkg").iterdir())


def test_a_jobs_folder_others_can_write_is_refused(tmp_path):
    if os.name != "posix":
        pytest.skip("owner and mode checks are POSIX")
    root = tmp_path / "jobs"
    root.mkdir()
    os.chmod(root, 0o777)
    with pytest.raises(BadInputError, match="not private"):
        JobFiles(root)
    os.chmod(root, 0o700)
    assert JobFiles(root).root == str(root.resolve())
