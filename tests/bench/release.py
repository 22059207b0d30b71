# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The bench's monthly update (issue 10): one new release of tags sharing base layers, published on the source registry.

An air-gapped site refreshes every month: NGC has meanwhile published new ``YY.MM`` tags that reuse most layers of
last month's (the OS layer, the 1 GiB ``pytorch-base``, ``cuda-12.2-base``) and add a few of their own. ``RELEASE``
is such a release for the catalog of ``tests/testbed/seed.py``: four tags in four repositories, one of them
multi-platform (a Docker manifest list) and one an OCI manifest, with five new layers (about 176 MiB at bench scale)
and new configs; every other layer is one the seeded tags already have.

``publish()`` pushes it with the test bed's own seeder (``Seeder.tag``: generated layers, never pulled; a layer the
registry already holds is not sent again). The same seed and scale give the same digests, so publishing again is a
no-op. The new layers' digests are kept in ``<test bed dir>/bench-release-cache.json`` (the seeder's cache format,
beside its ``seed-cache.json``, which is only read) so that a later run does not regenerate them.

Run by hand against a test bed that is up: ``python tests/bench/release.py --testbed DIR`` prints the new tags.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: make the repository root importable for tests.testbed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.testbed._common import read_json, write_json
from tests.testbed._push import Pusher
from tests.testbed.seed import SCALES, RepoSpec, Seeder, TagSpec

USERNAME = "$oauthtoken"
CACHE_NAME = "bench-release-cache.json"
SEED_CACHE_NAME = "seed-cache.json"

# The new tags, in repositories the seeder made: each reuses the seeded base layers and adds one layer of its own
# (the multi-platform one, one per platform).
RELEASE: tuple[RepoSpec, ...] = (
    RepoSpec(
        "pytorch",
        "PyTorch",
        "PyTorch is a GPU accelerated tensor computational framework.",
        (TagSpec("24.03-py3", "2024-03-20T18:30:00.000Z", ("ubuntu-22.04", "pytorch-base", "pytorch-24.03-py3")),),
    ),
    RepoSpec(
        "tensorflow",
        "TensorFlow",
        "TensorFlow is an open source platform for machine learning.",
        (
            TagSpec(
                "24.03-tf2-py3",
                "2024-03-19T11:00:00.000Z",
                ("ubuntu-22.04", "cuda-12.2-base", "tensorflow-24.03-tf2-py3"),
                oci=True,
            ),
        ),
    ),
    RepoSpec(
        "cuda",
        "CUDA",
        "CUDA is a parallel computing platform and programming model.",
        (
            TagSpec(
                "12.11.0-base-ubuntu22.04",
                "2024-03-05T09:00:00.000Z",
                ("ubuntu-22.04", "cuda-12.11-base"),
                ("linux/amd64", "linux/arm64"),
            ),
        ),
    ),
    RepoSpec(
        "clara-parabricks",
        "Clara Parabricks",
        "GPU-accelerated genomics analysis (a team image).",
        (TagSpec("4.3.0-1", "2024-03-12T12:00:00.000Z", ("ubuntu-22.04", "cuda-12.2-base", "parabricks-4.3.0-1")),),
        team="clara",
    ),
)


def references() -> list[str]:
    """The release's tags as ``nvidia/pytorch:24.03-py3``."""
    return [f"{repo.repository}:{tag.tag}" for repo in RELEASE for tag in repo.tags]


def publish(
    registry_url: str, password: str, seed: int, scale: str, workdir: Path, username: str = USERNAME
) -> list[dict[str, Any]]:
    """Push RELEASE into the registry at registry_url (the test bed's source registry, seeded with ``seed`` and
    ``scale``); return one record per tag, as the seeder writes them into seed.json (reference, digest, platforms,
    config and layer digests, size)."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; use one of {', '.join(SCALES)}")
    seeded_path, own_path = workdir / SEED_CACHE_NAME, workdir / CACHE_NAME
    seeded = read_json(seeded_path) if seeded_path.exists() else {}
    cache = {**seeded, **(read_json(own_path) if own_path.exists() else {})}
    seeder = Seeder(Pusher(registry_url.rstrip("/"), username, password), seed, SCALES[scale], cache)
    try:
        records = [seeder.tag(repo, tag) for repo in RELEASE for tag in repo.tags]
    finally:
        seeder.pusher.session.close()
    write_json(own_path, {key: value for key, value in seeder.cache.items() if key not in seeded}, mode=0o644)
    return records


def publish_on_testbed(info: dict[str, Any]) -> list[dict[str, Any]]:
    """publish() on the source registry of a running test bed, given its testbed.json."""
    return publish(
        info["source_registry_url"], info["api_key"], int(info["seed"]), info["scale"], Path(info["workdir"])
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument(
        "--testbed", required=True, type=Path, help="the directory of a running test bed (testbed.json)"
    )
    args = parser.parse_args(argv)
    info = read_json(args.testbed / "testbed.json")
    for record in publish_on_testbed(info):
        print(json.dumps({"reference": record["reference"], "digest": record["digest"], "size": record["size"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
