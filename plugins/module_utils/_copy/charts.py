# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: ``ngc_image_mirror``'s charts: the options read, the source that carries them, the values files written
for the far side, and the result's ``charts``. Not a public API.

A chart travels through the copy engine like an image (``_transports/helm_source``); what is here is what only charts
have: the selections (``charts``), the Helm repository and the upstream registries they need, and after the copies,
per chart, ``<values_dir>/<name>-<version>.values.yaml`` (the site's overrides with every image pointed at the
registry destination) for ``helm install -f``.
"""

from __future__ import annotations

import os
from typing import Any

from ansible_collections.airgap.ngc.plugins.module_utils._clients.helm_repo import DEFAULT_HELM_URL
from ansible_collections.airgap.ngc.plugins.module_utils._clients.options import (
    NGC_REGISTRY_HOST,
    helm_repository_from,
    parse_upstream_registries,
    transport_from,
    upstream_registry_from,
)
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import atomic_write
from ansible_collections.airgap.ngc.plugins.module_utils._transports.chart_repo import dump_yaml
from ansible_collections.airgap.ngc.plugins.module_utils._transports.helm_source import Chart, ChartSources
from ansible_collections.airgap.ngc.plugins.module_utils._transports.sources import RegistrySource
from ansible_collections.airgap.ngc.plugins.module_utils._types.charts import ChartSelection
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import COPY, ImagePlan
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import registry_host


def chart_selections(params: dict[str, Any]) -> list[ChartSelection]:
    """The ``charts`` option: each item a reference or a dict ``{name, version, values, driver_os}``; no duplicates."""
    items = params.get("charts") or []
    if not isinstance(items, list):
        raise ConfigError(
            f"charts must be a list of charts such as nvidia/gpu-operator:v26.7.0, not {type(items).__name__}"
        )
    found: list[ChartSelection] = []
    for position, item in enumerate(items, start=1):
        selection = ChartSelection.from_value(item, f"charts item {position}")
        if any(s.ref == selection.ref for s in found):
            raise ConfigError(f"charts item {position} names {selection.ref} again: give each chart version once")
        found.append(selection)
    return found


def upstream_source(params: dict[str, Any], host: str, upstream: dict[str, Any] | None = None) -> RegistrySource | None:
    """The source of images on registry ``host``: None for nvcr.io and ``registry_url`` (the run's source registry,
    with the NGC key), else the ``upstream_registries`` entry (by default ``https://<host>``, anonymous): the NGC key
    is never sent there."""
    known = upstream if upstream is not None else parse_upstream_registries(params.get("upstream_registries"))
    if host in (NGC_REGISTRY_HOST, registry_host(params["registry_url"])) and host not in known:
        return None
    client = upstream_registry_from(params, host, known)
    return RegistrySource(client, client.base_url)


def charts_source(params: dict[str, Any], base: Any) -> Any:
    """The run's source with the charts it carries (``ChartSources``), or ``base`` if no chart is involved."""
    selections = chart_selections(params)
    carried = base.kind != "registry"
    if not selections and not carried:
        return base
    helm = None
    if not carried:
        transport = transport_from(params)

        def helm(selection: ChartSelection) -> Any:
            return helm_repository_from(params, transport, selection.ref.org, selection.ref.team)

    upstream = parse_upstream_registries(params.get("upstream_registries"))
    return ChartSources(
        base,
        selections,
        helm=helm,
        upstream=lambda host: upstream_source(params, host, upstream),
        helm_host=registry_host(params.get("helm_url") or DEFAULT_HELM_URL),
    )


def _values_path(directory: str, chart: Chart) -> str:
    return os.path.join(directory, f"{chart.name}-{chart.version}.values.yaml")


def chart_outcome(chart: Chart, plans: dict[str, ImagePlan], check_mode: bool) -> tuple[str, str | None]:
    """A chart's status (from its own plan and its images') and, if it failed, why."""
    own = [plans.get(chart.artifact.key)] + [plans.get(image.key) for _found, image in chart.images]
    failed = [p for p in own if p is not None and p.error]
    if failed:
        return "failed", "; ".join(f"{p.source.key}: {p.error}" for p in failed[:3])
    if any(p is not None and p.needs_copy for p in own):
        return ("would copy" if check_mode else "copied"), None
    return "skipped", None


def write_values(
    params: dict[str, Any], source: Any, plans: list[ImagePlan], check_mode: bool
) -> dict[str, tuple[str, bool]]:
    """For each chart that did not fail, with ``values_dir`` and a registry destination:
    ``<values_dir>/<name>-<version>.values.yaml``; returns {chart key: (path, changed)}."""
    directory, spec = params.get("values_dir"), params.get("registry")
    if not directory or not spec or not isinstance(source, ChartSources):
        return {}
    by_key = {plan.source.key: plan for plan in plans}
    registry, prefix = registry_host(spec["url"]), spec.get("prefix")
    written: dict[str, tuple[str, bool]] = {}
    for chart in source.charts:
        status, _why = chart_outcome(chart, by_key, check_mode)
        if status == "failed":
            continue
        selection = chart.selection
        values = source.package_of(chart).site_values(selection.values if selection else {}, registry, prefix)
        data = f"# helm install -f this file: {chart.label} from {registry}\n".encode("utf-8") + dump_yaml(
            values, "a values file"
        )
        path = _values_path(directory, chart)
        try:
            with open(path, "rb") as handle:
                changed = handle.read() != data
        except OSError:
            changed = True
        if changed and not check_mode:
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as exc:
                raise AirgapError(f"cannot create values_dir {directory}: {exc.strerror or exc}") from None
            atomic_write(path, data, what="values file")
        written[chart.artifact.key] = (path, changed)
    return written


def charts_result(
    source: Any, plans: list[ImagePlan], values: dict[str, tuple[str, bool]], check_mode: bool
) -> list[dict[str, Any]]:
    """The result's ``charts``: each chart with its version, artifact, status, values file, and every image it deploys
    with the values path that names it."""
    if not isinstance(source, ChartSources):
        return []
    by_key = {plan.source.key: plan for plan in plans}
    found = []
    for chart in source.charts:
        plan = by_key.get(chart.artifact.key)
        status, why = chart_outcome(chart, by_key, check_mode)
        images = []
        for image, source_image in chart.images:
            own = by_key.get(source_image.key)
            images.append(
                {
                    "reference": source_image.key,
                    "from": image.from_path,
                    "digest": own.digest if own else None,
                    "status": _status(own, check_mode),
                }
            )
        entry = {
            "name": chart.label.rsplit(":", 1)[0],
            "version": chart.version,
            "reference": chart.artifact.key,
            "digest": plan.digest if plan else None,
            "status": status,
            "images": images,
            "destinations": [step.as_dict() for step in plan.steps] if plan else [],
        }
        if why:
            entry["message"] = why
        if chart.artifact.key in values:
            entry["values_file"] = values[chart.artifact.key][0]
        found.append(entry)
    return found


def _status(plan: ImagePlan | None, check_mode: bool) -> str:
    if plan is None:
        return "not planned"
    if plan.error:
        return "failed"
    if any(step.action == COPY for step in plan.steps):
        return "would copy" if check_mode else "copied"
    return "skipped"
