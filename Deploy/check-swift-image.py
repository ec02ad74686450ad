#!/usr/bin/env python3
"""Checks that the Dockerfile's build image has a Swift at least as new as every package needs:
this package's swift-tools-version and each dependency's, as a fresh resolve picks them (the
checkouts under .build/checkouts, which `swift build` made). Exit 1 naming each one that is newer.

Usage: Deploy/check-swift-image.py [--dockerfile Dockerfile] [--checkouts .build/checkouts]"""
import argparse
import os
import re
import sys

TOOLS = re.compile(r"^//\s*swift-tools-version\s*:\s*(\d+(?:\.\d+)*)")


def version(text):
    return tuple(int(part) for part in text.split("."))


def tools_version(path):
    with open(path) as manifest:
        match = TOOLS.match(manifest.readline())
    return version(match.group(1)) if match else (3, 0)


def required(package_dir, swift):
    """The tools version SwiftPM reads for this package with `swift`: the newest versioned
    manifest (Package@swift-X.swift) that `swift` satisfies, else Package.swift."""
    candidates = []
    for name in os.listdir(package_dir):
        match = re.fullmatch(r"Package@swift-(\d+(?:\.\d+)*)\.swift", name)
        if match and version(match.group(1)) <= swift:
            candidates.append((version(match.group(1)), os.path.join(package_dir, name)))
    manifest = max(candidates)[1] if candidates else os.path.join(package_dir, "Package.swift")
    return tools_version(manifest)


def main():
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--dockerfile", default="Dockerfile")
    arguments.add_argument("--checkouts", default=".build/checkouts")
    options = arguments.parse_args()
    image = re.search(r"^FROM\s+swift:(\d+\.\d+(?:\.\d+)?)", open(options.dockerfile).read(), re.MULTILINE)
    if not image:
        sys.exit(f"{options.dockerfile}: no 'FROM swift:X.Y' build stage")
    swift = version(image.group(1))
    packages = {"signalbox (Package.swift)": "."}
    if not os.path.isdir(options.checkouts):
        sys.exit(f"{options.checkouts} is missing: run `swift build` first, so the dependencies are resolved")
    for name in sorted(os.listdir(options.checkouts)):
        if os.path.isfile(os.path.join(options.checkouts, name, "Package.swift")):
            packages[name] = os.path.join(options.checkouts, name)
    too_new = []
    newest = ((0,), "")
    for name, directory in packages.items():
        needs = required(directory, swift)
        newest = max(newest, (needs, name))
        if needs > swift:
            too_new.append(f"{name} needs swift-tools-version {'.'.join(map(str, needs))}")
    if too_new:
        print(f"{options.dockerfile} builds with Swift {image.group(1)}, but:\n  " + "\n  ".join(too_new))
        return 1
    print(f"{options.dockerfile} builds with Swift {image.group(1)}: enough for all {len(packages)} packages "
          f"(the newest tools version needed is {'.'.join(map(str, newest[0]))}, by {newest[1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
