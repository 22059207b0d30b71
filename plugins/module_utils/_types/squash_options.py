# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the mksquashfs options an enroot or Apptainer destination accepts (``squash_options``). Not a public API.

mksquashfs runs as the module's user (often root) on a tree the module made; many of its options read a file
(``-pf``, ``-sort``, ``-ef``, ``-action-file``), run a command (a pseudo file definition ``-p 'x f 644 0 0 CMD'``),
read standard input (``-tar``, ``-cpiostyle``) or change what goes in (``-e``, ``-force-uid``). Only options that shape
compression and layout are accepted, each argument checked for its shape; anything else is refused naming the option.
The same rules serve the module (``_validate``, the destinations) and the role (the ``squash_options_problem`` filter),
so a value the role writes into the scheduled run's variables is one the module accepts.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

COMPRESSORS = ("gzip", "lzo", "lz4", "xz", "zstd", "lzma")
DEFAULT_COMPRESSOR = "gzip"  # mksquashfs's when no -comp is given

# Options without an argument that only change how the image is compressed or laid out.
FLAGS = frozenset(
    (
        "-noI",
        "-noId",
        "-noD",
        "-noF",
        "-noX",
        "-noInodeCompression",
        "-noIdTableCompression",
        "-noDataCompression",
        "-noFragmentCompression",
        "-noXattrCompression",
        "-no-xattrs",
        "-xattrs",
        "-no-fragments",
        "-always-use-fragments",
        "-no-duplicates",
        "-no-sparse",
        "-no-tailends",
        "-tailends",
        "-no-exports",
        "-exports",
        "-no-hardlinks",
        "-reproducible",
        "-not-reproducible",
        "-Xhc",
    )
)
_SIZE = r"[1-9][0-9]{0,9}"
_LISTS = {
    "-Xstrategy": ("default", "filtered", "huffman_only", "run_length_encoded", "fixed"),
    "-Xbcj": ("x86", "arm", "armthumb", "powerpc", "sparc", "ia64"),
}
# Options with one argument: the argument's shape and what the message says it must be.
VALUED: dict[str, tuple[re.Pattern[str], str]] = {
    "-comp": (re.compile("(?:" + "|".join(COMPRESSORS) + r")\Z"), "a compressor: " + ", ".join(COMPRESSORS)),
    "-b": (re.compile(_SIZE + r"[KkMm]?\Z"), "a block size such as 131072, 128K or 1M"),
    "-processors": (re.compile(r"[1-9][0-9]{0,3}\Z"), "a number of processors such as 4"),
    "-mem": (re.compile(_SIZE + r"[KkMmGg]?\Z"), "an amount of memory such as 2G or 512M"),
    "-throttle": (re.compile(r"(?:[1-9]?[0-9]|100)\Z"), "a percentage from 0 to 100"),
    "-limit": (re.compile(r"(?:[1-9]?[0-9]|100)\Z"), "a percentage from 0 to 100"),
    "-Xcompression-level": (re.compile(r"[1-9][0-9]?\Z"), "a compression level such as 9"),
    "-Xwindow-size": (re.compile(r"[1-9][0-9]?\Z"), "a window size from 8 to 15"),
    "-Xalgorithm": (
        re.compile(r"lzo1x_(?:1|1_11|1_12|1_15|999)\Z"),
        "lzo1x_1, lzo1x_1_11, lzo1x_1_12, lzo1x_1_15 or lzo1x_999",
    ),
    "-Xdict-size": (
        re.compile(r"(?:[0-9]{1,3}(?:\.[0-9]+)?%|" + _SIZE + r"[KkMm]?)\Z"),
        "a dictionary size such as 50% or 64K",
    ),
}
VALUED.update(
    {
        option: (
            re.compile(f"(?:{'|'.join(items)})(?:,(?:{'|'.join(items)}))*" + r"\Z"),
            ", ".join(items) + " joined by ','",
        )
        for option, items in _LISTS.items()
    }
)
# Which compressor each compressor option belongs to (mksquashfs refuses the others').
COMPRESSOR_OPTIONS = {
    "-Xcompression-level": ("gzip", "lzo", "zstd"),
    "-Xwindow-size": ("gzip",),
    "-Xstrategy": ("gzip",),
    "-Xalgorithm": ("lzo",),
    "-Xhc": ("lz4",),
    "-Xbcj": ("xz",),
    "-Xdict-size": ("xz",),
}
# Options refused with the reason spelled out: they read or write files, run commands, read standard input, or change
# what the image holds and who owns it (the rest are refused as not shaping compression and layout).
DANGEROUS = {
    "-p": "it adds pseudo files, which run commands and make devices",
    "-pf": "it reads pseudo file definitions from a file, which run commands and make devices",
    "-pd": "it sets the default owner and mode of pseudo directories",
    "-pseudo-override": "it lets pseudo files override what the image holds",
    "-sort": "it reads a file",
    "-ef": "it reads a file",
    "-e": "it leaves paths out of the image",
    "-wildcards": "it changes which paths are left out",
    "-regex": "it changes which paths are left out",
    "-tar": "it reads standard input",
    "-cpiostyle": "it reads standard input",
    "-cpiostyle0": "it reads standard input",
    "-action": "it runs actions on the image's files",
    "-log-action": "it runs actions on the image's files",
    "-true-action": "it runs actions on the image's files",
    "-false-action": "it runs actions on the image's files",
    "-action-file": "it reads a file of actions",
    "-log-action-file": "it reads a file of actions",
    "-true-action-file": "it reads a file of actions",
    "-false-action-file": "it reads a file of actions",
    "-recover": "it reads a recovery file",
    "-recovery-path": "it writes a recovery file",
    "-all-root": "the destination sets the owners itself",
    "-root-owned": "the destination sets the owners itself",
    "-force-uid": "it changes who owns the image's files",
    "-force-gid": "it changes who owns the image's files",
    "-root-uid": "it changes who owns the image's root",
    "-root-gid": "it changes who owns the image's root",
    "-root-mode": "it changes the image's root",
    "-o": "the destination sets the offset itself",
    "-offset": "the destination sets the offset itself",
}
ALLOWED_SUMMARY = (
    "-comp, -b, -noI, -noD, -noF, -noX, -no-xattrs, -no-fragments, -X<compressor option>, -processors, -mem"
)


def squash_options_problem(text: Any) -> str | None:
    """Why ``text`` is not a squash_options value of allowed mksquashfs options, or None when it is."""
    try:
        squash_words(text)
    except ValueError as exc:
        return str(exc)
    return None


def squash_words(text: Any) -> list[str]:
    """The words of a squash_options value (shell quoting as mksquashfs's users write it), each option allowed and
    its argument of the right shape; ValueError says which is not."""
    if not isinstance(text, str):
        raise ValueError("expected a string of mksquashfs options such as '-comp lzo -noD'")
    if any(not char.isprintable() for char in text):
        raise ValueError("it holds a control character (a line break?): give the options on one line")
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"it cannot be split into words as a shell would ({exc})") from None
    compressor, position = DEFAULT_COMPRESSOR, 0
    compressor_options: list[str] = []
    while position < len(words):
        word = words[position]
        position += 1
        if word in FLAGS:
            if word in COMPRESSOR_OPTIONS:
                compressor_options.append(word)
            continue
        if word in VALUED:
            if position >= len(words):
                raise ValueError(f"{word} needs {VALUED[word][1]}")
            argument = words[position]
            position += 1
            if not VALUED[word][0].match(argument):
                raise ValueError(f"{word} takes {VALUED[word][1]}, not {argument!r}")
            if word == "-comp":
                compressor = argument
            elif word in COMPRESSOR_OPTIONS:
                compressor_options.append(word)
            continue
        if word in DANGEROUS:
            raise ValueError(
                f"{word} is refused: {DANGEROUS[word]}; squash_options takes only options that shape "
                f"compression and layout ({ALLOWED_SUMMARY})"
            )
        what = "option" if word.startswith("-") else "word (not an option)"
        raise ValueError(
            f"{word} is not a mksquashfs {what} that shapes compression or layout, which is all "
            f"squash_options takes ({ALLOWED_SUMMARY})"
        )
    for option in compressor_options:
        if compressor not in COMPRESSOR_OPTIONS[option]:
            raise ValueError(
                f"{option} is an option of {' and '.join(COMPRESSOR_OPTIONS[option])}, not of the compressor "
                f"{compressor}{'' if '-comp' in words else ' (the default without -comp)'}"
            )
    return words
