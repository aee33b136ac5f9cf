#!/usr/bin/env python3
"""Flash bytes of an ELF's code by the crate whose source they come from, inlined code included.

Fat LTO inlines most of a firmware into a few large functions, so symbol sizes (`nm -S`) credit
one crate with another's code. The DWARF line table does not: every address range of `.text`
names the source file its instructions were compiled from, however deeply inlined. This walks
that table (`arm-none-eabi-objdump --dwarf=decodedline` for the ranges, `arm-none-eabi-addr2line`
for their files' full paths) and sums the ranges per crate.

    tools/flash_by_crate.py [--files CRATE] ELF [BASELINE_ELF]

prints bytes per crate, and with a baseline the difference per crate (ELF minus BASELINE_ELF);
with `--files CRATE`, per source file of that crate instead.
Code without line information (a few padding and veneer bytes) is "(no line info)". Only
`.text` is covered: `.rodata` (tables, strings) and `.data` are not attributed here.
"""

import collections
import os
import re
import subprocess
import sys

REGISTRY = re.compile(r"/registry/src/[^/]+/([A-Za-z0-9_.-]+?)-\d+\.\d+\.\d+[^/]*/")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def crate_of(path):
    ours = {
        "/core/": "rivulet-core",
        "/adapters/embassy/": "rivulet-embassy",
        "/firmware/app/": "rivulet-device-app",
        "/firmware/": "firmware (board code, bins)",
    }
    for prefix, crate in ours.items():
        if path.startswith(REPO + prefix):
            return crate
    m = REGISTRY.search(path)
    if m:
        return m.group(1)
    if "compiler-builtins" in path or "compiler_builtins" in path:
        return "compiler_builtins"
    if "/library/" in path:
        return "Rust core library"
    if path.startswith("??"):
        return "(no line info)"
    if "-cgu." in path:  # code rustc generated for a binary (its task statics, main shim)
        return "firmware (board code, bins)"
    return "(other) " + path


def text_range(elf):
    out = subprocess.run(["arm-none-eabi-objdump", "-h", elf], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 4 and cols[1] == ".text":
            size, addr = int(cols[2], 16), int(cols[3], 16)
            return addr, addr + size
    raise SystemExit(f"{elf}: no .text section")


def by_crate(elf, files_of=None):
    start, end = text_range(elf)
    out = subprocess.run(
        ["arm-none-eabi-objdump", "--dwarf=decodedline", elf], capture_output=True, text=True, check=True
    ).stdout
    addresses = set()
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 3 and cols[2].startswith("0x"):
            address = int(cols[2], 16)
            if start <= address < end:
                addresses.add(address)
    addresses = sorted(addresses)
    # The line table's file names may be relative to their compilation unit; addr2line resolves.
    paths = subprocess.run(
        ["arm-none-eabi-addr2line", "-e", elf],
        input="\n".join(hex(a) for a in addresses),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    def key(path):
        crate = crate_of(path)
        if files_of is None or crate != files_of:
            return crate if files_of is None else "(other crates)"
        return path.replace(REPO + "/", "").split("/registry/src/")[-1].split("/library/")[-1]

    rows = [(a, key(p.rsplit(":", 1)[0])) for a, p in zip(addresses, paths)]
    sizes = collections.Counter()
    covered = 0
    for (addr, crate), (next_addr, _) in zip(rows, rows[1:] + [(end, None)]):
        sizes[crate] += next_addr - addr
        covered += next_addr - addr
    sizes["(no line info)"] += (end - start) - covered
    return sizes


def main():
    args = sys.argv[1:]
    files_of = None
    if args[:1] == ["--files"] and len(args) >= 2:
        files_of, args = args[1], args[2:]
    if len(args) not in (1, 2):
        raise SystemExit(__doc__)
    sizes = by_crate(args[0], files_of)
    if len(args) == 1:
        print(f"{'bytes':>8}  {files_of or 'crate'} ({args[0]} .text: {sum(sizes.values())})")
        for crate, size in sizes.most_common():
            print(f"{size:>8}  {crate}")
        return
    base = by_crate(args[1], files_of)
    diff = {c: sizes.get(c, 0) - base.get(c, 0) for c in set(sizes) | set(base)}
    print(f"{'bytes':>8}  {files_of or 'crate'} ({args[0]} minus {args[1]}, .text: {sum(diff.values()):+})")
    for crate, size in sorted(diff.items(), key=lambda kv: -abs(kv[1])):  # largest change first
        if size:
            print(f"{size:>+8}  {crate}")


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # `| head`
        pass
