# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Flattening judged by umoci: an image whose layers replace files, white out files and directories, hide a directory
(opaque), hold symlinks, hard links, setuid and non-root files, /dev entries and long paths is pushed to the test bed's
token registry; the module writes its enroot .sqsh; ``skopeo copy`` + ``umoci unpack`` of the same image is the
reference rootfs. The extracted .sqsh must match it entry for entry, apart from what enroot itself changes."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration._layers import flatten_layers
from tests.testbed._blobs import image_config, image_manifest
from tests.testbed._push import Pusher

REPOSITORY = "nvidia/flatten-test"
TAG = "1"
REF = f"{REPOSITORY}:{TAG}"
SQSH = "nvidia+flatten-test+1.sqsh"
ENROOT_FILES = {"etc/rc", "etc/rc.local", "etc/environment", "etc/fstab"}
# What apptainer's build adds to the image's root (its base environment): directories where the image has none,
# symlinks into /.singularity.d, and empty files for the host's name resolution.
APPTAINER_DIRS = ("dev", "proc", "root", "var", "var/tmp", "tmp", "etc", "sys", "home")
APPTAINER_LINKS = {
    "singularity": ".singularity.d/runscript",
    ".run": ".singularity.d/actions/run",
    ".exec": ".singularity.d/actions/exec",
    ".test": ".singularity.d/actions/test",
    ".shell": ".singularity.d/actions/shell",
    "environment": ".singularity.d/env/90-environment.sh",
}
APPTAINER_FILES = ("etc/hosts", "etc/resolv.conf")


@dataclass(frozen=True)
class Entry:
    """What is compared of one path: type, permission bits, owner, and size, link target and content hash."""

    kind: str
    mode: int
    uid: int
    gid: int
    size: int = 0
    target: str = ""
    sha256: str = ""
    rdev: tuple[int, int] = (0, 0)

    def __str__(self) -> str:
        parts = [self.kind, f"mode {self.mode:04o}", f"owner {self.uid}:{self.gid}"]
        parts += [f"{self.size} bytes", f"sha256 {self.sha256[:12]}"] if self.kind == "file" else []
        parts += [f"-> {self.target}"] if self.kind == "symlink" else []
        parts += [f"device {self.rdev[0]},{self.rdev[1]}"] if self.kind in ("char", "block") else []
        return ", ".join(parts)


def entry(path: Path) -> tuple[Entry, tuple[int, int], int]:
    """The Entry of a path (never followed), its inode and its link count."""
    st = os.lstat(path)
    fmt = stat.S_IFMT(st.st_mode)
    kind = {
        stat.S_IFDIR: "dir",
        stat.S_IFREG: "file",
        stat.S_IFLNK: "symlink",
        stat.S_IFCHR: "char",
        stat.S_IFBLK: "block",
        stat.S_IFIFO: "fifo",
        stat.S_IFSOCK: "socket",
    }[fmt]
    size = st.st_size if kind == "file" else 0
    target = os.readlink(path) if kind == "symlink" else ""
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if kind == "file" else ""
    rdev = (os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in ("char", "block") else (0, 0)
    mode = 0 if kind == "symlink" else stat.S_IMODE(st.st_mode)
    return Entry(kind, mode, st.st_uid, st.st_gid, size, target, digest, rdev), (st.st_dev, st.st_ino), st.st_nlink


@dataclass
class Tree:
    """Every path below a root directory ("" is the root) and the groups of paths that are one inode."""

    entries: dict[str, Entry]
    links: set[frozenset[str]]

    @classmethod
    def read(cls, root: Path) -> Tree:
        entries, inodes = {"": entry(root)[0]}, {}
        for directory, dirs, files in os.walk(root):
            for name in dirs + files:
                path = Path(directory) / name
                rel = str(path.relative_to(root))
                found, inode, nlink = entry(path)
                entries[rel] = found
                if found.kind != "dir" and nlink > 1:
                    inodes.setdefault(inode, set()).add(rel)
        return cls(entries, {frozenset(group) for group in inodes.values()})

    def without(self, drop: Any) -> Tree:
        """The tree without the paths `drop(path)` is true for (hard link groups shrink with them)."""
        links = {frozenset(p for p in group if not drop(p)) for group in self.links}
        return Tree({p: e for p, e in self.entries.items() if not drop(p)}, {g for g in links if len(g) > 1})


def fixperms(path: str, found: Entry) -> Entry:
    """The mode enroot's common::fixperms leaves: u+r on everything, u+x on directories and on files that anyone may
    execute, u+w on directories at most 5 levels below the root."""
    if found.kind == "symlink":
        return found
    mode = found.mode | stat.S_IRUSR
    if found.kind == "dir" or mode & 0o111:
        mode |= stat.S_IXUSR
    if found.kind == "dir" and (path.count("/") + 1 if path else 0) <= 5:
        mode |= stat.S_IWUSR
    return Entry(found.kind, mode, found.uid, found.gid, found.size, found.target, found.sha256, found.rdev)


def as_root(found: Entry) -> Entry:
    """What -all-root makes of an entry: root's, without the setuid or setgid bit it had for another user or group."""
    mode = found.mode
    if found.kind == "file":
        mode &= ~((stat.S_ISUID if found.uid else 0) | (stat.S_ISGID if found.gid else 0))
    return Entry(found.kind, mode, 0, 0, found.size, found.target, found.sha256, found.rdev)


def in_dev(path: str) -> bool:
    return path.startswith("dev/")


def run(*argv: str) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr}{proc.stdout}"
    return proc.stdout


def recorded(facts: Path, testbed: Any, path: Path) -> dict[str, Any]:
    """The facts file's record of the one file written for the image."""
    (record,) = json.loads(facts.read_text())["images"][f"{testbed.source_registry_host}/{REF}"][
        "destinations"
    ].values()
    assert record["path"] == str(path) and record["size"] == path.stat().st_size
    assert record["sha256"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return record


def differences(ours: Tree, reference: Tree) -> list[str]:
    """What differs, one line a path, for an assertion message a person can read."""
    lines = [f"missing {p}: {reference.entries[p]}" for p in sorted(reference.entries.keys() - ours.entries.keys())]
    lines += [f"extra {p}: {ours.entries[p]}" for p in sorted(ours.entries.keys() - reference.entries.keys())]
    lines += [
        f"{p}: {ours.entries[p]} != umoci's {reference.entries[p]}"
        for p in sorted(ours.entries.keys() & reference.entries.keys())
        if ours.entries[p] != reference.entries[p]
    ]
    if ours.links != reference.links:
        lines.append(f"hard links {sorted(map(sorted, ours.links))} != umoci's {sorted(map(sorted, reference.links))}")
    return lines


@pytest.fixture(scope="module")
def pushed(testbed: Any) -> str:
    """The flattening image in the token registry, as NGC would serve it; returns its manifest digest."""
    pusher = Pusher(testbed.source_registry_url, "$oauthtoken", testbed.api_key)
    layers = flatten_layers()
    blobs = [pusher.upload_bytes(REPOSITORY, layer.blob) for layer in layers]
    config = pusher.upload_bytes(
        REPOSITORY,
        image_config(
            "amd64",
            "2024-05-01T00:00:00Z",
            [layer.diff_id for layer in layers],
            ["base", "middle", "top"],
            {"com.nvidia.testbed.image": REF},
        ),
    )
    media_type, manifest = image_manifest(True, config, blobs)
    return pusher.put_manifest(REPOSITORY, TAG, media_type, manifest)


@pytest.fixture(scope="module")
def umoci_rootfs(pushed: str, testbed: Any, testbed_authfile: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: skopeo copies the image into an OCI layout (credentials from the auth file), umoci unpacks it."""
    base = tmp_path_factory.mktemp("umoci")
    run(
        "skopeo",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--authfile",
        str(testbed_authfile),
        f"docker://{testbed.source_registry_host}/{REPOSITORY}@{pushed}",
        f"oci:{base / 'layout'}:{TAG}",
    )
    run(
        "umoci",
        "unpack",
        *([] if os.geteuid() == 0 else ["--rootless"]),
        "--image",
        f"{base / 'layout'}:{TAG}",
        str(base / "bundle"),
    )
    return base / "bundle" / "rootfs"


@pytest.fixture(scope="module")
def enroot(pushed: str, ansible: Any, testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The module writes the .sqsh from the registry; unsquashfs extracts it."""
    base = tmp_path_factory.mktemp("flatten-enroot")
    result = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "images": [REF],
            "facts_file": str(base / "mirror.fact"),
            "enroot": {"dir": str(base / "sqsh")},
        },
        api_key=testbed.api_key,
    )
    assert result.rc == 0, result.stdout
    sqsh = base / "sqsh" / SQSH
    assert recorded(base / "mirror.fact", testbed, sqsh)["digest"] == pushed
    run("unsquashfs", "-no-progress", "-d", str(base / "rootfs"), str(sqsh))
    return {"result": result, "sqsh": sqsh, "rootfs": base / "rootfs"}


@pytest.fixture(scope="module")
def apptainer(pushed: str, ansible: Any, testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The module writes the SIF from the registry; siftool dumps its system partition, unsquashfs extracts that."""
    base = tmp_path_factory.mktemp("flatten-apptainer")
    result = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "images": [REF],
            "facts_file": str(base / "mirror.fact"),
            "apptainer": {"dir": str(base / "sif"), "layout": "flat"},
        },
        api_key=testbed.api_key,
    )
    assert result.rc == 0, result.stdout
    sif = base / "sif" / f"{REPOSITORY.rsplit('/', 1)[1]}_{TAG}.sif"  # the flat layout: apptainer pull's name
    assert recorded(base / "mirror.fact", testbed, sif)["digest"] == pushed
    listed = run("siftool", "list", str(sif))
    partitions = [line.split("|")[0].strip() for line in listed.splitlines() if "|FS (Squashfs/" in line]
    assert len(partitions) == 1, listed
    with open(base / "partition.sqsh", "wb") as out:
        subprocess.run(["siftool", "dump", partitions[0], str(sif)], stdout=out, check=True)
    run("unsquashfs", "-no-progress", "-d", str(base / "rootfs"), str(base / "partition.sqsh"))
    return {
        "result": result,
        "listed": listed,
        "header": run("siftool", "header", str(sif)),
        "partition": base / "partition.sqsh",
        "rootfs": base / "rootfs",
    }


def test_the_image_exercises_flattening(umoci_rootfs: Path) -> None:
    """The reference itself shows what the layers do, so that a match below means something."""
    reference = Tree.read(umoci_rootfs)
    entries = reference.entries
    assert (
        not {"gone-file.txt", "gone-dir", "opaque/old.txt", "opaque/old-sub", "data/short-lived.txt"} & entries.keys()
    )
    assert {
        "opaque/new-sub/d.txt",
        "sbin/init",
        "mixed/inside.txt",
        "real-target/under-target.txt",
        "was-file/child",
    } <= entries.keys()
    assert (umoci_rootfs / "opaque/kept-name.txt").read_text() == "new content of the opaque layer\n"
    assert entries["was-dir"].kind == "file" and entries["type-changes"].kind == "symlink"
    assert entries["dev/null"].kind == "char" or os.geteuid() != 0
    assert any(e.mode & stat.S_ISUID for e in entries.values()) and any(e.uid == 1000 for e in entries.values())
    assert entries["etc/escape"].target.startswith("../../") and entries["bin/sh"].target.startswith("/")
    assert max(len(p) for p in entries) > 255 and len(reference.links) >= 2
    assert (umoci_rootfs / "replaced.txt").read_text() == "version 3\n"


def test_the_sqsh_is_the_image_flattened_as_enroot_does(enroot: dict[str, Any], umoci_rootfs: Path) -> None:
    assert enroot["result"].result["changed"] is True
    ours = Tree.read(enroot["rootfs"])
    reference = Tree.read(umoci_rootfs)
    assert ENROOT_FILES <= ours.entries.keys() and not ENROOT_FILES & reference.entries.keys()
    assert all((e.uid, e.gid) == (0, 0) for e in ours.entries.values()), "enroot's images are owned by root (-all-root)"
    assert ours.entries["dev"].kind == "dir"
    assert not [p for p in ours.entries if in_dev(p)], "the entries under /dev are left out"
    assert ours.entries["usr/bin/su-like"].mode & stat.S_ISUID, "a setuid file of root's stays setuid"
    assert not ours.entries["home/user/setuid-user"].mode & stat.S_ISUID, (
        "a file of uid 1000 does not become setuid root"
    )
    assert not ours.entries["usr/bin/wall-like"].mode & stat.S_ISGID, "a file of gid 5 does not become setgid root"
    (image,) = enroot["result"].result["images"]
    assert "dropped the setuid/setgid bit of 2 file(s)" in image["note"], image
    assert "/usr/bin/wall-like" in image["note"] and "/home/user/setuid-user" in image["note"], image
    expected = Tree({p: as_root(fixperms(p, e)) for p, e in reference.entries.items()}, reference.links).without(in_dev)
    problems = differences(ours.without(lambda p: p in ENROOT_FILES), expected)
    assert not problems, "\n".join(problems)


def test_the_files_keep_their_times(enroot: dict[str, Any], umoci_rootfs: Path) -> None:
    """Files and symlinks carry the time of the layer that wrote them (directories are not compared: enroot gives them
    the time of the topmost layer that has them, umoci the time its unpacking left)."""
    for path, found in Tree.read(umoci_rootfs).without(in_dev).entries.items():
        if found.kind != "dir":
            assert os.lstat(enroot["rootfs"] / path).st_mtime == os.lstat(umoci_rootfs / path).st_mtime, path


def test_the_squashfs_has_enroot_s_options(enroot: dict[str, Any]) -> None:
    superblock = run("unsquashfs", "-s", str(enroot["sqsh"]))
    assert "Compression lzo" in superblock
    assert "Data is uncompressed" in superblock  # -noD
    assert "Inodes are compressed" in superblock


def test_the_sif_partition_is_the_image_flattened_as_apptainer_does(
    apptainer: dict[str, Any], umoci_rootfs: Path
) -> None:
    """Owners as the layers have them (the module runs as root here), modes unchanged, /dev entries left out, and
    apptainer's /.singularity.d and base environment on top."""
    assert apptainer["result"].result["changed"] is True
    assert "FS (Squashfs/*System/amd64)" in apptainer["listed"]
    assert "Primary Architecture: amd64" in apptainer["header"]
    assert "Compression gzip" in run("unsquashfs", "-s", str(apptainer["partition"]))
    ours = Tree.read(apptainer["rootfs"])
    reference = Tree.read(umoci_rootfs)
    assert ours.entries[".singularity.d"].kind == "dir" and ours.entries[".singularity.d/runscript"].kind == "file"
    assert {name: ours.entries[name].target for name in APPTAINER_LINKS} == APPTAINER_LINKS
    assert all(ours.entries[name].kind == "dir" for name in APPTAINER_DIRS)
    assert all(ours.entries[name].kind == "file" and ours.entries[name].size == 0 for name in APPTAINER_FILES)
    assert not [p for p in ours.entries if in_dev(p)], "the entries under /dev are left out"
    added = {*APPTAINER_LINKS, *APPTAINER_FILES, *(d for d in APPTAINER_DIRS if d not in reference.entries)}

    def apptainers(path: str) -> bool:
        return path in added or path == ".singularity.d" or path.startswith(".singularity.d/")

    if os.geteuid() != 0:  # a build by a user: the files are root's in the SIF, the user's in umoci's rootless unpack
        ours, reference = (
            Tree({p: as_root(e) for p, e in tree.entries.items()}, tree.links) for tree in (ours, reference)
        )
    problems = differences(ours.without(apptainers), reference.without(in_dev))
    assert not problems, "\n".join(problems)
