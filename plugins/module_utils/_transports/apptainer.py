# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the Apptainer destination: one SIF file per image, as ``apptainer build x.sif docker://<ref>`` makes it. Not a public API.

Layout ``tree`` puts ``nvidia/pytorch:24.01-py3`` at ``<dir>/nvidia/pytorch:24.01-py3`` (Determined's
``singularity_image_root``), ``flat`` at ``<dir>/pytorch_24.01-py3.sif`` (``apptainer pull``'s name).

The SIF holds what apptainer's build writes for a ``docker://`` source: the definition file
(``bootstrap: docker`` / ``from: <ref>``), the JSON objects ``inspect-metadata.json`` and ``oci-config.json`` in
name order, and the primary system partition: the layers applied (owners and modes as the layers have them when
run as root, ``/dev`` entries left out) with apptainer's base environment and ``/.singularity.d`` on top
(``env/10-docker2singularity.sh`` from Env, ``runscript`` from Entrypoint/Cmd, ``labels.json``, the action and
environment scripts), squashed with gzip. The time of everything added is the image's ``created`` time and the SIF's
id is derived from the image's digest, so one image always makes the same file.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import ImageContent
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import SourceImage
from ansible_collections.airgap.ngc.plugins.module_utils._formats.layers import (
    Rootfs,
    created_time,
    image_config,
    layer_mode,
    squash,
)
from ansible_collections.airgap.ngc.plugins.module_utils._transports.rootfs import FlattenedDestination
from ansible_collections.airgap.ngc.plugins.module_utils._formats.sif import (
    DATA_DEFFILE,
    DATA_GENERIC_JSON,
    SifLayout,
    SifObject,
)

DEFAULT_SQUASH_OPTIONS = "-comp gzip"  # what apptainer build gives mksquashfs
LAYOUTS = ("tree", "flat")
SIF_NAMESPACE = uuid.UUID("5b0c8e52-8f0e-4a53-9d3c-2f6a3c1d7e41")  # ids of the SIF files this collection writes


def sif_path(directory: str, repository: str, tag: str | None, digest: str | None, layout: str) -> str:
    """``tree``: the reference as a path below ``directory``; ``flat``: ``<image>_<tag>.sif``."""
    if layout == "flat":
        name = repository.rsplit("/", 1)[-1]
        return os.path.join(directory, f"{name}_{tag}.sif" if tag else f"{name}_{(digest or '').replace(':', '-')}.sif")
    return os.path.join(
        directory, *repository.split("/")[:-1], repository.rsplit("/", 1)[-1] + (f":{tag}" if tag else f"@{digest}")
    )


# JSON as Go's encoding/json writes it (map keys sorted, <, > and & escaped) ------------------------------------


def go_json(value: Any, indent: str | None = None) -> str:
    text = json.dumps(
        value, sort_keys=True, ensure_ascii=False, indent=indent, separators=None if indent else (",", ":")
    )
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def go_quote(text: str) -> str:
    """Go's ``%q`` of a string (strconv.Quote)."""
    out = ['"']
    short = {
        "\a": "\\a",
        "\b": "\\b",
        "\f": "\\f",
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
        "\v": "\\v",
        "\\": "\\\\",
        '"': '\\"',
    }
    for char in text:
        code = ord(char)
        if char in short:
            out.append(short[char])
        elif char.isprintable() or char == " ":
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out) + '"'


def shell_escape(text: str) -> str:
    """apptainer's shell.Escape: backslash, double quote, backtick and $ escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace("$", "\\$")


def single_quotes(text: str) -> str:
    """apptainer's shell.EscapeSingleQuotes."""
    return text.replace("'", "'\"'\"'")


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


# The texts apptainer's OCI conveyor and build stage write ------------------------------------------------------


def env_script(conf: dict[str, Any]) -> str:
    """``/.singularity.d/env/10-docker2singularity.sh``: the config's Env, each kept if already set at run time but PATH."""
    lines = ["#!/bin/sh\n"]
    for element in _strings(conf.get("Env")):
        name, sep, value = element.partition("=")
        if not sep:
            lines.append(f'export {name}="${{{name}:-}}"\n')
        elif name == "PATH":
            lines.append(f"export {name}={go_quote(shell_escape(value))}\n")
        else:
            lines.append(f'export {name}="${{{name}:-{go_quote(shell_escape(value))}}}"\n')
    return "".join(lines)


RUNSCRIPT_BODY = """
# With SINGULARITY_NO_EVAL set, the entrypoint and command run as an OCI runtime runs them: the arguments are
# not evaluated by the shell.
if [ -n "$SINGULARITY_NO_EVAL" ]; then
    if [ -z "$OCI_CMD" ] && [ -n "$OCI_ENTRYPOINT" ]; then
{prepend_entrypoint}        exec "$@"
    fi
    if [ -n "$OCI_CMD" ] && [ -z "$OCI_ENTRYPOINT" ]; then
        if [ $# -eq 0 ]; then
{prepend_cmd}            :
        fi
        exec "$@"
    fi
    if [ $# -eq 0 ]; then
{prepend_cmd}        :
    fi
{prepend_entrypoint}    exec "$@"
fi

# Otherwise apptainer's own behaviour: entrypoint, command and arguments joined and evaluated by the shell.
CMDLINE_ARGS=""
for arg in "$@"; do
    CMDLINE_ARGS="${CMDLINE_ARGS} \\"$arg\\""
done
if [ $# -gt 0 ]; then
    if [ -n "$OCI_CMD" ] && [ -z "$OCI_ENTRYPOINT" ]; then
        SINGULARITY_OCI_RUN="${CMDLINE_ARGS}"
    else
        SINGULARITY_OCI_RUN="${OCI_ENTRYPOINT} ${CMDLINE_ARGS}"
    fi
else
    SINGULARITY_OCI_RUN="${OCI_ENTRYPOINT} ${OCI_CMD}"
fi
eval "set ${SINGULARITY_OCI_RUN}"
exec "$@"
"""


def runscript(conf: dict[str, Any]) -> str:
    """``/.singularity.d/runscript`` for the config's Entrypoint and Cmd."""
    entrypoint, cmd = _strings(conf.get("Entrypoint")), _strings(conf.get("Cmd"))

    def quoted(words: list[str]) -> str:
        return single_quotes(" ".join(f'"{shell_escape(w)}"' for w in words))

    def prepend(words: list[str], indent: str) -> str:
        return "".join(f"{indent}set -- '{single_quotes(w)}' \"$@\"\n" for w in reversed(words))

    head = f"#!/bin/sh\nOCI_ENTRYPOINT='{quoted(entrypoint)}'\nOCI_CMD='{quoted(cmd)}'\n"
    body = RUNSCRIPT_BODY.replace("{prepend_entrypoint}", prepend(entrypoint, "        "), 1)
    body = body.replace("{prepend_cmd}", prepend(cmd, "            "), 1)
    body = body.replace("{prepend_cmd}", prepend(cmd, "        "), 1).replace(
        "{prepend_entrypoint}", prepend(entrypoint, "    "), 1
    )
    return head + body


def _go_time_label(moment: time.struct_time) -> str:
    """apptainer's build-date label: ``Tuesday_2_January_2024_3:4:5_UTC`` (Go's numbers, not zero padded)."""
    return (
        f"{time.strftime('%A', moment)}_{moment.tm_mday}_{time.strftime('%B', moment)}_{moment.tm_year}_"
        f"{moment.tm_hour}:{moment.tm_min}:{moment.tm_sec}_UTC"
    )


def labels(
    config: dict[str, Any], reference: str, digest: str, architecture: str, variant: str | None
) -> dict[str, str]:
    """``/.singularity.d/labels.json``: the image's labels, then the ones apptainer's build adds."""
    conf = image_config(config)
    found = (
        {k: v for k, v in (conf.get("Labels") or {}).items() if isinstance(v, str)}
        if isinstance(conf.get("Labels"), dict)
        else {}
    )
    moment = time.gmtime(created_time(config))
    found.update(
        {
            "org.label-schema.schema-version": "1.0",
            "org.opencontainers.image.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", moment),
            "org.label-schema.build-date": _go_time_label(moment),
            "org.label-schema.usage.singularity.deffile.bootstrap": "docker",
            "org.label-schema.usage.singularity.deffile.from": reference,
            "org.opencontainers.image.base.name": reference,
            "org.opencontainers.image.base.digest": digest,
            "org.opencontainers.image.architecture": architecture,
            "org.label-schema.build-arch": architecture,
        }
    )
    if variant:
        found["org.opencontainers.image.variant"] = variant
    return found


def deffile(reference: str) -> str:
    """The definition file apptainer records for a ``docker://`` build without one."""
    return f"bootstrap: docker\nfrom: {reference}\n\n"


OCI_CONFIG_FIELDS = (
    "AttachStderr",
    "AttachStdin",
    "AttachStdout",
    "Cmd",
    "Healthcheck",
    "Domainname",
    "Entrypoint",
    "Env",
    "Hostname",
    "Image",
    "Labels",
    "OnBuild",
    "OpenStdin",
    "StdinOnce",
    "Tty",
    "User",
    "Volumes",
    "WorkingDir",
    "ExposedPorts",
    "ArgsEscaped",
    "NetworkDisabled",
    "MacAddress",
    "StopSignal",
    "Shell",
)


def oci_config(conf: dict[str, Any]) -> bytes:
    """``oci-config.json``: the config's fields in the order go-containerregistry's Config has them, empty ones left out."""
    parts = []
    for name in OCI_CONFIG_FIELDS:
        value = conf.get(name)
        if value in (None, False, "", [], {}):
            continue
        if isinstance(value, dict) and name != "Healthcheck":
            value = {k: (v if name == "Labels" else {}) for k, v in value.items()}
        parts.append(f"{json.dumps(name)}:{go_json(value)}")
    return ("{" + ",".join(parts) + "}").encode("utf-8")


# The base environment (apptainer's build/sources base_environment), in scripts of our own words ----------------

_SOURCE_ENV = """for script in /.singularity.d/env/*.sh; do
    if [ -f "$script" ]; then
        . "$script"
    fi
done
"""


def _app_action(script: str, no_app_script: str, fallback_message: str, fallback: str) -> str:
    """The run and test actions: a SCIF app's own script with --app, else the image's, else the fallback."""
    return (
        "#!/bin/sh\n\n"
        + _SOURCE_ENV
        + f"""
app="${{APPTAINER_APPNAME:-}}"
if [ -n "$app" ]; then
    for found in "/scif/apps/$app/scif/{script}" /scif/apps/singularity/scif/{script}; do
        if [ -x "$found" ]; then
            exec "$found" "$@"
        fi
    done
    echo "{no_app_script}: $app"
    exit 1
elif [ -x /.singularity.d/{script} ]; then
    exec /.singularity.d/{script} "$@"
fi
echo "{fallback_message}"
{fallback}
"""
    )


ACTIONS = {
    "exec": "#!/bin/sh\n\n" + _SOURCE_ENV + '\nexec "$@"\n',
    "run": _app_action(
        "runscript",
        "No Apptainer runscript for contained app",
        "No Apptainer runscript found, executing /bin/sh",
        'exec /bin/sh "$@"',
    ),
    "shell": "#!/bin/sh\n\n"
    + _SOURCE_ENV
    + """
if [ -n "$APPTAINER_SHELL" ] && [ -x "$APPTAINER_SHELL" ]; then
    exec $APPTAINER_SHELL "$@"
    echo "ERROR: Failed running shell as defined by '\\$APPTAINER_SHELL'" 1>&2
    exit 1
elif [ -x /bin/bash ]; then
    SHELL=/bin/bash
    PS1="Apptainer $APPTAINER_NAME:\\\\w> "
    export SHELL PS1
    exec /bin/bash --norc "$@"
elif [ -x /bin/sh ]; then
    SHELL=/bin/sh
    export SHELL
    exec /bin/sh "$@"
fi
echo "ERROR: /bin/sh does not exist in container" 1>&2
exit 1
""",
    "start": "#!/bin/sh\n\n# Tell the instance's first process to go on (do not remove).\nkill -CONT 1\n\n"
    + _SOURCE_ENV
    + """
if [ -x /.singularity.d/startscript ]; then
    exec /.singularity.d/startscript
fi
""",
    "test": _app_action(
        "test",
        "No tests for contained app",
        "No test found in container, executing /bin/sh -c true",
        "exec /bin/sh -c true",
    ),
}
ENV_SCRIPTS = {
    "01-base.sh": "#!/bin/sh\n",
    "90-environment.sh": "#!/bin/sh\n# Custom environment shell code should follow\n\n",
    "95-apps.sh": """#!/bin/sh
# The environment of a SCIF app chosen with --app.
app="${APPTAINER_APPNAME:-}"
if [ -n "$app" ]; then
    export APPTAINER_APPNAME
    if [ -d "/scif/apps/$app/" ]; then
        SCIF_APPS=/scif/apps
        SCIF_APPROOT="/scif/apps/$app"
        export SCIF_APPROOT SCIF_APPS
        PATH="/scif/apps/$app:/scif/apps/singularity:$PATH"
        for dir in "/scif/apps/$app/bin" /scif/apps/singularity/bin; do
            if [ -d "$dir" ]; then PATH="$dir:$PATH"; break; fi
        done
        for dir in "/scif/apps/$app/lib" /scif/apps/singularity/lib; do
            if [ -d "$dir" ]; then LD_LIBRARY_PATH="$dir:$LD_LIBRARY_PATH"; export LD_LIBRARY_PATH; break; fi
        done
        for name in 01-base.sh 90-environment.sh; do
            for script in "/scif/apps/$app/scif/env/$name" "/scif/apps/singularity/scif/env/$name"; do
                if [ -f "$script" ]; then . "$script"; break; fi
            done
        done
        export PATH
    else
        echo "Could not locate the container application: $app"
        exit 1
    fi
fi
""",
    "99-base.sh": """#!/bin/sh
# The libraries apptainer binds in, and the prompt.
if [ -z "$LD_LIBRARY_PATH" ]; then
    LD_LIBRARY_PATH=/.singularity.d/libs
else
    LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/.singularity.d/libs"
fi
PS1="Apptainer> "
export LD_LIBRARY_PATH PS1
""",
    "99-runtimevars.sh": """#!/bin/sh
# PATH as asked for at run time (--env PREPEND_PATH, APPEND_PATH, PATH).
if [ -n "${SING_USER_DEFINED_PREPEND_PATH:-}" ]; then
    PATH="${SING_USER_DEFINED_PREPEND_PATH}:${PATH}"
fi
if [ -n "${SING_USER_DEFINED_APPEND_PATH:-}" ]; then
    PATH="${PATH}:${SING_USER_DEFINED_APPEND_PATH}"
fi
if [ -n "${SING_USER_DEFINED_PATH:-}" ]; then
    PATH="${SING_USER_DEFINED_PATH}"
fi
unset SING_USER_DEFINED_PREPEND_PATH SING_USER_DEFINED_APPEND_PATH SING_USER_DEFINED_PATH
export PATH
""",
}
BASE_DIRS = (
    ".singularity.d/libs",
    ".singularity.d/actions",
    ".singularity.d/env",
    "dev",
    "proc",
    "root",
    "var/tmp",
    "tmp",
    "etc",
    "sys",
    "home",
)
BASE_LINKS = {
    "singularity": ".singularity.d/runscript",
    ".run": ".singularity.d/actions/run",
    ".exec": ".singularity.d/actions/exec",
    ".test": ".singularity.d/actions/test",
    ".shell": ".singularity.d/actions/shell",
    "environment": ".singularity.d/env/90-environment.sh",
}
STARTSCRIPT = "#!/bin/sh\n"


def singularity_files(
    config: dict[str, Any], reference: str, digest: str, architecture: str, variant: str | None
) -> dict[str, str]:
    """Every file the build adds, by path in the rootfs (mode 0755 but labels.json, Singularity, hosts, resolv.conf)."""
    conf = image_config(config)
    files = {"etc/hosts": "", "etc/resolv.conf": ""}
    files.update({f".singularity.d/actions/{name}": text for name, text in ACTIONS.items()})
    files.update({f".singularity.d/env/{name}": text for name, text in ENV_SCRIPTS.items()})
    files.update(
        {
            ".singularity.d/env/10-docker2singularity.sh": env_script(conf),
            ".singularity.d/runscript": runscript(conf),
            ".singularity.d/startscript": STARTSCRIPT,
            ".singularity.d/labels.json": go_json(
                labels(config, reference, digest, architecture, variant), indent="\t"
            ),
            ".singularity.d/Singularity": deffile(reference),
        }
    )
    return files


PLAIN_FILES = ("etc/hosts", "etc/resolv.conf", ".singularity.d/labels.json", ".singularity.d/Singularity")


def inspect_metadata(files: dict[str, str], labels_json: dict[str, str]) -> bytes:
    """``inspect-metadata.json``: what ``apptainer inspect --all`` says of the image, as the build stores it."""
    attributes = {
        "environment": {
            f"/.singularity.d/env/{n}": files[f".singularity.d/env/{n}"]
            for n in ("10-docker2singularity.sh", "90-environment.sh")
        },
        "labels": labels_json,
        "runscript": files[".singularity.d/runscript"],
        "deffile": files[".singularity.d/Singularity"],
        "startscript": files[".singularity.d/startscript"],
    }
    order = ("environment", "labels", "runscript", "deffile", "startscript")
    inner = ",".join(f'"{k}":{go_json(attributes[k])}' for k in order)
    return ('{"data":{"attributes":{' + inner + '}},"type":"container"}').encode("utf-8")


# The destination ---------------------------------------------------------------------------------------------


class ApptainerDestination(FlattenedDestination):
    """SIF files under a directory, as a tree of references or flat ``<image>_<tag>.sif`` files."""

    kind = "apptainer"
    default_options = DEFAULT_SQUASH_OPTIONS
    collision_hint = "their flat names are the same: use apptainer.layout=tree"

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.layout = spec.get("layout") or "tree"

    def target(self, image: SourceImage) -> str:
        return sif_path(self.dir, image.ref.repository, image.ref.tag, image.ref.digest, self.layout)

    def record_extra(self) -> dict[str, Any]:
        return {"squash_options": " ".join(self.options), "layout": self.layout}

    def rootfs(self, root: str) -> Rootfs:
        return Rootfs(root, mode=layer_mode, keep_owner=True)

    def _platform(self) -> tuple[str, str | None]:
        parts = self.platform.split("/")
        return parts[1], parts[2] if len(parts) > 2 else None

    def _facts(self, image: SourceImage, content: ImageContent) -> tuple[str, str]:
        return str(image.ref), content.top.digest

    def configure(self, rootfs: Rootfs, config: dict[str, Any], image: SourceImage, content: ImageContent) -> None:
        now = created_time(config)
        reference, digest = self._facts(image, content)
        architecture, variant = self._platform()
        if not os.stat(rootfs.root).st_mode & 0o200:
            os.chmod(rootfs.root, os.stat(rootfs.root).st_mode | 0o200)
        for name in BASE_DIRS:
            parts = name.split("/")
            for i in range(len(parts)):
                rootfs.make_dir(parts[: i + 1], now, replace=False)
        for name, target in BASE_LINKS.items():
            rootfs.add_symlink(name, target, now)
        for name, text in singularity_files(config, reference, digest, architecture, variant).items():
            rootfs.add_file(name, text, now, 0o644 if name in PLAIN_FILES else 0o755)
        rootfs.finish(now)

    def package(
        self, rootfs: Rootfs, temp: str, config: dict[str, Any], image: SourceImage, content: ImageContent, staging: str
    ) -> None:
        """The squashfs at its place in the SIF (mksquashfs -o), then the head written over the first bytes."""
        reference, digest = self._facts(image, content)
        architecture, variant = self._platform()
        files = singularity_files(config, reference, digest, architecture, variant)
        objects = [
            SifObject(DATA_DEFFILE, "", deffile(reference).encode("utf-8")),
            SifObject(
                DATA_GENERIC_JSON,
                "inspect-metadata.json",
                inspect_metadata(files, labels(config, reference, digest, architecture, variant)),
            ),
            SifObject(DATA_GENERIC_JSON, "oci-config.json", oci_config(image_config(config))),
        ]
        ident = uuid.uuid5(SIF_NAMESPACE, f"{digest} {self.platform} {' '.join(self.options)}").bytes
        layout = SifLayout(objects, architecture, created_time(config), ident)
        squash(
            rootfs.root,
            temp,
            self.options,
            created_time(config),
            offset=layout.partition_offset,
            all_root=not rootfs.keep_owner,
            option_name="apptainer.squash_options",
        )
        size = os.stat(temp).st_size - layout.partition_offset
        with open(temp, "r+b") as handle:
            handle.seek(layout.partition_offset)
            if handle.read(4) != b"hsqs":
                raise OSError(f"mksquashfs wrote no squashfs image at offset {layout.partition_offset} of {temp}")
            handle.seek(0)
            handle.write(layout.head(size))
            handle.flush()
            os.fsync(handle.fileno())
