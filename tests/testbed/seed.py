# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Seed a registry with NGC-like images and describe them in a JSON file.

Run: ``python -m tests.testbed.seed --registry URL --out FILE [--scale small|bench] [--seed N]
[--username U] [--wide N [--wide-repos M]]`` with the password (the NGC key for the token registry) in the environment
variable ``TESTBED_REGISTRY_PASSWORD``. Works against token, basic and open registries.

Images are generated, never pulled: see ``CATALOG`` for the repositories and tags and
``_blobs`` for the content. The same seed and scale give the same digests. The output file is
what the NGC stand-in serves and what tests compare against (schema in README.md).

``seed_unresolved`` (or ``--unresolved FILE``) pushes one more repository, ``UNRESOLVED``, that is
not part of the seed file: a good tag, a multi-platform tag whose index names a child manifest
the registry no longer has (it is deleted after the push), and a tag the catalog lists but that was
never pushed. Its record goes to the NGC stand-in's ``extra_repositories`` setting, so only the
tests that ask for it see it, and the counts of the seeded catalog stay as they are.

``seed_wide`` (or ``--wide N [--wide-repos M]``) pushes a wide catalog for the scale benchmark
(tests/bench/wide_bench.py): N tiny tags over M repositories ``nvidia/wide-<N>-<index>``, each
image one shared base layer (pushed once, mounted into the other repositories) and one tiny
layer and config of its own, and merges their records into the seed file given as ``--out``
(the NGC stand-in re-reads it), leaving the other repositories in it as they are.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._blobs import BlobInfo, LayerSpec, LayerStream, image_config, image_index, image_manifest, sha256_digest
from ._common import read_json, write_json
from ._push import Pusher, PushError

KIB = 1 << 10
MIB = 1 << 20
SCHEMA_VERSION = 1
ORG = "nvidia"


@dataclass(frozen=True)
class Scale:
    name: str
    column: int  # which size of LAYER_SIZES
    file_max: int
    level: int
    divisor: int = 1  # the sizes of that column divided by this (a smaller copy of the bench data for quick runs)


SCALES = {
    "small": Scale("small", 0, 128 * KIB, 1),
    "bench": Scale("bench", 1, 256 * MIB, 0),
    "medium": Scale(
        "medium", 1, 64 * MIB, 0, divisor=4
    ),  # the bench data at a quarter of the size (BENCH_SCALE=medium)
}

# Layer name prefix -> (small, bench) bytes of random content; the longest matching prefix wins.
LAYER_SIZES: dict[str, tuple[int, int]] = {
    "ubuntu-22.04": (384 * KIB, 48 * MIB),
    "ubuntu-20.04": (256 * KIB, 32 * MIB),
    "pytorch-base": (1024 * KIB, 1024 * MIB),  # the big base layer shared by the py3 pytorch tags
    "pytorch-": (96 * KIB, 32 * MIB),
    "tensorflow-": (128 * KIB, 48 * MIB),
    "l4t-base": (128 * KIB, 16 * MIB),
    "l4t-tensorflow-": (96 * KIB, 24 * MIB),
    "cuda-": (128 * KIB, 16 * MIB),
    "cuda-11.8-runtime": (192 * KIB, 24 * MIB),
    "parabricks-": (160 * KIB, 64 * MIB),
}


@dataclass(frozen=True)
class TagSpec:
    """One tag: its layers (per platform, see platform_layer), date and manifest family."""

    tag: str
    date: str
    layers: tuple[str, ...]
    platforms: tuple[str, ...] = ("linux/amd64",)
    oci: bool = False  # OCI manifest (or OCI index when multi-platform) instead of Docker v2 schema 2


@dataclass(frozen=True)
class RepoSpec:
    name: str
    display_name: str
    short_description: str
    tags: tuple[TagSpec, ...]
    team: str | None = None
    labels: tuple[str, ...] = ()
    date: str = ""  # only for repositories without tags

    @property
    def namespace(self) -> str:
        return f"{ORG}/{self.team}" if self.team else ORG

    @property
    def repository(self) -> str:
        return f"{self.namespace}/{self.name}"


def _py3(tag: str, date: str) -> TagSpec:
    return TagSpec(tag, date, ("ubuntu-22.04", "pytorch-base", f"pytorch-{tag}"))


CATALOG: tuple[RepoSpec, ...] = (
    RepoSpec(
        "pytorch",
        "PyTorch",
        "PyTorch is a GPU accelerated tensor computational framework.",
        (
            TagSpec("19.09-py2", "2019-09-30T21:05:11.000Z", ("ubuntu-20.04", "pytorch-19.09-py2")),
            _py3("23.10-py3", "2023-10-25T17:40:02.000Z"),
            _py3("23.12-py3", "2023-12-20T16:12:45.000Z"),
            _py3("24.01-py3", "2024-01-24T18:30:00.000Z"),
            _py3("24.02-py3", "2024-02-21T19:02:33.000Z"),
            TagSpec(
                "24.02-py3-igpu",
                "2024-02-20T08:15:00.000Z",
                ("ubuntu-22.04", "pytorch-24.02-py3-igpu"),
                ("linux/arm64",),
            ),
        ),
        labels=("Deep Learning", "Framework", "NVIDIA AI Enterprise Supported"),
    ),
    RepoSpec(
        "tensorflow",
        "TensorFlow",
        "TensorFlow is an open source platform for machine learning.",
        (
            TagSpec(
                "23.12-tf2-py3",
                "2023-12-19T11:00:00.000Z",
                ("ubuntu-22.04", "cuda-12.2-base", "tensorflow-23.12-tf2-py3"),
            ),
            TagSpec(
                "24.01-tf2-py3",
                "2024-01-23T11:00:00.000Z",
                ("ubuntu-22.04", "cuda-12.2-base", "tensorflow-24.01-tf2-py3"),
                oci=True,
            ),
        ),
        labels=("Deep Learning", "Framework"),
    ),
    RepoSpec(
        "l4t-tensorflow",
        "NVIDIA L4T TensorFlow",
        "TensorFlow for Jetson (L4T); its name contains 'tensorflow'.",
        (
            TagSpec(
                "r32.7.1-tf2.7-py3",
                "2022-02-01T10:00:00.000Z",
                ("ubuntu-20.04", "l4t-base", "l4t-tensorflow-r32.7.1"),
                ("linux/arm64",),
            ),
            TagSpec(
                "r35.3.1-tf2.11-py3",
                "2023-06-01T10:00:00.000Z",
                ("ubuntu-20.04", "l4t-base", "l4t-tensorflow-r35.3.1"),
                ("linux/arm64",),
            ),
        ),
        labels=("Jetson", "Framework"),
    ),
    RepoSpec(
        "cuda",
        "CUDA",
        "CUDA is a parallel computing platform and programming model.",
        (
            TagSpec("11.8.0-runtime-ubuntu20.04", "2023-11-10T09:00:00.000Z", ("ubuntu-20.04", "cuda-11.8-runtime")),
            TagSpec(
                "12.2.0-base-ubuntu22.04",
                "2023-10-05T09:00:00.000Z",
                ("ubuntu-22.04", "cuda-12.2-base"),
                ("linux/amd64", "linux/arm64"),
                oci=True,
            ),
            TagSpec(
                "12.10.0-base-ubuntu22.04",
                "2024-03-01T09:00:00.000Z",
                ("ubuntu-22.04", "cuda-12.10-base"),
                ("linux/amd64", "linux/arm64"),
            ),
        ),
        labels=("HPC", "Base Image"),
    ),
    RepoSpec(
        "clara-parabricks",
        "Clara Parabricks",
        "GPU-accelerated genomics analysis (a team image).",
        (
            TagSpec("4.1.1-1", "2023-08-01T12:00:00.000Z", ("ubuntu-22.04", "cuda-12.2-base", "parabricks-4.1.1-1")),
            TagSpec("4.2.0-1", "2023-11-15T12:00:00.000Z", ("ubuntu-22.04", "cuda-12.2-base", "parabricks-4.2.0-1")),
        ),
        team="clara",
        labels=("Healthcare", "Genomics"),
    ),
    RepoSpec(
        "empty-repo",
        "Empty Repository",
        "A repository in the catalog with no images at all.",
        (),
        labels=("Test",),
        date="2023-01-01T00:00:00.000Z",
    ),
)


UNRESOLVED = RepoSpec(
    "testbed-unresolved",
    "Unresolved Tags",
    "A repository whose catalog lists tags the registry cannot resolve.",
    (
        TagSpec("1.0-good", "2024-04-01T10:00:00.000Z", ("ubuntu-22.04", "cuda-12.2-base")),
        TagSpec(
            "1.0-broken-index",
            "2024-04-02T10:00:00.000Z",
            ("ubuntu-22.04", "cuda-12.2-base"),
            ("linux/amd64", "linux/arm64"),
        ),
        TagSpec("1.0-missing", "2024-04-03T10:00:00.000Z", ("ubuntu-22.04", "cuda-12.2-base")),
    ),
    labels=("Test",),
)
"""Tags of ``UNRESOLVED``: ``1.0-good`` resolves; the arm64 child of ``1.0-broken-index`` is deleted; ``1.0-missing`` is never pushed.
``UNRESOLVED_ALIAS`` is one more tag of 1.0-good's very manifest (so the two share one image config)."""
UNRESOLVED_ALIAS = ("1.0-alias", "1.0-good")
UNRESOLVED_MISSING_TAG = "1.0-missing"
UNRESOLVED_BROKEN_INDEX = ("1.0-broken-index", "linux/arm64")


def platform_layer(name: str, platform: str) -> str:
    """Layers differ per architecture: arm64 ones carry a suffix."""
    arch = platform.split("/")[1]
    return name if arch == "amd64" else f"{name}-{arch}"


def layer_spec(name: str, scale: Scale) -> LayerSpec:
    base = name.rsplit("-arm64", 1)[0] if name.endswith("-arm64") else name
    prefix = max((p for p in LAYER_SIZES if base.startswith(p)), key=len)
    return LayerSpec(
        name=name, size=LAYER_SIZES[prefix][scale.column] // scale.divisor, file_max=scale.file_max, level=scale.level
    )


def description(repo: RepoSpec) -> str:
    """The repository README, markdown like NGC's (with non-ASCII on purpose)."""
    lines = [
        f"# {repo.display_name}",
        "",
        f"{repo.short_description} — generated by the airgap.ngc test bed™.",
        "",
        "## Pull",
        "",
        "```console",
        f"docker pull nvcr.io/{repo.repository}:<tag>",
        "```",
        "",
        "## Tags",
        "",
    ]
    lines += [f"- `{t.tag}` ({', '.join(t.platforms)})" for t in repo.tags] or ["_No images yet._"]
    return "\n".join(lines) + "\n"


@dataclass
class Seeder:
    """Pushes CATALOG into one registry; `cache` (layer key -> BlobInfo fields) spares regeneration."""

    pusher: Pusher
    seed: int
    scale: Scale
    cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    blobs: dict[str, int] = field(default_factory=dict)

    def layer(self, repo: str, name: str) -> BlobInfo:
        spec = layer_spec(name, self.scale)
        key = f"{self.seed}/{spec.name}/{spec.size}/{spec.file_max}/{spec.level}"
        known = self.cache.get(key)
        location = None
        if known is not None:
            if self.pusher.blob_exists(repo, known["digest"]):
                return self._note(BlobInfo(known["digest"], known["size"], known["diff_id"]))
            location = self.pusher.mount(repo, known["digest"], known["repo"])
            if location is None:
                return self._note(BlobInfo(known["digest"], known["size"], known["diff_id"]))
        stream = LayerStream(self.seed, spec)
        self.pusher.upload_stream(repo, stream, lambda: stream.info.digest if stream.info else "", location)
        info = stream.info
        if info is None or (known is not None and known["digest"] != info.digest):
            raise PushError(f"layer {name} did not regenerate to its cached digest")
        self.cache[key] = {"digest": info.digest, "size": info.size, "diff_id": info.diff_id, "repo": repo}
        return self._note(info)

    def _note(self, info: BlobInfo) -> BlobInfo:
        self.blobs[info.digest] = info.size
        return info

    def platform_image(self, repo: RepoSpec, tag: TagSpec, platform: str) -> dict[str, Any]:
        names = [platform_layer(n, platform) for n in tag.layers]
        layers = [self.layer(repo.repository, n) for n in names]
        labels = {"com.nvidia.testbed.image": f"{repo.repository}:{tag.tag}", "com.nvidia.testbed.seed": str(self.seed)}
        config = self.pusher.upload_bytes(
            repo.repository, image_config(platform.split("/")[1], tag.date, [b.diff_id for b in layers], names, labels)
        )
        self._note(config)
        media_type, body = image_manifest(tag.oci, config, layers)
        digest = self.pusher.put_manifest(
            repo.repository, tag.tag if len(tag.platforms) == 1 else sha256_digest(body), media_type, body
        )
        return {
            "platform": platform,
            "digest": digest,
            "media_type": media_type,
            "manifest_size": len(body),
            "config_digest": config.digest,
            "layer_digests": [b.digest for b in layers],
            "size": config.size + sum(b.size for b in layers),
        }

    def tag(self, repo: RepoSpec, tag: TagSpec) -> dict[str, Any]:
        manifests = [self.platform_image(repo, tag, p) for p in tag.platforms]
        if len(manifests) == 1:
            digest, media_type = manifests[0]["digest"], manifests[0]["media_type"]
        else:
            children = [(m["platform"], m["media_type"], BlobInfo(m["digest"], m["manifest_size"])) for m in manifests]
            media_type, body = image_index(tag.oci, children)
            digest = self.pusher.put_manifest(repo.repository, tag.tag, media_type, body)
        layer_digests = list(dict.fromkeys(d for m in manifests for d in m["layer_digests"]))
        unique = {m["config_digest"] for m in manifests} | set(layer_digests)
        return {
            "tag": tag.tag,
            "reference": f"{repo.repository}:{tag.tag}",
            "digest": digest,
            "media_type": media_type,
            "platforms": list(tag.platforms),
            "config_digests": [m["config_digest"] for m in manifests],
            "layer_digests": layer_digests,
            "size": sum(self.blobs[d] for d in unique),
            "updated_date": tag.date,
            "manifests": manifests,
        }

    def repository(self, repo: RepoSpec) -> dict[str, Any]:
        tags = [self.tag(repo, t) for t in repo.tags]
        latest = max(tags, key=lambda t: t["updated_date"]) if tags else None
        return {
            "org": ORG,
            "team": repo.team,
            "name": repo.name,
            "namespace": repo.namespace,
            "repository": repo.repository,
            "display_name": repo.display_name,
            "short_description": repo.short_description,
            "description": description(repo),
            "labels": list(repo.labels),
            "updated_date": latest["updated_date"] if latest else repo.date,
            "latest_tag": latest["tag"] if latest else None,
            "tags": tags,
        }

    def run(self, registry_host: str) -> dict[str, Any]:
        repositories = [self.repository(r) for r in CATALOG]
        return {
            "schema_version": SCHEMA_VERSION,
            "seed": self.seed,
            "scale": self.scale.name,
            "registry": registry_host,
            "org": ORG,
            "blob_count": len(self.blobs),
            "total_bytes": sum(self.blobs.values()),
            "repositories": repositories,
        }


def seed_registry(
    registry_url: str,
    out: Path,
    scale: str = "small",
    seed: int = 1,
    username: str = "",
    password: str = "",
    cache_file: Path | None = None,
) -> dict[str, Any]:
    """Push CATALOG into the registry at registry_url and write the description to `out`."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; use one of {', '.join(SCALES)}")
    cache = read_json(cache_file) if cache_file is not None and cache_file.exists() else {}
    seeder = Seeder(Pusher(registry_url.rstrip("/"), username, password), seed, SCALES[scale], cache)
    try:
        document = seeder.run(registry_url.split("://", 1)[-1].rstrip("/"))
    finally:
        seeder.pusher.session.close()
    if cache_file is not None:
        write_json(cache_file, seeder.cache)
    write_json(out, document, mode=0o644)
    return document


def _delete_manifest(pusher: Pusher, repo: str, digest: str) -> None:
    """DELETE a manifest by digest (the registry needs the ``delete`` action in the token's scope)."""
    pusher._auth(repo)  # pylint: disable=protected-access
    headers = {}
    if pusher._scheme == "bearer":  # pylint: disable=protected-access
        token, _expiry = pusher._fetch_token([f"repository:{repo}:delete"])  # pylint: disable=protected-access
        headers["Authorization"] = f"Bearer {token}"
    auth = (pusher.username, pusher.password) if pusher._scheme == "basic" else None  # pylint: disable=protected-access
    response = pusher.session.delete(
        f"{pusher.base_url}/v2/{repo}/manifests/{digest}", headers=headers, auth=auth, timeout=60
    )
    if response.status_code not in (202, 404):
        raise PushError(f"delete manifest {repo}@{digest}: HTTP {response.status_code}: {response.text[:300]}")


def _alias(pusher: Pusher, repo: str, record: dict[str, Any], alias: str) -> dict[str, Any]:
    """Tag the manifest of a tag record once more as ``alias``; the alias's record."""
    response = pusher._request(
        "GET",
        f"/v2/{repo}/manifests/{record['digest']}",
        repo,  # pylint: disable=protected-access
        headers={"Accept": record["media_type"]},
    )
    if response.status_code != 200:
        raise PushError(f"get manifest {repo}@{record['digest']}: HTTP {response.status_code}")
    pusher.put_manifest(repo, alias, record["media_type"], response.content)
    return {**record, "tag": alias, "reference": f"{repo}:{alias}"}


def seed_unresolved(
    registry_url: str,
    seed: int = 1,
    scale: str = "small",
    username: str = "",
    password: str = "",
    cache_file: Path | None = None,
) -> dict[str, Any]:
    """Push ``UNRESOLVED`` into the registry (again: it is idempotent) and return its repository record.

    The record is in the seed file's schema, so the NGC stand-in lists all three tags; a tag record has
    ``in_registry`` false when it was never pushed and ``missing_manifests`` (digests) when its index names
    a child manifest that was deleted.
    """
    cache = read_json(cache_file) if cache_file is not None and cache_file.exists() else {}
    seeder = Seeder(Pusher(registry_url.rstrip("/"), username, password), seed, SCALES[scale], cache)
    try:
        tags = []
        for spec in UNRESOLVED.tags:
            if spec.tag == UNRESOLVED_MISSING_TAG:
                continue
            record = seeder.tag(UNRESOLVED, spec)
            record["in_registry"], record["missing_manifests"] = True, []
            if spec.tag == UNRESOLVED_BROKEN_INDEX[0]:
                gone = [m["digest"] for m in record["manifests"] if m["platform"] == UNRESOLVED_BROKEN_INDEX[1]]
                for digest in gone:
                    _delete_manifest(seeder.pusher, UNRESOLVED.repository, digest)
                record["missing_manifests"] = gone
            tags.append(record)
            if spec.tag == UNRESOLVED_ALIAS[1]:
                tags.append(_alias(seeder.pusher, UNRESOLVED.repository, record, UNRESOLVED_ALIAS[0]))
        missing = next(t for t in UNRESOLVED.tags if t.tag == UNRESOLVED_MISSING_TAG)
        tags.append(
            {
                "tag": missing.tag,
                "reference": f"{UNRESOLVED.repository}:{missing.tag}",
                "digest": None,
                "media_type": None,
                "platforms": list(missing.platforms),
                "config_digests": [],
                "layer_digests": [],
                "size": 0,
                "updated_date": missing.date,
                "manifests": [],
                "in_registry": False,
                "missing_manifests": [],
            }
        )
    finally:
        seeder.pusher.session.close()
    latest = max(tags, key=lambda t: t["updated_date"])
    return {
        "org": ORG,
        "team": UNRESOLVED.team,
        "name": UNRESOLVED.name,
        "namespace": UNRESOLVED.namespace,
        "repository": UNRESOLVED.repository,
        "display_name": UNRESOLVED.display_name,
        "short_description": UNRESOLVED.short_description,
        "description": description(UNRESOLVED),
        "labels": list(UNRESOLVED.labels),
        "updated_date": latest["updated_date"],
        "latest_tag": latest["tag"],
        "tags": tags,
    }


WIDE_BASE = LayerSpec(name="wide-base", size=32 * KIB, file_max=32 * KIB, level=1)
WIDE_LAYER_BYTES = 512
WIDE_TAGS_PER_REPO = 20  # the default spread: 1,000 tags over 50 repositories


def wide_repositories(tags: int, repositories: int | None = None) -> tuple[RepoSpec, ...]:
    """`tags` tiny tags dealt round-robin over `repositories` (default one per WIDE_TAGS_PER_REPO tags)
    repositories named ``wide-<tags>-<index>``; tags are ``1.<n>`` with one day between them."""
    if tags < 1:
        raise ValueError(f"--wide needs at least 1 tag, not {tags}")
    count = repositories or max(1, -(-tags // WIDE_TAGS_PER_REPO))
    if not 1 <= count <= tags:
        raise ValueError(f"--wide-repos must be from 1 to the number of tags ({tags}), not {count}")
    names: list[list[TagSpec]] = [[] for _index in range(count)]
    for number in range(tags):
        day = datetime.date(2020, 1, 1) + datetime.timedelta(days=number)
        names[number % count].append(TagSpec(f"1.{number}", f"{day.isoformat()}T12:00:00.000Z", ("wide-base",)))
    width = len(str(count - 1))
    return tuple(
        RepoSpec(
            f"wide-{tags}-{index:0{width}d}",
            f"Wide {tags} #{index}",
            "A tiny image of the wide catalog (scale benchmark).",
            tuple(specs),
            labels=("Test",),
        )
        for index, specs in enumerate(names)
    )


class WideSeeder(Seeder):
    """Seeds a wide catalog: tiny images over many repositories, several repositories at once (one Pusher per thread)."""

    def __init__(self, registry_url: str, username: str, password: str, seed: int) -> None:
        super().__init__(Pusher(registry_url, username, password), seed, SCALES["small"])
        self.registry_url, self.username, self.password = registry_url, username, password
        self._local = threading.local()
        self._pushers: list[Pusher] = [self.pusher]
        self._mutex = threading.Lock()
        self.base: dict[str, Any] = {}

    def _pusher(self) -> Pusher:
        pusher = getattr(self._local, "pusher", None)
        if pusher is None:
            pusher = self._local.pusher = Pusher(self.registry_url, self.username, self.password)
            with self._mutex:
                self._pushers.append(pusher)
        return pusher

    def _note(self, info: BlobInfo) -> BlobInfo:
        with self._mutex:
            self.blobs[info.digest] = info.size
        return info

    def push_base(self, repository: str) -> None:
        """The shared layer, pushed once into the first repository (skipped if it is there already)."""
        stream = LayerStream(self.seed, WIDE_BASE)
        data = b"".join(stream)
        if stream.info is None:
            raise PushError("the wide base layer did not generate")
        self.pusher.upload_bytes(repository, data)
        self.base = {
            "digest": stream.info.digest,
            "size": stream.info.size,
            "diff_id": stream.info.diff_id,
            "repo": repository,
        }

    def layer(self, repo: str, name: str) -> BlobInfo:
        pusher = self._pusher()
        base = self.base
        if name == WIDE_BASE.name:
            if (
                not pusher.blob_exists(repo, base["digest"])
                and pusher.mount(repo, base["digest"], base["repo"]) is not None
            ):
                raise PushError(f"the registry would not mount the wide base layer into {repo}")
            return self._note(BlobInfo(base["digest"], base["size"], base["diff_id"]))
        stream = LayerStream(self.seed, LayerSpec(name=name, size=WIDE_LAYER_BYTES, file_max=WIDE_LAYER_BYTES, level=1))
        data = b"".join(stream)
        if stream.info is None:
            raise PushError(f"layer {name} did not generate")
        pusher.upload_bytes(repo, data)
        return self._note(stream.info)

    def platform_image(self, repo: RepoSpec, tag: TagSpec, platform: str) -> dict[str, Any]:
        """One image: the shared base and a tiny layer of its own (named after the tag)."""
        pusher = self._pusher()
        names = [WIDE_BASE.name, f"{repo.name}-{tag.tag}"]
        layers = [self.layer(repo.repository, n) for n in names]
        labels = {"com.nvidia.testbed.image": f"{repo.repository}:{tag.tag}", "com.nvidia.testbed.seed": str(self.seed)}
        config = self._note(
            pusher.upload_bytes(
                repo.repository,
                image_config(platform.split("/")[1], tag.date, [b.diff_id for b in layers], names, labels),
            )
        )
        media_type, body = image_manifest(tag.oci, config, layers)
        digest = pusher.put_manifest(repo.repository, tag.tag, media_type, body)
        return {
            "platform": platform,
            "digest": digest,
            "media_type": media_type,
            "manifest_size": len(body),
            "config_digest": config.digest,
            "layer_digests": [b.digest for b in layers],
            "size": config.size + sum(b.size for b in layers),
        }

    def close(self) -> None:
        for pusher in self._pushers:
            pusher.session.close()


def seed_wide(
    registry_url: str,
    tags: int,
    repositories: int | None = None,
    seed: int = 1,
    username: str = "",
    password: str = "",
    seed_file: Path | None = None,
    workers: int = 8,
) -> list[dict[str, Any]]:
    """Push a wide catalog (see ``wide_repositories``) and return its repository records (seed file schema).

    With seed_file, the records are merged into it (replacing repositories of the same name), so the NGC stand-in
    serving that file lists them. Pushing again is idempotent: the same tags get the same digests.
    """
    specs = wide_repositories(tags, repositories)
    seeder = WideSeeder(registry_url.rstrip("/"), username, password, seed)
    try:
        seeder.push_base(specs[0].repository)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            records = list(pool.map(seeder.repository, specs))
    finally:
        seeder.close()
    if seed_file is not None:
        document = (
            read_json(seed_file)
            if seed_file.exists()
            else {
                "schema_version": SCHEMA_VERSION,
                "seed": seed,
                "scale": "wide",
                "registry": registry_url.split("://", 1)[-1].rstrip("/"),
                "org": ORG,
                "blob_count": 0,
                "total_bytes": 0,
                "repositories": [],
            }
        )
        names = {r["repository"] for r in records}
        document["repositories"] = [r for r in document["repositories"] if r["repository"] not in names] + records
        write_json(seed_file, document, mode=0o644)
    return records


def all_tags(document: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(repository, tag) pairs of a seed document, for tests."""
    return [(repo, tag) for repo in document["repositories"] for tag in repo["tags"]]


def find_tag(document: dict[str, Any], reference: str) -> dict[str, Any]:
    """The tag record for 'nvidia/pytorch:24.01-py3'."""
    for _repo, tag in all_tags(document):
        if tag["reference"] == reference:
            return tag
    raise KeyError(reference)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Seed a registry with NGC-like test images")
    parser.add_argument("--registry", required=True, help="registry URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--out", required=True, type=Path, help="where to write the seed description (JSON)")
    parser.add_argument("--scale", default="small", choices=sorted(SCALES))
    parser.add_argument("--seed", default=1, type=int)
    parser.add_argument("--username", default="$oauthtoken")
    parser.add_argument("--cache", type=Path, help="layer digest cache (JSON) to skip regenerating layers")
    parser.add_argument(
        "--unresolved", type=Path, help="also push the unresolved-tags repository and write its record here"
    )
    parser.add_argument(
        "--wide",
        type=int,
        metavar="N",
        help="instead of the catalog, push N tiny tags (a wide catalog) and merge them into the --out file",
    )
    parser.add_argument(
        "--wide-repos",
        type=int,
        metavar="M",
        help=f"spread --wide over M repositories (default N/{WIDE_TAGS_PER_REPO})",
    )
    args = parser.parse_args(argv)
    password = os.environ.get("TESTBED_REGISTRY_PASSWORD", "")
    if args.wide is not None:
        try:
            records = seed_wide(args.registry, args.wide, args.wide_repos, args.seed, args.username, password, args.out)
        except ValueError as exc:
            parser.error(str(exc))
        print(
            f"seeded {sum(len(r['tags']) for r in records)} tags over {len(records)} repositories into {args.out}",
            file=sys.stderr,
        )
        return 0
    document = seed_registry(args.registry, args.out, args.scale, args.seed, args.username, password, args.cache)
    if args.unresolved is not None:
        write_json(
            args.unresolved,
            seed_unresolved(args.registry, args.seed, args.scale, args.username, password, args.cache),
            mode=0o644,
        )
    print(
        f"seeded {document['blob_count']} blobs, {document['total_bytes']} bytes into {document['registry']}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
