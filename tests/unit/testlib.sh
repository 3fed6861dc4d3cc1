# tests/unit/testlib.sh: what the shell tests of bad input share (sourced, not run).
#
#   testlib_init "$@"   check the one argument (the anvil binary), make it absolute, cd
#                       into a fresh temporary directory removed on exit
#   pass MSG / fail MSG one line per check
#   check_error RC DESC TAG NEEDLES
#                       after a command wrote its stderr to err.txt and exited with RC:
#                       passes when RC is 2, stderr is exactly one line, names TAG (the
#                       file, key or option) and holds every |-separated NEEDLE
#   testlib_finish      summary line and exit status

testlib_init() {
    if [ $# -ne 1 ]; then
        echo "usage: $0 /path/to/anvil" >&2
        exit 1
    fi
    anvil=$1
    case $anvil in /*) ;; *) anvil=$PWD/$anvil ;; esac
    if [ ! -x "$anvil" ]; then
        echo "FAIL - $anvil is not an executable"
        exit 1
    fi
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    cd "$tmp" || exit 1
    failures=0
}

pass() { echo "ok   - $1"; }
fail() { echo "FAIL - $1"; failures=$((failures + 1)); }

check_error() {
    local rc=$1 desc=$2 tag=$3 needles=$4 why=""
    if [ "$rc" -ne 2 ]; then
        why="exit code $rc, expected 2"
    else
        local needle list
        IFS='|' read -r -a list <<< "$needles"
        for needle in "${list[@]}"; do
            if ! grep -qF -- "$needle" err.txt; then
                why="stderr lacks \"$needle\""
                break
            fi
        done
        if [ -z "$why" ] && [ "$(wc -l < err.txt)" -ne 1 ]; then
            why="$(wc -l < err.txt) stderr lines, expected 1"
        fi
        if [ -z "$why" ] && ! grep -qF -- "$tag" err.txt; then
            why="stderr does not name $tag"
        fi
    fi
    if [ -z "$why" ]; then
        pass "$desc: $(cat err.txt)"
    else
        fail "$desc ($why); stderr: $(head -c 400 err.txt | tr '\n' '|')"
    fi
}

testlib_finish() {
    if [ "$failures" -ne 0 ]; then
        echo "$failures check(s) failed"
        exit 1
    fi
    echo "all checks passed"
    exit 0
}
