#!/usr/bin/python
# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: ngc_catalog_info
short_description: List NGC container images and tags, with filters, digests and platforms
version_added: 0.1.0
description:
  - Lists the container repositories of an NGC organisation (its teams' included) and
    their tags, keeps those the filters select, and looks each one up in the registry for
    its manifest digest, media type, platforms and compressed size.
  - With O(source=registry) it lists another registry's own catalog and tag lists instead,
    for mirrors and registries that are not NGC.
  - The result is what M(airgap.ngc.ngc_image_mirror) takes as O(airgap.ngc.ngc_image_mirror#module:images).
  - With O(charts) it lists NGC's Helm charts from the Helm repository at O(helm_url) instead (or as well, with
    O(images)), each with every image it deploys with O(values) and O(driver_os), and each image's digest from its own
    registry (see O(upstream_registries)). Nothing is rendered, so no cluster and no C(helm) binary is needed.
  - The module only reads, so check mode runs it fully.
author:
  - airgap.ngc developers (@airgap-ngc)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - airgap.ngc.source
  - airgap.ngc.charts
attributes:
  check_mode:
    support: full
    details: The module only reads; it runs fully in check mode.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
options:
  source:
    description:
      - Where the list of repositories and tags comes from.
      - V(ngc) asks the NGC catalog API at O(api_url), then the registry at O(registry_url) for digests.
      - V(registry) asks the registry at O(registry_url) for its catalog (C(/v2/_catalog)) and tag lists.
      - V(bundle) lists what the bundle in O(source_dir) holds (as M(airgap.ngc.ngc_image_mirror)'s O(airgap.ngc.ngc_image_mirror#module:bundle)
        destination wrote it), with the same filters, so the far side of an air gap selects with the same vocabulary.
        Nothing is contacted; digests, platforms and sizes come from the bundle's manifests, each checked against its digest.
    type: str
    choices: [ngc, registry, bundle]
    default: ngc
  source_dir:
    description:
      - The bundle directory, for O(source=bundle).
    type: path
  verify:
    description:
      - Check the bundle in O(source_dir) against its contents record (C(contents.json)) before it is used, for example
        at the scanning station before the media enter the site. Only with O(source=bundle).
      - Every file the record lists is checked for its size and its sha256 (see O(verify_mode)), and every image of
        C(index.json) is walked down to its layers. The result gets RV(problems), and each image RV(images[].verified).
      - Files under C(blobs/) that the record does not list are V(extra) problems; temporary C(.partial-) files of a
        writer are not. Blobs a delta bundle expects from an earlier bundle are no problem when they are absent.
      - A missing or unreadable C(contents.json) is a problem itself; then every blob file is checked against its
        name and every image must have all its blobs.
      - Problems do not fail the module unless O(fail_on_problems) is set.
    type: bool
    default: false
  verify_mode:
    description:
      - How O(verify) checks the files.
      - V(full) reads every file and compares its sha256 with the record.
      - V(sizes) only compares sizes, which finds truncated and missing files fast but not a changed byte; manifests
        and image configs are still hashed (they are small).
    type: str
    choices: [full, sizes]
    default: full
  fail_on_problems:
    description:
      - Fail when O(verify) finds a problem, with the number of problems and the first paths in the message;
        RV(images) and RV(problems) are returned all the same.
    type: bool
    default: false
  org:
    description:
      - The NGC organisation whose images are listed, in lower case.
    type: str
    default: nvidia
  teams:
    description:
      - Only list the images of these teams of O(org), for example V(clara) for C(nvidia/clara/clara-parabricks).
      - Use an empty string in the list for the organisation's own images (those in no team).
      - By default the organisation's own images and those of all its teams are listed.
      - With O(source=registry) or O(source=bundle) a repository C(<org>/<team>/<name>) is in that team, C(<org>/<name>)
        in none; a repository outside O(org) is in no team of it.
      - A team in which O(org) has no repository at all is named in a warning (nothing can be listed for it); a team
        NGC does not know is an error.
    type: list
    elements: str
  api_url:
    description:
      - The NGC catalog API, an http or https URL (it may have a path, for a proxy); no user name or password in it.
    type: str
    default: https://api.ngc.nvidia.com
  images:
    description:
      - Select images whose name contains one of these strings (C(tensorflow) also selects
        C(nvidia/l4t-tensorflow)); see O(strict_name_match).
      - Names are repository paths such as C(nvidia/pytorch) or C(nvidia/clara/clara-parabricks), of lower-case
        letters, digits, C(.), C(_), C(-) and C(/). Tags are selected with the tag filters, not here.
      - By default every image is selected. An empty item is refused.
    type: list
    elements: str
  charts:
    description:
      - List NGC Helm charts of O(org) (and of O(teams)) from the Helm repository at O(helm_url), in RV(charts).
        Without O(images), images are then not listed.
      - Each item is a name filter with the matching rules of O(images) (C(gpu-operator) or C(nvidia/gpu-operator);
        see O(strict_name_match)), whose versions O(min_version), O(tag_regex), O(tag_exclude_regex) and O(latest)
        select; or one exact version, C(<org>[/<team>]/<name>:<version>) such as V(nvidia/gpu-operator:v26.7.0), which
        must exist.
      - An empty list selects every chart. Without O(teams) only the org's own charts are listed (C(<helm_url>/<org>));
        with O(teams), the charts of each team (V('') for the org's own).
      - Each selected version is fetched (checked against the index's sha256) and read without rendering; its images
        are discovered from its values merged with O(values), subcharts included, and looked up in their registries.
        An image the chart names that its registry does not have fails the module, naming the chart, the image and the
        values path.
    type: list
    elements: str
  values:
    description:
      - The values the site installs the charts with (what C(helm install -f) would be given), merged into each chart's
        own values to decide which images it deploys, for example C(gds.enabled) set to V(true) or C(driver.enabled)
        set to V(false) (see EXAMPLES).
      - A value of another kind than the chart's own (a string where the chart has a mapping, a number where it has a
        string) fails the module, naming the chart and the values path. Only with O(charts).
    type: dict
  driver_os:
    description:
      - The OS of the site's GPU nodes, as the GPU Operator appends it to the driver, GDS and GDRCopy tags at run time,
        for example V([ubuntu22.04, rhel9.6]); each such image is listed once per OS.
      - Needed when a listed GPU Operator chart deploys the driver (the default). Only with O(charts).
    type: list
    elements: str
  strict_name_match:
    description:
      - Select only images whose name equals an item of O(images), as the full path
        (V(nvidia/pytorch)), the path without the organisation (V(clara/clara-parabricks)) or
        the last part (V(pytorch)).
    type: bool
    default: false
  image_regex:
    description:
      - A Python regular expression an image's full path must match (searched anywhere; anchor it with C(^) and C($)).
    type: str
  min_version:
    description:
      - Keep only tags whose leading version is at least this one. Versions are compared as
        integers part by part, so V(18.10) is newer than V(18.9).
      - Calendar versions (V(23.10), as in C(23.10-py3)) and dotted versions (V(12.2.0), as in
        C(12.2.0-base-ubuntu22.04)) are different schemes; only tags of the same scheme as
        O(min_version) are kept, and tags without a version (C(latest)) are dropped.
    type: str
  py_version:
    description:
      - Keep only tags that carry this Python marker as one of their dash-separated parts,
        for example V(py3) (or V(3)) keeps C(24.01-py3) and C(24.01-tf2-py3). Works on its own.
    type: str
  tag_regex:
    description:
      - A Python regular expression tags must match (searched anywhere in the tag).
    type: str
  tag_exclude_regex:
    description:
      - A Python regular expression; tags that match it are dropped.
    type: str
  latest:
    description:
      - Keep only the newest N tags of each image, after every other filter. Newest is by
        version, then by the catalog's update time. At least 1.
    type: int
  include_digests:
    description:
      - Look up each selected tag in the registry for its manifest digest, media type,
        platforms and compressed size. One or more requests per tag.
      - A tag the registry cannot resolve is left out of RV(images) and listed in RV(unresolved) with the reason
        (see O(fail_on_unresolved)).
      - The platform of a single-platform image comes from its index, else from the catalog's architecture variants
        for that very digest, else from its image config, each config read once per run.
    type: bool
    default: true
  fail_on_unresolved:
    description:
      - Fail when a selected tag cannot be resolved in the registry (the catalog lists it but the registry has no
        such tag, its index names a platform manifest the registry does not have, or the registry kept answering
        with an error after O(retries)); RV(images) and RV(unresolved) are returned all the same.
      - By default such tags are only reported in RV(unresolved) and every other tag is listed.
      - Refused credentials (401 or 403), or a registry that does not answer at all, fail the module either way.
      - Needs O(include_digests), which does the lookups.
    type: bool
    default: false
  include_descriptions:
    description:
      - Return each repository's description (its README, in Markdown) with its tags.
    type: bool
    default: false
  parallel:
    description:
      - How many catalog and registry requests run at once, from 1 to 64.
    type: int
    default: 4
  allow_empty:
    description:
      - Succeed when the filters select nothing (no tag listed and none unresolved), with an empty RV(images).
      - By default such a selection fails, naming O(label), where it looked and each filter that is set; a
        misspelt name or pattern would otherwise mirror nothing and succeed, every night.
      - A verified bundle with RV(problems) is judged by O(fail_on_problems) instead.
    type: bool
    default: false
  label:
    description:
      - What to call this selection in the message of an empty selection, for example the name an
        C(ngc_mirror_selections) item of the role has.
    type: str
seealso:
  - module: airgap.ngc.ngc_image_mirror
notes:
  - The NGC API key is exchanged for a short-lived token and renewed as it expires.
requirements:
  - requests
"""

EXAMPLES = r"""
- name: List the three newest Python 3 PyTorch images
  airgap.ngc.ngc_catalog_info:
    api_key: "{{ vault_ngc_api_key }}"
    images: [pytorch]
    strict_name_match: true
    py_version: py3
    latest: 3
  register: pytorch

- name: List the Clara team's images since 4.0, without registry lookups
  airgap.ngc.ngc_catalog_info:
    teams: [clara]
    min_version: "4.0.0"
    include_digests: false

- name: Check a carried bundle at the scanning station, and stop if anything is damaged
  airgap.ngc.ngc_catalog_info:
    source: bundle
    source_dir: /media/usb/ngc-bundle
    verify: true
    fail_on_problems: true
  register: carried

- name: List the newest CUDA tags, and stop if one the catalog lists is missing from the registry
  airgap.ngc.ngc_catalog_info:
    api_key: "{{ vault_ngc_api_key }}"
    images: [cuda]
    latest: 5
    fail_on_unresolved: true
  register: cuda

- name: List the GPU Operator v26.7.0 and every image it deploys on Ubuntu 22.04 and RHEL 9.6 nodes, with GDS on
  airgap.ngc.ngc_catalog_info:
    api_key: "{{ vault_ngc_api_key }}"
    charts: [nvidia/gpu-operator:v26.7.0]
    driver_os: [ubuntu22.04, rhel9.6]
    values:
      gds:
        enabled: true
  register: gpu_operator

- name: List the two newest GPU Operator versions, NFD's image from a registry.k8s.io mirror
  airgap.ngc.ngc_catalog_info:
    api_key: "{{ vault_ngc_api_key }}"
    charts: [gpu-operator]
    strict_name_match: true
    latest: 2
    driver_os: [ubuntu22.04]
    upstream_registries:
      registry.k8s.io:
        url: https://k8s-mirror.example.com

- name: List what a site mirror holds
  airgap.ngc.ngc_catalog_info:
    source: registry
    registry_url: https://registry.example.com
    username: mirror
    api_key: "{{ vault_mirror_password }}"
    images: [nvidia/]
"""

RETURN = r"""
images:
  description: The selected tags, sorted by image name, then oldest to newest version.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: The repository path.
      type: str
      sample: nvidia/pytorch
    tag:
      description: The tag.
      type: str
      sample: 24.01-py3
    reference:
      description: The full reference on the source registry.
      type: str
      sample: nvcr.io/nvidia/pytorch:24.01-py3
    digest:
      description: The digest of the tag's manifest (or index); null without O(include_digests).
      type: str
      sample: sha256:8f9c5a5b1f4e0d1a9fd6f1f0c6a2f1a0e7b3c4d5e6f708192a3b4c5d6e7f8091
    media_type:
      description: The manifest's media type; an index or manifest list for a multi-platform image.
      type: str
      sample: application/vnd.docker.distribution.manifest.v2+json
    signed:
      description:
        - Whether a cosign signature of the tag's digest (C(sha256-<hex>.sig)) is in its repository, as the NGC CLI's
          C(--signed) column says; null when the tag list could not be read. Signature and attestation tags themselves
          are not listed as tags.
      type: bool
      returned: with O(include_digests)
      sample: true
    platforms:
      description: The platforms the tag has images for.
      type: list
      elements: str
      sample: [linux/amd64, linux/arm64]
    size:
      description: The compressed size in bytes of all its blobs (all platforms), or the catalog's size without O(include_digests).
      type: int
      sample: 9123456789
    updated:
      description: When NGC last updated the tag; empty for O(source=registry).
      type: str
      sample: "2024-01-25T18:04:11.000Z"
    description:
      description: The repository's README in Markdown, with O(include_descriptions).
      type: str
      sample: "# PyTorch\n..."
    verified:
      description:
        - With O(verify), whether every file of the image (its manifests, config and layers, and C(index.json)) passed.
        - An image that is not verified is not imported by M(airgap.ngc.ngc_image_mirror); the others are.
      returned: when O(verify) is true
      type: bool
      sample: true
charts:
  description:
    - With O(charts), the selected chart versions, sorted by name, then oldest to newest version.
  returned: when O(charts) is set
  type: list
  elements: dict
  contains:
    name:
      description: The chart, C(<org>[/<team>]/<name>).
      type: str
      sample: nvidia/gpu-operator
    version:
      description: The chart version.
      type: str
      sample: v26.7.0
    app_version:
      description: The chart's C(appVersion).
      type: str
      sample: v26.7.0
    digest:
      description: The sha256 of the chart archive (.tgz), checked against the repository index.
      type: str
      sample: sha256:0b1c2d3e4f5061728394a5b6c7d8e9f00112233445566778899aabbccddeeff0
    size:
      description: The size of the chart archive in bytes.
      type: int
      sample: 112640
    url:
      description: Where the chart archive was fetched from.
      type: str
      sample: https://helm.ngc.nvidia.com/nvidia/charts/gpu-operator-v26.7.0.tgz
    description:
      description: The chart's description, as the index gives it.
      type: str
      sample: NVIDIA GPU Operator creates/configures/manages GPUs atop Kubernetes
    created:
      description: When the chart version was published, as the index gives it.
      type: str
      sample: "2026-07-21T18:04:11.000Z"
    images:
      description:
        - Every image the chart deploys with O(values) and O(driver_os), one item per reference, in the order of the
          chart's values.
      type: list
      elements: dict
      contains:
        reference:
          description: The image as a node pulls it.
          type: str
          sample: nvcr.io/nvidia/driver:595.91.07-ubuntu22.04
        digest:
          description: The digest of its manifest (or index) in its registry; null without O(include_digests).
          type: str
          sample: sha256:8f9c5a5b1f4e0d1a9fd6f1f0c6a2f1a0e7b3c4d5e6f708192a3b4c5d6e7f8091
        from:
          description: The values path that names it (several, comma-separated, when more than one names the same image).
          type: str
          sample: driver
unresolved:
  description:
    - The selected tags the registry could not resolve, sorted like RV(images); empty when every tag was resolved
      or without O(include_digests). They are not in RV(images).
  returned: success
  type: list
  elements: dict
  contains:
    image:
      description: The repository path.
      type: str
      sample: nvidia/pytorch
    tag:
      description: The tag.
      type: str
      sample: 24.03-py3
    reference:
      description: The full reference on the source registry.
      type: str
      sample: nvcr.io/nvidia/pytorch:24.03-py3
    reason:
      description: Why it could not be resolved, one short line.
      type: str
      sample: nvcr.io/nvidia/pytorch:24.03-py3 is listed in the catalog but the registry has no such tag
problems:
  description:
    - With O(verify), what is wrong in the bundle, one item per file, C(contents.json) first, then by path; empty
      for a sound bundle.
  returned: when O(verify) is true
  type: list
  elements: dict
  contains:
    path:
      description: The file, relative to O(source_dir).
      type: str
      sample: blobs/sha256/4f5e6d7c8b9a0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796
    problem:
      description:
        - V(missing) (not there), V(extra) (under C(blobs/) and not in the record), V(corrupt) (its bytes do not hash
          to the record or its name, or it cannot be read), V(size) (its size is not the recorded one).
      type: str
      choices: [missing, extra, corrupt, size]
      sample: corrupt
    detail:
      description: One line on what was found.
      type: str
      sample: hashes to sha256:0d1c..., the contents record says sha256:4f5e...
    images:
      description: The references of the images that need the file (every image for C(index.json)).
      type: list
      elements: str
      sample: [nvcr.io/nvidia/pytorch:24.01-py3]
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.airgap.ngc.plugins.module_utils._catalog.catalog import empty_selection, inspect_catalog
from ansible_collections.airgap.ngc.plugins.module_utils._catalog.charts import (
    check_chart_options,
    empty_chart_selection,
    inspect_charts,
    lists_images,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, redact, shorten
from ansible_collections.airgap.ngc.plugins.module_utils._http.transport import HAS_REQUESTS, REQUESTS_IMPORT_ERROR
from ansible_collections.airgap.ngc.plugins.module_utils._clients.options import (
    chart_source_argument_spec,
    source_argument_spec,
    upstream_secrets,
)
from ansible_collections.airgap.ngc.plugins.module_utils._copy.validate import validate_catalog


def main() -> None:
    argument_spec = source_argument_spec()
    argument_spec.update(chart_source_argument_spec())
    argument_spec.update(
        source=dict(type="str", choices=["ngc", "registry", "bundle"], default="ngc"),
        source_dir=dict(type="path"),
        org=dict(type="str", default="nvidia"),
        teams=dict(type="list", elements="str"),
        api_url=dict(type="str", default="https://api.ngc.nvidia.com"),
        images=dict(type="list", elements="str"),
        strict_name_match=dict(type="bool", default=False),
        image_regex=dict(type="str"),
        min_version=dict(type="str"),
        py_version=dict(type="str"),
        tag_regex=dict(type="str"),
        tag_exclude_regex=dict(type="str"),
        latest=dict(type="int"),
        include_digests=dict(type="bool", default=True),
        include_descriptions=dict(type="bool", default=False),
        parallel=dict(type="int", default=4),
        verify=dict(type="bool", default=False),
        verify_mode=dict(type="str", choices=["full", "sizes"], default="full"),
        fail_on_problems=dict(type="bool", default=False),
        fail_on_unresolved=dict(type="bool", default=False),
        allow_empty=dict(type="bool", default=False),
        label=dict(type="str"),
        charts=dict(type="list", elements="str"),
        values=dict(type="dict"),
        driver_os=dict(type="list", elements="str"),
    )
    module = AnsibleModule(
        argument_spec=argument_spec, supports_check_mode=True, required_if=[("source", "bundle", ("source_dir",))]
    )
    secrets = [module.params.get("api_key")] + upstream_secrets(module.params)
    module.no_log_values.update(secret for secret in secrets if secret)
    try:
        validate_catalog(module.params)
        check_chart_options(module.params)
    except AirgapError as exc:
        module.fail_json(msg=redact(str(exc), secrets))
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib("requests"), exception=REQUESTS_IMPORT_ERROR)
    try:
        result = inspect_catalog(module.params) if lists_images(module.params) else {"images": [], "unresolved": []}
        if module.params["charts"] is not None:
            listed = inspect_charts(module.params)
            result["charts"] = listed["charts"]
            result["warnings"] = (result.get("warnings") or []) + listed["warnings"]
    except AirgapError as exc:
        module.fail_json(msg=redact(str(exc), secrets))
    # A bug must still fail as one line without a secret.
    except Exception as exc:  # pylint: disable=broad-except
        reason = shorten(redact(str(exc), secrets))
        module.fail_json(
            msg=f"ngc_catalog_info failed unexpectedly: {type(exc).__name__}: {reason}",
            exception=traceback.format_exc(),
        )
    for warning in result.pop("warnings", None) or []:
        module.warn(warning)
    problems = result.get("problems") or []
    if module.params["fail_on_problems"] and problems:
        shown = ", ".join(f"{p['path']} ({p['problem']})" for p in problems[:3])
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        module.fail_json(
            msg=f"bundle {module.params['source_dir']} has {len(problems)} problem{'s' if len(problems) > 1 else ''}: "
            f"{shown}{more}",
            changed=False,
            **result,
        )
    unresolved = result.get("unresolved") or []
    if module.params["fail_on_unresolved"] and unresolved:
        shown = "; ".join(f"{u['reference']} ({u['reason']})" for u in unresolved[:3])
        more = f" and {len(unresolved) - 3} more" if len(unresolved) > 3 else ""
        module.fail_json(
            msg=f"{len(unresolved)} selected tag{'s' if len(unresolved) > 1 else ''} could not be resolved in "
            f"the registry (fail_on_unresolved is set): {shown}{more}",
            changed=False,
            **result,
        )
    empty = empty_chart_selection(module.params, result["charts"]) if "charts" in result else None
    if lists_images(module.params) and not empty:
        empty = empty_selection(module.params, result)
    if empty:
        module.fail_json(msg=empty, changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
