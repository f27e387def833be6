"""A MAP as its image holds it: the two manifests read from the image's files on the host (its layer
folders, or an export of a container that is never started: nothing runs), and every path they name
looked up in the image, symlinks followed as inside it.

Before any case runs, the gate knows from here what to run, where its input and output go, and that the
command, the application root, the model root and each model are in the image; a manifest that names
what the image lacks stops the gate in one line, as an unusable model does for any other app.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from validation import engine, image_tree
from validation.errors import GateError
from validation.map_manifest import (
    REPACKAGE,
    AppManifest,
    PackageManifest,
    parse_app_json,
    parse_pkg_json,
    spec,
)

PASSWD = "/etc/passwd"
SYMLINK_HOPS = 40  # as Linux's own limit: a loop of links leads nowhere


@dataclass(frozen=True)
class ImagePaths:
    """Every path of the image (absolute), what kind it is, where its symlinks point, and the contents of
    the few files the gate reads."""

    kinds: dict[str, str]  # path -> "dir", "file" or "other" (a symlink, device, further hard link)
    links: dict[str, str]  # symlink path -> its target, as written
    files: dict[str, bytes]

    def resolve(self, path: str) -> str | None:
        """`path` with every symlink followed inside the image; None when it leads nowhere."""
        parts, current, hops = [p for p in path.split("/") if p], "", 0
        while parts:
            part = parts.pop(0)
            if part in (".", ""):
                continue
            if part == "..":
                current = current.rpartition("/")[0]
                continue
            candidate = f"{current}/{part}"
            if candidate in self.links:
                hops += 1
                if hops > SYMLINK_HOPS:
                    return None
                target = self.links[candidate]
                current = "" if target.startswith("/") else current
                parts = [p for p in target.split("/") if p] + parts
                continue
            if candidate not in self.kinds:
                return None
            current = candidate
        return current or "/"

    def is_dir(self, path: str) -> bool:
        found = self.resolve(path)
        return found == "/" or (found is not None and self.kinds.get(found) == "dir")

    def is_file(self, path: str) -> bool:
        found = self.resolve(path)
        return found is not None and found != "/" and self.kinds.get(found) != "dir"


def read_paths(image: str, platform: str, wanted: tuple[str, ...]) -> ImagePaths:
    """One walk of the image's files: their kinds and links, and the contents of `wanted` (absolute)."""
    kinds, links, files = {}, {}, {}
    for entry in image_tree.entries(image, platform):
        path = "/" + entry.path
        kinds[path] = entry.kind
        if entry.link:
            links[path] = entry.link
        if path in wanted and entry.kind == "file":
            files[path] = entry.read(-1)
    return ImagePaths(kinds, links, files)


@dataclass(frozen=True)
class MapPackage:
    """A MAP's manifests and the image facts the gate runs it by."""

    image: str
    app: AppManifest
    pkg: PackageManifest
    user: str  # the image's user (its Config.User), as the MAP runs
    uid: int | None  # that user's uid in the image's /etc/passwd; None when it has no entry
    image_env: dict[str, str]

    def run_env(self) -> dict[str, str]:
        """What the run is given: app.json's environment, with the input and output paths where they are
        mounted (as `holoscan run` does: app.json may write them relative to the working directory)."""
        paths = {"HOLOSCAN_INPUT_PATH": self.app.input_path, "HOLOSCAN_OUTPUT_PATH": self.app.output_path}
        return {**self.app.environment, **paths}

    def facts(self) -> dict[str, Any]:
        """What the report and metrics.json say about the MAP."""
        app, pkg = self.app, self.pkg
        return {
            "app_json": f"{spec()['paths']['app_json']}: {app.form.describe()}",
            "pkg_json": f"{spec()['paths']['pkg_json']}: {pkg.form.describe()}",
            "command": app.command_text,
            "sdk": " ".join(filter(None, (app.sdk, app.sdk_version))),
            "version": app.version,
            "working_directory": app.working_directory,
            "input": app.input_path,
            "output": app.output_path,
            "application_root": pkg.application_root,
            "models": ", ".join(f"{name}: {path}" for name, path in pkg.models.items()) or "none named",
            "limits": pkg.limits.describe(),
            "timeout_s": app.timeout_s,
            "user": self.user,
        }


def _found_on_path(program: str, paths: ImagePaths, env: dict[str, str], working: str) -> str | None:
    """Where the program is in the image: as given (relative to the working directory), or on PATH."""
    if "/" in program:
        candidate = posixpath.join(working, program)
        return candidate if paths.is_file(candidate) else None
    for folder in env.get("PATH", "").split(":"):
        candidate = posixpath.join(folder or working, program)
        if folder.startswith("/") and paths.is_file(candidate):
            return candidate
    return None


def in_image_problems(
    app: AppManifest, pkg: PackageManifest, paths: ImagePaths, env: dict[str, str]
) -> list[str]:
    """What the manifests name that the image lacks, one phrase each (empty when the image holds it all)."""
    app_json, pkg_json = spec()["paths"]["app_json"], spec()["paths"]["pkg_json"]
    problems = []
    words = app.program()
    if app.shell and not paths.is_file("/bin/sh"):
        problems.append(f"{app_json} command is a shell command, but the image has no /bin/sh")
    if not words:
        problems.append(f"{app_json} command {app.command_text!r} names no program")
    elif _found_on_path(words[0], paths, env, app.working_directory) is None:
        where = "" if "/" in words[0] else f" (PATH {env.get('PATH', '(unset)')})"
        problems.append(f"{app_json} command {app.command_text}: {words[0]} is not in the image{where}")
    elif (
        posixpath.basename(words[0]).startswith("python") and len(words) > 1 and not words[1].startswith("-")
    ):
        script = posixpath.join(app.working_directory, words[1])
        if not (paths.is_file(script) or paths.is_file(posixpath.join(script, "__main__.py"))):
            problems.append(f"{app_json} command {app.command_text}: {words[1]} is not in the image")
    if not paths.is_dir(pkg.application_root):
        problems.append(f"{pkg_json} applicationRoot {pkg.application_root} is not a folder of the image")
    if not paths.is_dir(pkg.model_root):
        problems.append(f"{pkg_json} modelRoot {pkg.model_root} is not a folder of the image")
    for name, path in pkg.models.items():
        if paths.resolve(path) is None:
            problems.append(f"{pkg_json} model {name}: {path} is not in the image")
    return problems


def _uid(passwd: bytes, user: str) -> int | None:
    name = user.split(":", 1)[0]
    if name.isdigit():
        return int(name)
    for line in passwd.decode(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    return None


def read(image: str, facts: engine.ImageFacts) -> MapPackage:
    """The MAP in `image`, its manifests checked against its files; a GateError names what is wrong."""
    manifests = (spec()["paths"]["app_json"], spec()["paths"]["pkg_json"])
    paths = read_paths(image, facts.platform, (*manifests, PASSWD))
    missing = [path for path in manifests if path not in paths.files]
    if missing:
        raise GateError(
            f"{image}: no {' or '.join(missing)}: not a MONAI Application Package (a MAP describes itself in "
            "/etc/holoscan/app.json and pkg.json); gate an image built by `nox -s build` with --app instead"
        )
    app = parse_app_json(paths.files[manifests[0]].decode(errors="replace"), f"{image} {manifests[0]}")
    pkg = parse_pkg_json(paths.files[manifests[1]].decode(errors="replace"), f"{image} {manifests[1]}")
    config = facts.raw.get("Config") or {}
    image_env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
    problems = in_image_problems(app, pkg, paths, {**image_env, **app.environment})
    if problems:
        raise GateError(f"{image}: {'; '.join(problems)}; {REPACKAGE}")
    user = config.get("User") or "root"
    return MapPackage(image, app, pkg, user, _uid(paths.files.get(PASSWD, b""), user), image_env)
