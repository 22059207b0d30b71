# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the Singularity Image Format (SIF, spec version 01, as apptainer/sif v2 reads it). Not a public API.

A SIF file is a global header, a table of object descriptors at 4096, and the data objects from 32768 on. Here
the objects are small ones known in advance (the definition file, JSON objects), then the primary system
partition, page aligned, written last by mksquashfs itself at its offset (``-o``): the head (header, table and
small objects) is written over the first bytes afterwards, when the partition's size is known, so the squashfs
image is never copied.

All integers are little endian and the structures packed, as Go's ``encoding/binary`` writes them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError

HEADER = struct.Struct(
    "<32s10s3s3s16sqqqqqqqq"
)  # launch script, magic, version, arch, id, times, descriptor and data bounds
DESCRIPTOR = struct.Struct(
    "<i?IIIqqqqqqq128s384s"
)  # type, used, id, group, link, offset, size, padded size, times, uid, gid
PARTITION = struct.Struct("<ii3s")  # file system type, partition type, arch
LAUNCH_SCRIPT = b"#!/usr/bin/env run-singularity\n"
MAGIC = b"SIF_MAGIC\x00"
SPEC_VERSION = b"01\x00"
DESCRIPTORS_OFFSET = 4096
DESCRIPTOR_CAPACITY = 48
DATA_OFFSET = 32768
PARTITION_ALIGNMENT = 4096
GROUP = 0xF0000000 | 1  # the default object group

DATA_DEFFILE = 0x4001
DATA_PARTITION = 0x4004
DATA_GENERIC_JSON = 0x4006
FS_SQUASHFS = 1
PART_PRIMARY_SYSTEM = 2

# SIF's architecture codes by OCI/Go architecture name.
ARCH_CODES = {
    "386": "01",
    "amd64": "02",
    "arm": "03",
    "arm64": "04",
    "ppc64": "05",
    "ppc64le": "06",
    "mips": "07",
    "mipsle": "08",
    "mips64": "09",
    "mips64le": "10",
    "s390x": "11",
}


def arch_code(architecture: str) -> bytes:
    """The header's code of an OCI architecture (``amd64`` -> ``02``)."""
    code = ARCH_CODES.get(architecture)
    if code is None:
        raise ConfigError(
            f"SIF has no architecture code for {architecture!r} (it knows {', '.join(sorted(ARCH_CODES))})"
        )
    return code.encode() + b"\x00"


@dataclass
class SifObject:
    """A small data object: its SIF type, name (at most 128 bytes) and bytes."""

    data_type: int
    name: str
    data: bytes


class SifLayout:
    """Where each object goes, and the bytes before the partition once its size is known."""

    def __init__(self, objects: list[SifObject], architecture: str, created: int, ident: bytes) -> None:
        if len(objects) + 1 > DESCRIPTOR_CAPACITY:
            raise ValueError("too many SIF objects")
        self.objects, self.arch, self.created, self.ident = objects, arch_code(architecture), created, ident
        self.offsets: list[int] = []
        offset = DATA_OFFSET
        for obj in objects:
            self.offsets.append(offset)
            offset += len(obj.data)
        self.objects_end = offset
        self.partition_offset = -(-offset // PARTITION_ALIGNMENT) * PARTITION_ALIGNMENT

    def _descriptor(
        self, ident: int, data_type: int, name: str, offset: int, size: int, padding: int, extra: bytes
    ) -> bytes:
        encoded = name.encode("utf-8")
        if len(encoded) > 128:
            raise ValueError(f"SIF object name too long: {name}")
        return DESCRIPTOR.pack(
            data_type,
            True,
            ident,
            GROUP,
            0,
            offset,
            size,
            size + padding,
            self.created,
            self.created,
            0,
            0,
            encoded,
            extra,
        )

    def head(self, partition_size: int) -> bytes:
        """Header, descriptor table and small objects: exactly ``partition_offset`` bytes."""
        table = []
        end = DATA_OFFSET
        for ident, (obj, offset) in enumerate(zip(self.objects, self.offsets), start=1):
            table.append(self._descriptor(ident, obj.data_type, obj.name, offset, len(obj.data), offset - end, b""))
            end = offset + len(obj.data)
        extra = PARTITION.pack(FS_SQUASHFS, PART_PRIMARY_SYSTEM, self.arch)
        table.append(
            self._descriptor(
                len(self.objects) + 1,
                DATA_PARTITION,
                "",
                self.partition_offset,
                partition_size,
                self.partition_offset - end,
                extra,
            )
        )
        used = len(table)
        table_bytes = b"".join(table) + bytes(DESCRIPTOR.size * (DESCRIPTOR_CAPACITY - used))
        header = HEADER.pack(
            LAUNCH_SCRIPT,
            MAGIC,
            SPEC_VERSION,
            self.arch,
            self.ident,
            self.created,
            self.created,
            DESCRIPTOR_CAPACITY - used,
            DESCRIPTOR_CAPACITY,
            DESCRIPTORS_OFFSET,
            len(table_bytes),
            DATA_OFFSET,
            self.partition_offset + partition_size - DATA_OFFSET,
        )
        head = bytearray(self.partition_offset)
        head[: len(header)] = header
        head[DESCRIPTORS_OFFSET : DESCRIPTORS_OFFSET + len(table_bytes)] = table_bytes
        for obj, offset in zip(self.objects, self.offsets):
            head[offset : offset + len(obj.data)] = obj.data
        return bytes(head)


def read_descriptors(data: bytes) -> list[dict[str, object]]:
    """The used descriptors of a SIF file's first bytes (for checks): type, id, name, offset, size."""
    found = []
    for i in range(DESCRIPTOR_CAPACITY):
        start = DESCRIPTORS_OFFSET + i * DESCRIPTOR.size
        fields = DESCRIPTOR.unpack(data[start : start + DESCRIPTOR.size])
        if fields[1]:
            found.append(
                {
                    "type": fields[0],
                    "id": fields[2],
                    "offset": fields[5],
                    "size": fields[6],
                    "name": fields[12].rstrip(b"\x00").decode("utf-8", "replace"),
                }
            )
    return found
