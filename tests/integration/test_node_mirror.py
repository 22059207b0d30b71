# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The role airgap.ngc.node_mirror on a node with a real containerd and podman/skopeo, judged by those clients.

ngc_image_mirror copies NGC images from the source registry (the nvcr.io stand-in) into the far-side registry (the
test bed's open one), under a prefix and without one; the role then writes the node's mirror configuration into
temporary directories. The judges: ``ctr images pull --hosts-dir`` of ``nvcr.io/nvidia/...`` and
``registry.k8s.io/...`` names gives the source's digests (the hosts.toml files name only the far-side registry,
their ``server`` is the real nvcr.io, which is out of reach here: what resolves came from the mirror), containerd's
own ``config dump`` reads the config_path the role set in a drop-in, and skopeo and podman with the written
registries.conf file read ``nvcr.io/...`` from the mirror.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.testbed.containerd import Containerd

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "playbooks" / "node_mirror.yml"
# An OCI index (amd64 + arm64) and a Docker schema 2 manifest.
INDEX_REF = "nvidia/cuda:12.2.0-base-ubuntu22.04"
SINGLE_REF = "nvidia/pytorch:24.01-py3"
K8S_REF = "pause:3.10"  # registry.k8s.io/pause:3.10, put on the far side as the mirror of registry.k8s.io holds it

pytestmark = pytest.mark.skipif(
    shutil.which("containerd") is None or os.geteuid() != 0,
    reason="needs root and Debian's containerd (scripts/bootstrap.sh installs it)",
)


def source_digest(testbed: Any, ref: str) -> str:
    for repo in testbed.seed_document()["repositories"]:
        for tag in repo.get("tags") or []:
            if f"{repo['repository']}:{tag['tag']}" == ref:
                return str(tag["digest"])
    raise AssertionError(f"{ref} is not seeded")


def skopeo(*args: str, env: dict[str, str] | None = None) -> bytes:
    proc = subprocess.run(["skopeo", *args], capture_output=True, check=False, env=env)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


@pytest.fixture(scope="module")
def far_side(ansible: Any, testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The images on the far-side registry: under a prefix of this module's own, and without a prefix."""
    base = tmp_path_factory.mktemp("far-side")
    prefix = f"site{os.getpid()}/ngc"
    for number, extra in enumerate([{"prefix": prefix}, {}]):
        run = ansible.module(
            "ngc_image_mirror",
            {
                "registry_url": testbed.source_registry_url,
                "images": [INDEX_REF, SINGLE_REF],
                "registry": {"url": testbed.open_registry_url, **extra},
                "facts_file": str(base / f"mirror{number}.fact"),
            },
            api_key=testbed.api_key,
        )
        assert run.rc == 0, run.stdout + run.stderr
    # registry.k8s.io's pause image, as a mirror of registry.k8s.io keeps it: under the prefix, by its path there.
    skopeo(
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        f"docker://{testbed.open_registry_host}/{prefix}/{INDEX_REF}",
        f"docker://{testbed.open_registry_host}/{prefix}/{K8S_REF}",
    )
    return {"prefix": prefix}


def role(
    ansible: Any, tmp: Path, variables: dict[str, Any], check: bool = False, diff: bool = False
) -> tuple[Any, int]:
    """Run playbooks/node_mirror.yml on this machine (node1), with --diff if asked; the run and its number of changed
    tasks (from the recap)."""
    inventory = tmp / "hosts.yml"
    inventory.write_text(
        f"k8s_nodes:\n  hosts:\n    node1:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n"
    )
    run = ansible.playbook(
        PLAYBOOK,
        {"node_mirror_become": False, **variables},
        check=check,
        env={
            "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
            "ANSIBLE_INVENTORY": str(inventory),
            "ANSIBLE_DIFF_ALWAYS": "true" if diff else "false",
        },
    )
    found = re.search(r"node1\s*:\s*ok=\d+\s+changed=(\d+)", run.stdout)
    return run, int(found.group(1)) if found else -1


def node_vars(tmp: Path, certs: Path, config: Path, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "node_mirror_registry_url": url,
        "node_mirror_containerd_certs_dir": str(certs),
        "node_mirror_containerd_config": str(config),
        "node_mirror_registries_conf_dir": str(tmp / "containers" / "registries.conf.d"),
        "node_mirror_rancher_dir": str(tmp / "rancher"),
        **extra,
    }


def test_containerd_and_podman_pull_nvcr_io_names_from_the_mirror_under_a_prefix(
    ansible: Any, testbed: Any, far_side: dict[str, str], containerd_node: Containerd, tmp_path: Path
) -> None:
    (tmp_path / "containers").mkdir()
    (tmp_path / "rancher" / "k3s").mkdir(parents=True)
    (tmp_path / "rancher" / "k3s" / "registries.yaml").write_text(
        'mirrors:\n  docker.io:\n    endpoint: ["https://hub.site"]\n'
    )
    (tmp_path / "rancher" / "rke2").mkdir()  # an RKE2 node that has no registries.yaml yet
    config = containerd_node.directory / "config.toml"
    before = config.read_text()
    variables = node_vars(
        tmp_path,
        containerd_node.config_path,
        config,
        testbed.open_registry_url + "/",
        node_mirror_prefix=far_side["prefix"],
    )

    check, check_changed = role(ansible, tmp_path, variables, check=True, diff=True)
    assert check.rc == 0, check.stdout + check.stderr
    assert check_changed > 0 and not list(containerd_node.config_path.iterdir()), (
        check.stdout
    )  # check mode writes nothing
    assert (
        not (tmp_path / "containers" / "registries.conf.d").exists()
        and not (tmp_path / "rancher" / "rke2" / "registries.yaml").exists()
    )
    # --diff shows what would be written: each file's lines that name the mirror.
    for line in [
        f'+[host."{testbed.open_registry_url}/v2/{far_side["prefix"]}"]',
        '+server = "https://registry.k8s.io"',
        f'+location = "{testbed.open_registry_host}/{far_side["prefix"]}"',
        f"+    - {testbed.open_registry_url}",
    ]:
        assert line in check.stdout, line

    first, changed = role(ansible, tmp_path, variables)
    assert first.rc == 0, first.stdout + first.stderr
    assert changed > 0
    assert config.read_text() == before  # config_path was set there already: no drop-in, no restart
    assert not (containerd_node.directory / "conf.d").exists()
    assert "docker destination" in first.stdout  # this machine has a Docker engine: the role says what it cannot do
    hosts_toml = (containerd_node.config_path / "nvcr.io" / "hosts.toml").read_text()
    assert 'server = "https://nvcr.io"' in hosts_toml and "override_path = true" in hosts_toml

    # containerd: the nvcr.io and registry.k8s.io names resolve at the far-side registry, with the source's digests.
    expected = {
        f"nvcr.io/{INDEX_REF}": source_digest(testbed, INDEX_REF),
        f"nvcr.io/{SINGLE_REF}": source_digest(testbed, SINGLE_REF),
        f"registry.k8s.io/{K8S_REF}": source_digest(testbed, INDEX_REF),
    }
    for name in expected:
        containerd_node.ctr("images", "pull", "--hosts-dir", str(containerd_node.config_path), name)
    listed = containerd_node.images()
    assert {name: listed.get(name) for name in expected} == expected

    # skopeo and podman read the written registries.conf: nvcr.io/... comes from the mirror.
    conf = tmp_path / "containers" / "registries.conf.d" / "airgap-ngc-nvcr.io.conf"
    assert 'location = "%s/%s"' % (testbed.open_registry_host, far_side["prefix"]) in conf.read_text()
    raw = skopeo("--registries-conf", str(conf), "inspect", "--raw", f"docker://nvcr.io/{SINGLE_REF}")
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == expected[f"nvcr.io/{SINGLE_REF}"]
    store = Path(
        tempfile.mkdtemp(prefix="nm-podman-", dir="/tmp")
    )  # podman refuses a run root longer than 50 characters
    try:
        podman = [
            "podman",
            "--root",
            str(store / "root"),
            "--runroot",
            str(store / "run"),
            "--tmpdir",
            str(store / "tmp"),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ]
        env = dict(os.environ, CONTAINERS_REGISTRIES_CONF=str(conf))
        pulled = subprocess.run(
            [*podman, "pull", "--tls-verify=false", f"nvcr.io/{SINGLE_REF}"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=300,
        )
        assert pulled.returncode == 0, pulled.stderr
        digest = subprocess.run(
            [*podman, "image", "inspect", "--format", "{{.Digest}}", f"nvcr.io/{SINGLE_REF}"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout.strip()
    finally:
        shutil.rmtree(store, ignore_errors=True)
    assert digest == expected[f"nvcr.io/{SINGLE_REF}"]

    # k3s and RKE2: registries.yaml has the role's mirrors (every path rewritten under the prefix, as k3s documents
    # rewrite) beside the operator's own entry, which stays; RKE2's file is new.
    mirror = {"endpoint": [testbed.open_registry_url], "rewrite": {"^(.*)$": f"{far_side['prefix']}/$1"}}
    ours = {"nvcr.io": mirror, "registry.k8s.io": mirror}
    assert yaml.safe_load((tmp_path / "rancher" / "k3s" / "registries.yaml").read_text()) == {
        "mirrors": {"docker.io": {"endpoint": ["https://hub.site"]}, **ours}
    }
    assert yaml.safe_load((tmp_path / "rancher" / "rke2" / "registries.yaml").read_text()) == {"mirrors": ours}

    second, changed = role(ansible, tmp_path, variables)
    assert second.rc == 0 and changed == 0, second.stdout

    # absent removes what the role wrote and nothing else.
    (containerd_node.config_path / "docker.io").mkdir()
    (containerd_node.config_path / "docker.io" / "hosts.toml").write_text('server = "https://registry-1.docker.io"\n')
    gone, changed = role(ansible, tmp_path, {**variables, "node_mirror_state": "absent"})
    assert gone.rc == 0 and changed > 0, gone.stdout
    assert sorted(p.name for p in containerd_node.config_path.iterdir()) == ["docker.io"]
    assert list((tmp_path / "containers" / "registries.conf.d").iterdir()) == []
    assert (
        tmp_path / "rancher" / "k3s" / "registries.yaml"
    ).read_text() == "mirrors:\n  docker.io:\n    endpoint:\n    - https://hub.site\n"
    assert not (tmp_path / "rancher" / "rke2" / "registries.yaml").exists()
    assert config.read_text() == before
    again, changed = role(ansible, tmp_path, {**variables, "node_mirror_state": "absent"})
    assert again.rc == 0 and changed == 0, again.stdout


def dump(config: Path) -> str:
    """``containerd config dump``: the configuration containerd reads from config (its imports merged in)."""
    return subprocess.run(
        ["containerd", "--config", str(config), "config", "dump"], capture_output=True, text=True, check=True
    ).stdout


# What a GPU node's config.toml holds beside the registry (the sandbox image; the NVIDIA container toolkit's runtime):
# setting config_path must keep it.
SANDBOX = '  sandbox_image = "registry.k8s.io/pause:3.10"\n'
RUNTIME = """
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]
    BinaryName = "/usr/bin/nvidia-container-runtime"
"""
CRI = '[plugins."io.containerd.grpc.v1.cri"]\n'


def assert_cri_kept(text: str) -> None:
    assert (
        'sandbox_image = "registry.k8s.io/pause:3.10"' in text
        and 'BinaryName = "/usr/bin/nvidia-container-runtime"' in text
    )


def test_containerd_without_config_path_gets_it_keeps_its_cri_settings_and_pulls_without_a_prefix(
    ansible: Any, testbed: Any, far_side: dict[str, str], containerd_node: Containerd, tmp_path: Path
) -> None:
    del far_side  # the images are on the far side without a prefix too
    config = tmp_path / "containerd" / "config.toml"
    config.parent.mkdir()
    # The node's own config, without config_path (containerd 1.x then reads no certs.d), with a GPU node's CRI settings.
    original = (
        re.sub(
            r'(?m)^\[plugins\."io\.containerd\.grpc\.v1\.cri"\.registry\]\n\s*config_path = .*\n',
            "",
            (containerd_node.directory / "config.toml").read_text(),
        ).replace(CRI, CRI + SANDBOX, 1)
        + RUNTIME
    )
    config.write_text(original)
    assert "config_path" not in original
    assert_cri_kept(dump(config))
    certs = tmp_path / "certs.d"
    variables = node_vars(tmp_path, certs, config, testbed.open_registry_url, node_mirror_registries=["nvcr.io"])

    run, changed = role(ansible, tmp_path, variables)
    assert run.rc == 0 and changed > 0, run.stdout + run.stderr
    assert "restart containerd" in run.stdout  # no systemd here: the handler says so
    # containerd itself reads config_path now, and still the node's runtime and sandbox image.
    assert f'config_path = "{certs}"' in dump(config)
    assert_cri_kept(dump(config))
    hosts_toml = (certs / "nvcr.io" / "hosts.toml").read_text()
    assert "override_path" not in hosts_toml and f'[host."{testbed.open_registry_url}"]' in hosts_toml

    name = f"nvcr.io/{SINGLE_REF}"
    containerd_node.ctr("images", "rm", name, check=False)
    containerd_node.ctr("images", "pull", "--hosts-dir", str(certs), name)
    assert containerd_node.images().get(name) == source_digest(testbed, SINGLE_REF)

    again, changed = role(ansible, tmp_path, variables)
    assert again.rc == 0 and changed == 0, again.stdout
    assert "restart containerd" not in again.stdout

    gone, _changed = role(ansible, tmp_path, {**variables, "node_mirror_state": "absent"})
    assert gone.rc == 0 and "restart containerd" in gone.stdout, gone.stdout
    assert config.read_text() == original and f'config_path = "{certs}"' not in dump(config)
    assert not list(certs.iterdir())


def test_config_path_goes_into_the_registry_table_there_and_is_refused_where_containerd_would_not_read_it(
    ansible: Any, testbed: Any, tmp_path: Path
) -> None:
    """containerd reads mirrors only from its own config_path, and ``containerd config dump`` is the judge: a config_path
    naming another directory is refused before anything is written; a registry table config.toml has already gets the
    setting; registry.mirrors in config.toml (which containerd refuses beside config_path) and an imported file whose
    CRI table would hide config.toml's are refused, each with what to do."""
    config = tmp_path / "containerd" / "config.toml"
    config.parent.mkdir()
    (tmp_path / "containers").mkdir()
    certs = tmp_path / "certs.d"
    variables = node_vars(tmp_path, certs, config, testbed.open_registry_url)
    elsewhere = (
        'version = 2\n\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/other.d"\n'
    )
    mirrors = 'version = 2\n\n[plugins."io.containerd.grpc.v1.cri".registry.mirrors."nvcr.io"]\n  endpoint = ["https://old.site"]\n'
    for text, said in [
        (elsewhere, ['sets config_path = "/etc/containerd/other.d"', "set node_mirror_containerd_certs_dir to it"]),
        (mirrors, ["registry.mirrors], which containerd\nrefuses beside config_path".replace("\n", " "), "hosts.toml"]),
    ]:
        config.write_text(text)
        refused, _changed = role(ansible, tmp_path, variables)
        assert refused.rc != 0 and all(part in refused.stdout for part in said), refused.stdout
        assert (
            config.read_text() == text
            and not certs.exists()
            and not (tmp_path / "containers" / "registries.conf.d").exists()
        )

    table = (
        f'version = 2\n\n{CRI}{SANDBOX}\n[plugins."io.containerd.grpc.v1.cri".registry]  # the operator\'s\n{RUNTIME}'
    )
    config.write_text(table)
    run, changed = role(ansible, tmp_path, variables)
    assert run.rc == 0 and changed > 0 and "restart containerd" in run.stdout, run.stdout
    assert f'config_path = "{certs}"' in dump(config)
    assert_cri_kept(dump(config))
    again, changed = role(ansible, tmp_path, variables)
    assert again.rc == 0 and changed == 0 and "restart containerd" not in again.stdout, again.stdout
    gone, _changed = role(ansible, tmp_path, {**variables, "node_mirror_state": "absent"})
    assert gone.rc == 0 and config.read_text() == table, gone.stdout

    site = tmp_path / "containerd" / "site.toml"
    site.write_text(f"version = 2\n{CRI}{SANDBOX}{RUNTIME}")
    config.write_text(f'version = 2\nimports = ["{site}"]\n')
    hidden, _changed = role(ansible, tmp_path, variables)
    assert (
        hidden.rc != 0
        and "containerd does not read config_path" in hidden.stdout
        and "set config_path in that table" in hidden.stdout
    )
    assert f'config_path = "{certs}"' not in dump(config)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("node_mirror_prefix", 'ngc"]\n[host."http://evil"]'),
        ("node_mirror_registries", ["nvcr.io", 'evil.io"\nserver = "http://x']),
        ("node_mirror_registry_url", 'http://mirror:5000"]\n[x'),
        ("node_mirror_containerd_certs_dir", "/etc/containerd/certs.d/../../evil"),
        ("node_mirror_ca_file", '/etc/ca.pem"\nskip_verify = true'),
        ("node_mirror_registries_conf_dir", "/etc/containers/registries.conf.d\n[[registry]]"),
        ("node_mirror_containerd_config", "/etc/containerd/config.toml extra"),
        ("node_mirror_rancher_dir", "/etc/rancher/'k3s'"),
        ("node_mirror_registries", "nvcr.io"),
        ("node_mirror_state", "gone"),
    ],
)
def test_hostile_values_are_refused_naming_the_variable(
    ansible: Any, testbed: Any, tmp_path: Path, variable: str, value: Any
) -> None:
    (tmp_path / "containers").mkdir()
    variables = node_vars(
        tmp_path, tmp_path / "certs.d", tmp_path / "config.toml", "https://mirror.site:5000", **{variable: value}
    )
    run, _changed = role(ansible, tmp_path, variables)
    assert run.rc != 0
    assert f"{variable} must be" in run.stdout, run.stdout
    assert not (tmp_path / "certs.d").exists() and not (tmp_path / "containers" / "registries.conf.d").exists()
