#!/usr/bin/python
# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: ngc_image_mirror
short_description: Copy NGC images to registries, archives and Docker engines, idempotently
version_added: 0.1.0
description:
  - Copies container images from NGC (or any registry) to the destinations given, in one
    pass. Each blob is read once from the source and fed to every destination that lacks it.
  - Talks to registries directly over the registry API; no Docker daemon is needed except
    for the O(docker) destination.
  - Plans first, then acts. The plan compares each image's source digest (one request) with
    each destination and with the facts file, and copies only what is missing. Check mode
    returns the plan and writes nothing.
  - Records what it wrote, per image and destination, in O(facts_file), journaled after each
    image (the file itself is rewritten at the end of the run), so an interrupted run loses
    nothing and the next run completes the work.
author:
  - airgap.ngc developers (@airgap-ngc)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - airgap.ngc.source
  - airgap.ngc.charts
attributes:
  check_mode:
    support: full
    details: Returns the plan (what would be copied where) without writing anything.
  diff_mode:
    support: full
    details: Shows each destination's digest before and after.
  platform:
    support: full
    platforms: posix
options:
  images:
    description:
      - The images to copy. Each item is a reference (V(nvidia/pytorch:24.01-py3), a full
        V(nvcr.io/nvidia/pytorch:24.01-py3), or V(nvidia/pytorch@sha256:...)), or a dict as
        M(airgap.ngc.ngc_catalog_info) returns it (its C(name), C(tag), C(digest) and C(description) are used).
      - A reference without a registry host is looked up on O(registry_url), and so is one whose host is
        O(registry_url)'s. A reference naming another registry is refused before any request (credentials go
        only to O(registry_url)); with O(offline=true) references are matched against the archives as written.
      - Required (at least one) when O(source=registry); every item is checked before anything is copied.
      - Optional with O(source=bundle) or O(source=archive), where by default every image of O(source_dir) is copied.
    type: list
    elements: raw
  charts:
    description:
      - Helm charts to mirror with every image they deploy. Each item is a chart reference
        V(nvidia/gpu-operator:v26.7.0) (C(<org>[/<team>]/<name>[:<version>]); no version means the newest), or a dict
        with C(name), C(version), C(values) (the value overrides the site installs the chart with, which decide which
        components are enabled, so which images are needed), and C(driver_os) (the OS of the site's GPU nodes, for
        example V([ubuntu22.04, rhel9.6]); the GPU Operator appends V(-<os>) to the driver, GDS and GDRCopy tags).
      - The chart is read from NGC's Helm repository (O(helm_url)) and travels as an OCI Helm chart (config
        C(application/vnd.cncf.helm.config.v1+json), its .tgz byte for byte as the one layer). A O(registry)
        destination gets it at C([<prefix>/]charts/<org>[/<team>]/<name>), tagged with the chart version (C(+) written
        as C(_)), so C(helm install oci://<registry>/charts/nvidia/gpu-operator --version v26.7.0) works; a
        O(bundle) carries it; a O(chart_repo) gets the .tgz and C(index.yaml). Archives, engines and HPC caches take
        only the images.
      - The images are found in the chart's values merged with C(values), subcharts included; an image outside
        nvcr.io (the NFD subchart's C(registry.k8s.io/nfd/node-feature-discovery)) is read from its own registry
        (O(upstream_registries)) without the NGC key, and keeps its repository path at the destination.
      - With O(source=bundle), names the charts of the bundle to import with the images they deploy with these
        values; without it, a bundle's import takes every chart it carries.
    type: list
    elements: raw
  values_dir:
    description:
      - Write, per chart, C(<values_dir>/<name>-<version>.values.yaml) for O(registry), the chart's C(values) with
        every image's repository pointed at that registry (under its C(prefix)), NFD included, so that
        C(helm install -f) that file installs the chart from the site's registry with no editing. The result's
        RV(charts) names each chart's C(values_file).
    type: path
  chart_repo:
    description:
      - Write the charts into a classic Helm repository in a directory, each chart's .tgz byte for byte as
        C(<name>-<version>.tgz) and C(index.yaml), each file written whole or not at all, for sites that serve charts
        from a web server and C(helm repo add). Images are not written there.
    type: dict
    suboptions:
      dir:
        description:
          - The repository directory. Created if missing; a run locks it against other runs.
        type: path
        required: true
  registry:
    description:
      - Copy to this registry.
    type: dict
    suboptions:
      url:
        description:
          - The registry, for example V(https://registry.example.com) or V(http://127.0.0.1:5000).
          - Only C(scheme://host[:port]), the scheme included (it says whether the registry speaks TLS, so it is
            never guessed); a path is refused, as the registry API is always at C(/v2/) of the
            host (put a namespace in O(registry.prefix)). A user name or password in the URL is refused too.
          - Without O(registry.prefix) it must not be the source registry O(registry_url).
        type: str
        required: true
      username:
        description: The user name, if the registry wants one. Give O(registry.password) with it.
        type: str
      password:
        description: The password or token for O(registry.username). Never shown or written anywhere.
        type: str
      validate_certs:
        description: Whether to verify the registry's TLS certificate.
        type: bool
        default: true
      ca_path:
        description: A PEM file of certificate authorities to trust for this registry.
        type: path
      prefix:
        description:
          - Put the images under this namespace. By default an image keeps its path
            (C(nvidia/pytorch)); with V(mirror) it becomes C(mirror/nvidia/pytorch).
          - One or more lower-case path components, such as V(mirror) or V(site/ngc).
        type: str
  archive:
    description:
      - Write each image to a tar archive under O(archive.dir).
      - V(docker) writes C(<dir>/<name>/<tag>.tar) for one platform, which C(docker load)
        reads; it also holds an OCI image layout.
      - V(oci) writes C(<dir>/<name>/<tag>.oci.tar), an OCI image layout with all platforms.
      - Archives are written under a hidden name, C(.<tag>.tar.resume), and renamed when complete. A run cut off (a
        kill, or an error once 16 MiB are written) leaves it, and the next run of that image continues it; every
        whole blob in it is hashed and kept, the blob it was cut off in is fetched from its last byte on. The run
        locks O(archive.dir) (another run writing there is refused) and removes temporary files killed runs left in it.
    type: dict
    suboptions:
      dir:
        description: The directory for the archives, an absolute path other than V(/). Created if missing.
        type: path
        required: true
      format:
        description: The archive format.
        type: str
        choices: [docker, oci]
        default: docker
      platform:
        description:
          - The platform a V(docker) archive holds, for a multi-platform image, as C(os/architecture[/variant]).
          - Part of what the archive is, so an archive written for another platform is written again.
        type: str
        default: linux/amd64
  docker:
    description:
      - Put the images into a Docker engine.
    type: dict
    suboptions:
      host:
        description:
          - The engine's address. By default E(DOCKER_HOST), else the local socket.
        type: str
      source:
        description:
          - V(registry) has the engine pull the image, from O(registry.url) if given, else from the source registry.
          - V(archive) has the engine load the docker archive of O(archive.dir), written by
            this run or an earlier one, for nodes that reach no registry.
        type: str
        choices: [registry, archive]
        default: registry
      tag_as:
        description:
          - Also tag the image under these names, so that jobs written for either name find it.
          - A registry host (V(nvcr.io)) tags it as C(<host>/<repository>:<tag>); a prefix ending
            in C(/) (V(registry.site.example/ngc/)) as C(<prefix><repository>:<tag>); a repository
            (V(registry.site.example/pytorch), optionally with C(:tag)) as that repository with the image's tag.
        type: list
        elements: str
  containerd:
    description:
      - Import the images into a node's containerd (on a Kubernetes node the kubelet sees the V(k8s.io) namespace),
        under their source names (C(nvcr.io/nvidia/pytorch:24.01-py3)), with the registry's digests.
      - Each image, every platform with the registry's manifest bytes (a multi-platform index is kept), is written to an
        OCI archive in a temporary directory whose C(index.json) names it, then imported with containerd's own client,
        C(ctr images import --all-platforms), which unpacks the node's platform. C(ctr) ships with containerd and gets no
        credential (the module fetches the content), so no secret is on its command line; a docker archive would give
        other digests (containerd#6307).
      - Idempotent by digest, an image C(ctr images ls) lists at the source's digest is not imported again. A namespace
        that does not exist yet is created.
      - Reads from the source registry, a bundle or archives (O(source)).
    type: dict
    suboptions:
      address:
        description:
          - containerd's socket.
        type: path
        default: /run/containerd/containerd.sock
      namespace:
        description:
          - The containerd namespace; V(k8s.io) is the one the kubelet uses.
        type: str
        default: k8s.io
      name_as:
        description:
          - The registry host the pods name the images by, when they are read from another registry (the site registry,
            or a bundle or archives exported from it). With V(nvcr.io), the site's
            C(registry.site.example/nvidia/pytorch:24.01-py3) is imported as C(nvcr.io/nvidia/pytorch:24.01-py3), at the
            same digest.
          - By default an image keeps its source reference.
        type: str
      strip_prefix:
        description:
          - With O(containerd.name_as), the path prefix the images have on the registry they are read from (the
            O(registry.prefix) they were mirrored under), left out of the names. With V(ngc),
            C(registry.site.example/ngc/nvidia/pytorch:24.01-py3) becomes C(nvcr.io/nvidia/pytorch:24.01-py3).
          - An image that is not under the prefix fails, named.
        type: str
  source:
    description:
      - Where the images are read from. V(registry) is O(registry_url) (the connected side).
      - V(bundle) is a bundle in O(source_dir), as the O(bundle) destination writes it and an operator carried it
        across the air gap; V(archive) the per-tag archives in O(source_dir) (O(archive) of an earlier run). Nothing
        is read from a registry then; every blob is checked against its digest as it is read, and an image with a
        missing or damaged blob fails, naming the digest and the file, while the others are copied.
      - Carried media are untrusted input. Every path a bundle names must be a name inside it, and every file read is
        a regular file reached without following a symbolic link; C(index.json) and C(contents.json) are checked
        against their schemas and against each other (a name whose entry is wrong, given twice, or pointing at another
        manifest than C(contents.json) records fails, naming the file and key). A bundle an export still writes is
        refused, naming the writer. Manifests larger than 4 MiB are not read. A destination directory inside
        O(source_dir) is refused.
      - From carried media, O(images) names references as they were exported, with or without their registry host
        (V(nvidia/pytorch:24.01-py3) or V(nvcr.io/nvidia/pytorch:24.01-py3)); without O(images) every image there is copied.
      - A V(docker) archive holds one platform of a multi-platform image, so a registry gets that platform's manifest,
        whose digest is not the original's (the image's C(note) says so). Bundles and V(oci) archives keep every digest.
    type: str
    choices: [registry, bundle, archive]
    default: registry
  source_dir:
    description:
      - The bundle directory (O(source=bundle)) or the directory of per-tag archives (O(source=archive)).
    type: path
  inventory_file:
    description:
      - On the far side, after an import from a bundle, add what the imported images brought (their digests and
        every blob they need) to this JSON file. Carried back to the connected side and given in O(bundle.since),
        it tells a delta bundle what the far side has, for sites where an earlier bundle was lost or not imported.
      - A file already there must be such an inventory (or empty); any other file is refused, never overwritten. It
        may not be O(facts_file) (nor its lock or journal) or O(progress_file).
    type: path
  bundle:
    description:
      - Write the images into a bundle, one OCI image layout directory (C(oci-layout), C(index.json),
        C(blobs/sha256/...)) that holds every image once and every blob once, for carrying across the air gap.
      - Each image is named in C(index.json) by the C(org.opencontainers.image.ref.name) annotation with its full
        source reference (V(nvcr.io/nvidia/pytorch:24.01-py3)); manifests and indexes are kept byte for byte, so every
        digest is the source's (O(platforms) selects platforms, as for O(registry)).
      - Beside them, C(contents.json) records every file's size and sha256, the images with their digests, when and
        from where, so that the far side can check a carried copy.
      - Blobs are written under temporary names and renamed once checked; C(index.json) and C(contents.json) are
        replaced atomically after each image, so a run killed at any moment leaves a valid layout of the images it
        lists, and the next run adds only what is missing.
      - skopeo (C(oci:DIR:REFERENCE)) reads the OCI-typed images of a bundle by name (checked with skopeo 1.9); it
        finds no Docker-typed ones (schema 2 manifests and manifest lists) by name, so import those with this module
        and O(source=bundle). Tools documented to read any media type from an OCI layout (regclient's C(ocidir://),
        oras) were not checked here.
    type: dict
    suboptions:
      dir:
        description:
          - The bundle directory. Created if missing; a run locks it against other runs.
          - Its name (V(ngc-2026-11) for C(/media/transfer/ngc-2026-11)) is how later delta bundles refer to it.
        type: path
        required: true
      since:
        description:
          - Write a delta bundle, relative to what the far side already has. Only the blobs it lacks are written;
            C(index.json) and C(contents.json) still name every image and every blob the images need, and
            C(contents.json) lists the blobs left out under C(expected), each with the earlier bundle that carried it
            (C(delta) is V(true)). A delta bundle is a valid OCI layout for what it holds but B(not complete on its own).
            Its import (O(source=bundle)) reads each blob it left out from the earlier bundles beside it (the other
            bundles of the parent directory of O(source_dir), the one that carried it first), else from O(registry) where
            an earlier import put it, checked against its digest as it is read, for every destination; an image whose
            blob is in none of them fails, naming the digest and that bundle, while a destination that does not need the
            blob (a registry that mounts it) still gets the image.
          - V(last) takes what the far side has from this collection's own record of earlier exports in O(facts_file)
            (every earlier bundle written with it), so nothing needs to be carried back.
          - A list of paths takes it from earlier bundles' directories or their C(contents.json) files, for example
            when an earlier bundle was lost or not imported and the site says which ones arrived.
          - Manifests are always written, so every image of the index can be read from the bundle itself.
        type: raw
      volume_size:
        description:
          - Split the bundle into numbered volume directories (C(vol-0001), C(vol-0002), ...) none larger than this,
            for media with a file or volume size limit (V(4GiB) for FAT32, a data diode's limit), for example V(4GiB),
            V(700MiB) or a number of bytes. A blob larger than a volume is split into parts, re-joined and
            digest-checked on import.
          - C(vol-0001) holds C(index.json) and C(contents.json) (which records the volume of every file). The import
            (O(source_dir)) takes the volumes in any order, copied into one directory or on several mount points under
            it (for example C(/media) with C(/media/usb1/vol-0001) and C(/media/usb2/vol-0002)), and names a missing volume.
          - Only for a new bundle directory (a bundle written without volumes stays so).
        type: str
  enroot:
    description:
      - Write each image as enroot imports it, C(<dir>/<name>.sqsh), the name with C(/) and C(:) replaced by C(+) (V(nvidia+pytorch+24.01-py3.sqsh)),
        for C(enroot create) and Slurm's pyxis on GPU nodes. The image of O(enroot.platform) is used (linux/amd64 by default).
      - The layers are applied in order with OCI whiteouts, C(/dev) entries left out; C(/etc/rc), C(/etc/rc.local),
        C(/etc/environment) and C(/etc/fstab) are written from the image config as enroot's C(docker::configure) writes
        them; C(mksquashfs) (from squashfs-tools, needed on the host) makes the file with C(-all-root).
      - Blobs and the unpacked root filesystem are staged in a temporary directory under O(enroot.dir), removed at
        the end, so it needs free space for both. The file is written under a temporary name and renamed when
        complete; the run locks O(enroot.dir) against other runs.
      - A blob of 16 MiB or more is received into C(.enroot-sha256-<hex>.resume) in O(enroot.dir) until it is whole;
        a run cut off in it leaves the file, and the next run hashes those bytes and fetches only the rest.
      - Files of layers are created as the module's user; device nodes outside C(/dev) need root.
    type: dict
    suboptions:
      dir:
        description: The directory for the C(.sqsh) files, an absolute path other than V(/). Created if missing.
        type: path
        required: true
      squash_options:
        description:
          - Options for C(mksquashfs), split as a shell would (enroot's C(ENROOT_SQUASH_OPTIONS)).
          - Only options that shape compression and layout are accepted, each with an argument of its shape
            (C(-comp) V(gzip), V(lzo), V(lz4), V(xz), V(zstd) or V(lzma), C(-b), C(-noI), C(-noId), C(-noD), C(-noF),
            C(-noX), C(-no-xattrs), C(-xattrs), C(-no-fragments), C(-always-use-fragments), C(-no-duplicates),
            C(-no-sparse), C(-tailends), C(-no-exports), C(-no-hardlinks), the compressor's C(-X) options, C(-processors),
            C(-mem), C(-throttle), C(-limit)); an option that reads a file, runs a command or changes what the image
            holds (C(-p), C(-pf), C(-sort), C(-ef), C(-e), C(-tar), C(-action), C(-force-uid), ...) is refused.
          - A file written with other options is written again.
        type: str
        default: "-comp lzo -noD"
      platform:
        description:
          - The platform of a multi-platform image to write, V(linux/amd64) or V(linux/arm64) for Grace nodes
            (C(os/architecture[/variant])). A file written for another platform is written again.
          - An image that lacks the platform (a single-platform image of another, or an index without it) fails,
            naming the platforms it has; it is never written labelled as another platform.
        type: str
        default: linux/amd64
  apptainer:
    description:
      - Write each image as one SIF file for Apptainer (Singularity), as C(apptainer build x.sif docker://<ref>) makes it,
        for C(apptainer run) on GPU nodes and Determined's C(singularity_image_root). Neither apptainer nor a registry
        is needed on the host; C(mksquashfs) (squashfs-tools) is.
      - The SIF holds the definition file (C(bootstrap) V(docker), C(from) the reference), the JSON objects
        C(inspect-metadata.json) and C(oci-config.json), and the primary system partition for the platform's
        architecture. The partition holds the layers applied with OCI whiteouts (C(/dev) entries left out; owners
        kept when the module runs as root, else all files are root's as in a build by a user) and apptainer's
        C(/.singularity.d) (C(env/10-docker2singularity.sh) from the config's C(Env), C(runscript) from
        C(Entrypoint) and C(Cmd), C(labels.json), the action and environment scripts).
      - Staged under O(apptainer.dir) like O(enroot); written under a temporary name and renamed when complete. A big
        blob a run was cut off in is continued by the next from C(.apptainer-sha256-<hex>.resume), as for O(enroot).
    type: dict
    suboptions:
      dir:
        description: The directory for the SIF files, an absolute path other than V(/). Created if missing.
        type: path
        required: true
      layout:
        description:
          - V(tree) writes C(nvidia/pytorch:24.01-py3) to C(<dir>/nvidia/pytorch:24.01-py3), the reference as a path
            (Determined's C(singularity_image_root)).
          - V(flat) writes it to C(<dir>/pytorch_24.01-py3.sif), the name C(apptainer pull) gives; two selected
            images with the same last name component and tag fail (use V(tree)).
        type: str
        choices: [tree, flat]
        default: tree
      squash_options:
        description:
          - Options for C(mksquashfs), split as a shell would; the same options as O(enroot.squash_options) are
            accepted. A file written with other options is written again.
        type: str
        default: "-comp gzip"
      platform:
        description:
          - The platform of a multi-platform image to write (C(os/architecture[/variant])), V(linux/arm64) for Grace
            nodes. Its architecture is the SIF's. An image that lacks it fails, as for O(enroot.platform).
        type: str
        default: linux/amd64
  prune:
    description:
      - Remove from this task's destinations what this collection wrote there earlier (the records of O(facts_file))
        and this run does not select any more (nor O(keep) keeps) - registry tags (the manifest is deleted by
        digest, only where the tag still points at the digest written and no selected image shares it; the
        registry's garbage collection then frees the blobs), per-tag archives, images of a bundle (and the blobs no
        other image of it needs), enroot and SIF files, and names loaded into a Docker engine (not while a container
        uses the image).
      - Never what it did not write, what another image of the run wants, a tag re-pushed or a file replaced since
        (those records are forgotten and left alone). Nothing is removed when a copy of the run failed.
      - Give each selection its own O(facts_file) - all its records are candidates. Check mode and C(--diff) list
        every removal first; the result's RV(pruned) says what was (or would be) removed and RV(bytes_freed) the bytes.
    type: bool
    default: false
  keep:
    description:
      - Keep only the newest N tags of each repository (by version order, as C(latest) in M(airgap.ngc.ngc_catalog_info)),
        counting the selected images and those in O(facts_file) - older selected tags are not copied, and with O(prune)
        older recorded ones are removed. For selections made without the catalog.
    type: int
  offline:
    description:
      - Contact no registry at all; take each image's digest from its archive under
        O(archive.dir), written by an earlier run. For GPU nodes that reach no registry
        and load images from shared storage.
      - Needs O(archive) (where the archives are) and O(docker) with O(docker.source=archive);
        no archive is written in this mode.
    type: bool
    default: false
  platforms:
    description:
      - Which platforms of a multi-platform image to copy to O(registry), for example V(linux/amd64) or
        V(linux/arm64/v8) (C(os/architecture[/variant])). Needs O(registry); archives use O(archive.platform).
      - By default all, and the index is copied byte for byte so its digest is unchanged.
    type: list
    elements: str
  save_readme:
    description:
      - Write C(<dir>/<name>/README.md) next to the archives from the image's NGC description
        (the C(description) of an O(images) dict). Needs O(archive).
    type: bool
    default: false
  facts_file:
    description:
      - The JSON file recording what was mirrored where. Ansible's M(ansible.builtin.setup)
        shows it as C(ansible_local.ngc_mirror) when it is in C(/etc/ansible/facts.d).
      - A lock next to it (C(<facts_file>.lock)) keeps a second run from starting meanwhile.
      - Each image is recorded in a journal beside it (C(.<name>.journal), one line per record, synced at once) and
        the file is rewritten whole at the end of the run, so C(ansible_local) always reads one JSON document (during
        a run, as of the last run) and recording costs the same for the thousandth image as for the first.
      - A blob of 16 MiB or more being uploaded to O(registry) has its upload session recorded in C(.<name>.uploads)
        beside it (mode 0600; the registry's upload URL, never credentials), and the pieces not yet taken by the
        registry in C(.<name>.upload-<key>.<offset>) (about 32 MiB each, at most two per blob, one sent while
        the next is gathered). A run cut off leaves them and the next run asks the registry where the session stands
        and sends only the rest. They are removed when the blob is committed.
      - An absolute path.
    type: path
    default: /etc/ansible/facts.d/ngc_mirror.fact
  progress_file:
    description:
      - Keep a small JSON document of the run's progress here (C(state) V(planning) while the images are
        resolved, then V(running), V(done) or V(failed); current image, images and bytes done and total,
        rate, time left), rewritten at most once a second from the start of the run. For runs under
        C(async), a timer or AWX.
      - An absolute path in an existing directory, other than O(facts_file). A file already there must be
        a progress file of an earlier run (or empty); any other file is refused rather than overwritten.
    type: path
  parallel:
    description:
      - How many blobs are transferred at once, from 1 to 64.
    type: int
    default: 4
  parallel_images:
    description:
      - How many images are planned and copied at once, from 1 to 64. Planning (source digests, tokens, each
        destination's look - HEAD requests, files, engine) and manifests dominate a run over many tags on a distant
        registry. Images that share a blob are copied one after another (the blob is read once), O(parallel)
        bounds the blob reads of all images together, and each destination writes one image at a time.
      - The plan and the result list the images in their order whatever this is.
    type: int
    default: 8
  force:
    description:
      - Copy even what the destinations already hold.
    type: bool
    default: false
  signatures:
    description:
      - Copy with each image the signatures and attestations of its digest, digests unchanged - cosign's tags
        C(sha256-<hex>.sig), C(.att) and C(.sbom), and the OCI 1.1 referrers (from the registry's referrers API, else
        from the referrers tag schema's index C(sha256-<hex>)), and theirs in turn. Referrers without a tag are copied
        by digest. They go to O(registry) and O(bundle), and come out of a bundle again on the far side.
      - A destination registry without the referrers API (CNCF distribution 2.x) gets the referrers tag schema - the
        index C(sha256-<hex>) that lists them, kept up to date as they are pushed.
      - They are listed in RV(images) like the images. With O(platforms), the index a registry gets is a new one that
        no signature names.
    type: bool
    default: true
  signatures_relist_after:
    description:
      - How long, in seconds, what a run listed as travelling with an image is trusted by the next runs, kept in
        O(facts_file) with the image. While it is younger than this and the image's digest is unchanged, a run reads
        no tag list and no referrers for the image - it only looks again at each signature tag it already knows (a
        signature added to a known C(.sig) tag is found at once). A new or changed image, O(force), and a listing that
        has aged are always listed afresh.
      - So a signature or attestation first pushed for an image after it was mirrored arrives with the first run after
        the listing has aged. The default lists again on every run an hour or more after the last listing (a daily
        timer lists every time) and saves a repository's tag list on runs closer together.
      - V(0) lists every image on every run.
    type: int
    default: 3600
  fail_on_error:
    description:
      - Fail the task at the end if an image could not be copied. A failed image never stops
        the others either way.
    type: bool
    default: true
seealso:
  - module: airgap.ngc.ngc_catalog_info
requirements:
  - requests
  - docker (the Python SDK), for O(docker) only
"""

EXAMPLES = r"""
- name: Choose what to mirror
  airgap.ngc.ngc_catalog_info:
    api_key: "{{ vault_ngc_api_key }}"
    images: [pytorch]
    strict_name_match: true
    latest: 2
  register: selection

- name: Mirror it into the site registry and into archives for the air gap
  airgap.ngc.ngc_image_mirror:
    api_key: "{{ vault_ngc_api_key }}"
    images: "{{ selection.images }}"
    registry:
      url: https://registry.site.example
      username: mirror
      password: "{{ vault_registry_password }}"
    archive:
      dir: /srv/ngc-archives
    save_readme: true
    progress_file: /var/lib/ngc-mirror/progress.json

- name: Copy one image by digest, amd64 only
  airgap.ngc.ngc_image_mirror:
    images:
      - nvcr.io/nvidia/cuda@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    platforms: [linux/amd64]
    registry:
      url: https://registry.site.example
      prefix: ngc

- name: Pre-load a Kubernetes node with no registry in reach from a carried bundle (into containerd's k8s.io namespace)
  airgap.ngc.ngc_image_mirror:
    source: bundle
    source_dir: /media/usb/ngc-bundle
    images:
      - nvcr.io/nvidia/pytorch:24.01-py3
    containerd:
      address: /run/containerd/containerd.sock
      namespace: k8s.io

- name: Pre-load a Kubernetes node from the site registry, under the names its pods use (nvcr.io/nvidia/...)
  airgap.ngc.ngc_image_mirror:
    registry_url: https://registry.site.example:5000
    images:
      - ngc/nvidia/pytorch:24.01-py3
      - ngc/nvidia/cuda:12.2.0-base-ubuntu22.04
    containerd:
      name_as: nvcr.io
      strip_prefix: ngc

- name: The GPU Operator as the site installs it (the same selection on both sides of the air gap)
  ansible.builtin.set_fact:
    gpu_stack:
      - name: nvidia/gpu-operator
        version: v26.7.0
        driver_os: [ubuntu22.04, rhel9.6]
        values:
          gds:
            enabled: true

- name: Connected side, export it and every image it deploys on those node OSes into a bundle
  airgap.ngc.ngc_image_mirror:
    api_key: "{{ ngc_api_key }}"
    charts: "{{ gpu_stack }}"
    bundle:
      dir: /media/transfer/gpu-stack-2026-12

- name: Far side, import it into the site registry and a chart repository, with the values file for helm install -f
  airgap.ngc.ngc_image_mirror:
    source: bundle
    source_dir: /media/transfer/gpu-stack-2026-12
    charts: "{{ gpu_stack }}"
    registry:
      url: https://registry.site.example
    chart_repo:
      dir: /srv/www/charts
    values_dir: /srv/values
"""

RETURN = r"""
images:
  description: One entry per image, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    reference:
      description: The source reference.
      type: str
      sample: nvcr.io/nvidia/pytorch:24.01-py3
    digest:
      description: The source manifest (or index) digest.
      type: str
      sample: sha256:8f9c5a5b1f4e0d1a9fd6f1f0c6a2f1a0e7b3c4d5e6f708192a3b4c5d6e7f8091
    status:
      description: V(copied) if anything was written, V(skipped) if every destination was up to date, V(failed) otherwise.
      type: str
      sample: copied
    message:
      description: Why the image was skipped or failed.
      type: str
      sample: up to date
    destinations:
      description:
        - What each destination held before and holds after (C(kind), C(target), C(action), C(reason), C(before), C(after)).
        - "For a delta bundle (O(bundle.since)) whose image needs blobs of earlier bundles, also C(relies_on), those
          bundles, and C(carries_blobs), false when every blob of the image is in them (the image is only named in this
          bundle)."
      type: list
      elements: dict
      sample:
        - {kind: registry, target: "registry.site.example/nvidia/pytorch:24.01-py3", action: copy, before: null, after: "sha256:8f9c..."}
charts:
  description:
    - One entry per chart of O(charts) (or, importing a bundle without O(charts), per chart it carries). The chart and
      its images are also in RV(images), like any image.
  returned: always
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
    reference:
      description: The chart's key in the facts file and bundles (its OCI path C(charts/...) and tag).
      type: str
      sample: helm.ngc.nvidia.com/charts/nvidia/gpu-operator:v26.7.0
    digest:
      description: The digest of the chart's OCI manifest, the same on every run and both sides of the air gap.
      type: str
    status:
      description: V(copied), V(would copy), V(skipped), or V(failed) if the chart or one of its images failed.
      type: str
    message:
      description: Why the chart failed (the images that failed, each with the values path that names it).
      type: str
    values_file:
      description: With O(values_dir) and O(registry), the values file written (or, in check mode, to be written).
      type: str
      sample: /srv/values/gpu-operator-v26.7.0.values.yaml
    images:
      description: Every image the chart deploys with its values, each with its C(reference), C(digest), C(from) (the
        values path that names it, such as V(driver) or V(node-feature-discovery.image)) and C(status).
      type: list
      elements: dict
      sample:
        - {reference: "nvcr.io/nvidia/driver:595.91.07-ubuntu22.04", from: driver, digest: "sha256:...", status: copied}
    destinations:
      description: What each destination held before and holds after, as for RV(images).
      type: list
      elements: dict
bytes_transferred:
  description: Bytes read from the source and written to destinations.
  returned: always
  type: int
  sample: 9123456789
bytes_reused:
  description: Bytes not transferred because a destination had them, they were mounted, or they were shared between tags.
  returned: always
  type: int
  sample: 4123456789
failed_images:
  description: The references of images that could not be copied.
  returned: always
  type: list
  elements: str
  sample: []
pruned:
  description: With O(prune), every record of this task's destinations the run does not want, and what became of it.
  returned: when prune is true
  type: list
  elements: dict
  contains:
    image:
      description: "The image's key in the facts file."
      type: str
    kind:
      description: "The destination kind."
      type: str
    target:
      description: "The tag, file or bundle entry."
      type: str
    action:
      description: "V(removed), V(would remove) (check mode), V(kept) (with the reason) or V(already gone)."
      type: str
    reason:
      description: "What was done or why not."
      type: str
    bytes:
      description: "Bytes freed (for a registry once it collects garbage)."
      type: int
  sample: [{image: nvcr.io/nvidia/pytorch:24.01-py3, kind: archive, target: /srv/ngc/nvidia/pytorch/24.01-py3.tar, action: removed,
            reason: removed /srv/ngc/nvidia/pytorch/24.01-py3.tar, bytes: 9123456789}]
bytes_freed:
  description: With O(prune), the bytes the removals free (or would free in check mode).
  returned: when prune is true
  type: int
  sample: 9123456789
space:
  description:
    - The disk space the run's copies need, one entry per filesystem written to (archives, bundle, enroot and SIF
      files), checked against its free space before anything is written; a run that cannot fit fails naming the
      directories, the need and what is free, in check mode too.
    - For archives and bundles the need comes from the manifests' blob sizes (a bundle counts only blobs it lacks);
      for enroot and SIF files it is an estimate from the layers' compressed sizes (twice that for the file, as
      much again while it is written).
  returned: always
  type: list
  elements: dict
  contains:
    dirs:
      description: "The destination directories on this filesystem."
      type: list
      elements: str
    options:
      description: "Their options (V(archive.dir), V(bundle.dir), ...)."
      type: list
      elements: str
    images:
      description: "Image writes counted."
      type: int
    needed:
      description: "Bytes needed."
      type: int
    margin:
      description: "Bytes kept free beyond the need (2% of the filesystem, at most 1 GiB)."
      type: int
    free:
      description: "Bytes free for the module's user."
      type: int
    enough:
      description: "Whether needed plus margin fit in free."
      type: bool
  sample: [{dirs: [/srv/ngc-archives], options: [archive.dir], images: 3, needed: 30123456789, margin: 1073741824,
            free: 912345678901, enough: true}]
diff:
  description:
    - Before and after digests per destination, with C(--diff).
    - With O(prune) and something to remove, a list of that and RV(prune_diff).
  returned: when diff mode is on
  type: raw
prune_diff:
  description: With O(prune) and C(--diff), the removals as a text diff, one line each (its kind and target).
  returned: when prune and diff mode are on and something is removed
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.airgap.ngc.plugins.module_utils._clients.docker_engine import DockerSdkMissingError
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError
from ansible_collections.airgap.ngc.plugins.module_utils._http.transport import HAS_REQUESTS, REQUESTS_IMPORT_ERROR
from ansible_collections.airgap.ngc.plugins.module_utils._copy.copier import Mirror
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import failure_summary
from ansible_collections.airgap.ngc.plugins.module_utils._clients.options import (
    chart_source_argument_spec,
    source_argument_spec,
    upstream_secrets,
)
from ansible_collections.airgap.ngc.plugins.module_utils._copy.validate import validate_mirror


def main() -> None:
    argument_spec = source_argument_spec()
    argument_spec.update(chart_source_argument_spec())
    argument_spec.update(
        images=dict(type="list", elements="raw"),
        charts=dict(type="list", elements="raw"),
        values_dir=dict(type="path"),
        chart_repo=dict(type="dict", options=dict(dir=dict(type="path", required=True))),
        registry=dict(
            type="dict",
            options=dict(
                url=dict(type="str", required=True),
                username=dict(type="str"),
                password=dict(type="str", no_log=True),
                validate_certs=dict(type="bool", default=True),
                ca_path=dict(type="path"),
                prefix=dict(type="str"),
            ),
        ),
        archive=dict(
            type="dict",
            options=dict(
                dir=dict(type="path", required=True),
                format=dict(type="str", choices=["docker", "oci"], default="docker"),
                platform=dict(type="str", default="linux/amd64"),
            ),
        ),
        docker=dict(
            type="dict",
            options=dict(
                host=dict(type="str"),
                source=dict(type="str", choices=["registry", "archive"], default="registry"),
                tag_as=dict(type="list", elements="str"),
            ),
        ),
        containerd=dict(
            type="dict",
            options=dict(
                address=dict(type="path", default="/run/containerd/containerd.sock"),
                namespace=dict(type="str", default="k8s.io"),
                name_as=dict(type="str"),
                strip_prefix=dict(type="str"),
            ),
        ),
        offline=dict(type="bool", default=False),
        source=dict(type="str", choices=["registry", "bundle", "archive"], default="registry"),
        source_dir=dict(type="path"),
        inventory_file=dict(type="path"),
        bundle=dict(
            type="dict",
            options=dict(
                dir=dict(type="path", required=True),
                since=dict(type="raw"),
                volume_size=dict(type="str"),
            ),
        ),
        enroot=dict(
            type="dict",
            options=dict(
                dir=dict(type="path", required=True),
                squash_options=dict(type="str", default="-comp lzo -noD"),
                platform=dict(type="str", default="linux/amd64"),
            ),
        ),
        apptainer=dict(
            type="dict",
            options=dict(
                dir=dict(type="path", required=True),
                layout=dict(type="str", choices=["tree", "flat"], default="tree"),
                squash_options=dict(type="str", default="-comp gzip"),
                platform=dict(type="str", default="linux/amd64"),
            ),
        ),
        platforms=dict(type="list", elements="str"),
        prune=dict(type="bool", default=False),
        keep=dict(type="int"),
        save_readme=dict(type="bool", default=False),
        facts_file=dict(type="path", default="/etc/ansible/facts.d/ngc_mirror.fact"),
        progress_file=dict(type="path"),
        parallel=dict(type="int", default=4),
        parallel_images=dict(type="int", default=8),
        force=dict(type="bool", default=False),
        signatures=dict(type="bool", default=True),
        signatures_relist_after=dict(type="int", default=3600),
        fail_on_error=dict(type="bool", default=True),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_one_of=[
            ("registry", "archive", "docker", "containerd", "bundle", "enroot", "apptainer", "chart_repo")
        ],
        required_if=[("source", "bundle", ("source_dir",)), ("source", "archive", ("source_dir",))],
    )
    module.no_log_values.update(upstream_secrets(module.params))  # never in a message or a result
    try:
        validate_mirror(module.params)
    except AirgapError as exc:
        module.fail_json(msg=str(exc))
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib("requests"), exception=REQUESTS_IMPORT_ERROR)
    try:
        result = Mirror(module.params, check_mode=module.check_mode, diff_mode=module._diff).run()
    except DockerSdkMissingError as exc:
        module.fail_json(msg=missing_required_lib(exc.library), exception=exc.import_error)
    except AirgapError as exc:
        module.fail_json(msg=str(exc))
    if result.get("failed_images") and module.params["fail_on_error"]:
        module.fail_json(msg=failure_summary(result), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
