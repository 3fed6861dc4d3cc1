#!/usr/bin/env python3
"""cu2emu.py IN.cu OUT.cc: a cuda backend source file (or a test program written in CUDA,
tests/gpu/test_ptx_layouts.cu) as host C++ for tests/emu.

Six rewrites, nothing else changes (the kernels' code is compiled as written):
- a launch `kernel<targs><<<grid, block, smem, stream>>>(args);` becomes
  `emu::launch(emu::launch_cfg(grid, block, smem, stream), &kernel<targs>, "kernel<targs>",
  emu::bind_args(&kernel<targs>, args));` (the address keys the kernel's
  cudaFuncSetAttribute; the arguments are converted and copied at the launch, as CUDA
  does, since the stream may carry the launch out later)
- the body of every `__global__` function starts with `emu::launch_bounds(B);`, B its
  `__launch_bounds__` (0 if it has none), which checks the block size of each launch
- `extern __shared__ [__align__(n)] TYPE NAME[];` (dynamic shared memory) becomes
  `TYPE *NAME = (TYPE *)emu::dyn_smem();`
- `__shared__ TYPE NAME[dims];` (static shared memory, a function static on the host)
  becomes `static TYPE NAME[dims]; emu::shared_decl(&NAME, sizeof NAME);`, which poisons
  it when the first thread of each block gets there: what one block (or launch) left
  there is not what the next one finds
- the block between "// ---- PTX helpers" and "// ---- end of PTX helpers" (inline PTX
  assembly, attention.cu) becomes `#include "tests/emu/emu_ptx.h"`.
A `#line` directive keeps compiler messages pointing at the .cu file. Exit 1 with a
message if a launch cannot be parsed.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def matching(src, i, open_ch, close_ch, step):
    """Index of the bracket matching src[i], scanning in direction step (+1 / -1)."""
    depth = 0
    while 0 <= i < len(src):
        if src[i] == open_ch:
            depth += 1
        elif src[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i
        i += step
    raise ValueError("unbalanced brackets")


def rewrite_launches(src):
    out, i = [], 0
    while True:
        j = src.find("<<<", i)
        if j < 0:
            out.append(src[i:])
            return "".join(out)
        k = j
        while src[k - 1].isspace():       # a launch may start on the next line
            k -= 1
        if src[k - 1] == ">":             # template arguments: walk back to their '<'
            k = matching(src, k - 1, ">", "<", -1)
        while k > 0 and (src[k - 1].isalnum() or src[k - 1] == "_"):
            k -= 1
        callee = src[k:j]
        e = src.index(">>>", j)
        cfg = src[j + 3:e]
        a = e + 3
        while src[a].isspace():
            a += 1
        if src[a] != "(":
            raise ValueError(f"launch of {callee!r}: no argument list")
        b = matching(src, a, "(", ")", 1)
        out.append(src[i:k])
        name = " ".join(callee.split())
        args = src[a + 1:b].strip()
        out.append(f"emu::launch(emu::launch_cfg({cfg}), reinterpret_cast<const void *>(&{callee}), "
                   f"\"{name}\", emu::bind_args(&{callee}{', ' + args if args else ''}))")
        i = b + 1


def check_launch_bounds(src):
    """Every kernel definition starts with emu::launch_bounds(its __launch_bounds__ or 0)."""
    out, i = [], 0
    pat = re.compile(r"__global__\s+void\s+(__launch_bounds__\s*\()?")
    while True:
        m = pat.search(src, i)
        if not m:
            out.append(src[i:])
            return "".join(out)
        j = m.end()
        bound = "0"
        if m.group(1):
            close = matching(src, j - 1, "(", ")", 1)
            bound = src[j:close].split(",")[0].strip()
            j = close + 1
        a = src.index("(", j)                   # the parameter list
        b = matching(src, a, "(", ")", 1)
        k = b + 1
        while src[k].isspace():
            k += 1
        if src[k] != "{":                       # a declaration
            out.append(src[i:k])
            i = k
            continue
        out.append(src[i:k + 1])
        out.append(f" emu::launch_bounds({bound});")
        i = k + 1


def convert(inp):
    src = open(inp).read()
    start = src.find("// ---- PTX helpers")
    if start >= 0:
        end = src.index("// ---- end of PTX helpers", start)
        blank = "\n" * (src.count("\n", start, end) - 1)      # keep the line numbers
        src = src[:start] + '#include "tests/emu/emu_ptx.h"\n' + blank + src[end:]
    src = re.sub(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([A-Za-z_][\w ]*?)\s+(\w+)\[\];",
                 r"\1 *\2 = (\1 *)emu::dyn_smem();", src)
    src = re.sub(r"^(\s*)__shared__\s+([A-Za-z_][\w ]*?)\s+(\w+)((?:\[[^\]]*\])*);",
                 r"\1static \2 \3\4; emu::shared_decl(&\3, sizeof \3);", src, flags=re.M)
    try:
        src = check_launch_bounds(src)
        src = rewrite_launches(src)
    except ValueError as err:
        sys.exit(f"cu2emu: {inp}: {err}")

    def inline(m):   # kernels/cuda/X.cuh, from the repository root (tests include them too)
        path = os.path.join(ROOT, "kernels", "cuda", m.group(1))
        line = src.count("\n", 0, m.start()) + 2
        return convert(path) + f'\n#line {line} "{inp}"'
    src = re.sub(r'^#include "kernels/cuda/((?!cuda_common)\w+\.cuh)"', inline, src, flags=re.M)
    return f'#line 1 "{inp}"\n' + src


def main():
    src = convert(sys.argv[1])
    with open(sys.argv[2], "w") as f:
        f.write(src)


if __name__ == "__main__":
    main()
