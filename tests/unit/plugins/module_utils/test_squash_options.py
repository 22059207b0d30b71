# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""squash_options: only mksquashfs options that shape compression and layout pass, for the module and the role alike."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ansible_collections.airgap.ngc.plugins.filter.squash_options_problem import FilterModule
from ansible_collections.airgap.ngc.plugins.module_utils._transports.apptainer import ApptainerDestination
from ansible_collections.airgap.ngc.plugins.module_utils._transports.enroot import EnrootDestination
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._types.squash_options import (
    squash_options_problem,
    squash_words,
)
from ansible_collections.airgap.ngc.plugins.module_utils._copy.validate import validate_mirror

# ngc_image_mirror's parameters as AnsibleModule gives them, but for the destination under test.
PARAMS = {
    "api_key": "not-a-key",
    "username": "$oauthtoken",
    "registry_url": "https://nvcr.io",
    "validate_certs": True,
    "ca_path": None,
    "timeout": 60.0,
    "retries": 5,
    "images": ["nvidia/pytorch:24.01-py3"],
    "registry": None,
    "archive": None,
    "docker": None,
    "offline": False,
    "platforms": None,
    "save_readme": False,
    "facts_file": "/srv/facts/ngc_mirror.fact",
    "progress_file": None,
    "parallel": 4,
    "force": False,
    "fail_on_error": True,
}


def mirror_params(kind: str, squash_options: object) -> dict[str, object]:
    return dict(PARAMS, **{kind: {"dir": f"/srv/{kind}", "squash_options": squash_options, "platform": "linux/amd64"}})


GOOD = [
    "",
    "-comp lzo -noD",
    "-comp gzip",
    "-comp zstd -Xcompression-level '3'",
    "-comp xz -Xbcj x86,arm -Xdict-size 50% -b 1M",
    "-comp xz -Xdict-size 64K",
    "-comp lz4 -Xhc -noI -noId -noF -noX",
    "-comp lzo -Xalgorithm lzo1x_999 -Xcompression-level 9",
    "-Xstrategy default,filtered -Xwindow-size 15",  # gzip's, the default compressor
    "-comp lzma",
    "-b 131072 -no-xattrs -no-fragments -no-duplicates -processors 2 -mem 512M",
    "-xattrs -always-use-fragments -no-sparse -tailends -no-exports -no-hardlinks -reproducible -throttle 10",
    "-noInodeCompression -noDataCompression",
]

# (value, what the reason must name)
HOSTILE = [
    ("-p 'x f 644 0 0 cat /etc/shadow'", "-p is refused"),
    ("-comp gzip -p 'x f 644 0 0 cat /etc/shadow'", "-p is refused"),
    ("-pf /etc/pseudo", "-pf is refused"),
    ("-sort /etc/shadow", "-sort is refused: it reads a file"),
    ("-ef /etc/shadow", "-ef is refused: it reads a file"),
    ("-pd 0,0,755", "-pd is refused"),
    ("-pseudo-override", "-pseudo-override is refused"),
    ("-cpiostyle", "-cpiostyle is refused: it reads standard input"),
    ("-tar", "-tar is refused: it reads standard input"),
    ("-action 'prune@name(x)'", "-action is refused"),
    ("-action-file /etc/actions", "-action-file is refused"),
    ("-e etc", "-e is refused"),
    ("-force-uid 1000", "-force-uid is refused"),
    ("-root-owned", "-root-owned is refused"),
    ("-o 4096", "-o is refused"),
    ("-recover /etc/shadow", "-recover is refused"),
    ("-info", "-info is not a mksquashfs option"),
    ("-noappend", "-noappend is not a mksquashfs option"),
    ("/etc", "/etc is not a mksquashfs word (not an option)"),
    ("-comp lzo /etc/shadow", "/etc/shadow is not a mksquashfs word"),
    ("-comp nosuchcompressor", "-comp takes a compressor"),
    ("-comp", "-comp needs a compressor"),
    ("-comp -p", "-comp takes a compressor"),
    ("-b -p", "-b takes a block size"),
    ("-b 128Q", "-b takes a block size"),
    ("-processors all", "-processors takes a number"),
    ("-Xcompression-level x", "-Xcompression-level takes a compression level"),
    ("-Xbcj x86,evil", "-Xbcj takes x86"),
    ("-comp lzo -Xbcj x86", "-Xbcj is an option of xz, not of the compressor lzo"),
    ("-Xhc", "-Xhc is an option of lz4, not of the compressor gzip (the default without -comp)"),
    ("-comp 'lzo", "cannot be split into words"),
    ("-comp lzo\n-noD", "control character"),
    (["-comp", "lzo"], "expected a string"),
]


@pytest.mark.parametrize("value", GOOD)
def test_options_that_shape_compression_and_layout_pass(value: str) -> None:
    assert squash_options_problem(value) is None
    validate_mirror(mirror_params("enroot", value))
    assert FilterModule().filters()["squash_options_problem"](value) == ""


@pytest.mark.parametrize("value, reason", HOSTILE)
def test_every_other_option_is_refused_naming_it(value: object, reason: str) -> None:
    problem = squash_options_problem(value)
    assert problem is not None and reason in problem, problem
    assert FilterModule().filters()["squash_options_problem"](value) == problem
    with pytest.raises(ConfigError, match=r"^invalid enroot\.squash_options .*" + re.escape(reason)):
        validate_mirror(mirror_params("enroot", value))
    for destination in (EnrootDestination, ApptainerDestination):
        with pytest.raises(ConfigError, match=r"squash_options"):
            destination({"dir": "/srv/cache", "squash_options": value})


def test_the_apptainer_destination_is_checked_by_validate_mirror_too() -> None:
    with pytest.raises(ConfigError, match=r"^invalid apptainer\.squash_options '-pf /etc/x': -pf is refused"):
        validate_mirror(mirror_params("apptainer", "-pf /etc/x"))


@pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="needs squashfs-tools")
@pytest.mark.parametrize("value", [v for v in GOOD if v])
def test_mksquashfs_takes_every_accepted_value(value: str, tmp_path: Path) -> None:
    """The allow-list holds no option mksquashfs does not know, nor an argument shape it refuses."""
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "file").write_bytes(b"x" * 100000)
    result = subprocess.run(
        [
            "mksquashfs",
            str(tmp_path / "root"),
            str(tmp_path / "out.sqsh"),
            "-noappend",
            "-no-progress",
            *squash_words(value),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
