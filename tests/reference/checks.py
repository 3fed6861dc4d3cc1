"""tests/reference/checks.py: the "ok" / "FAIL" lines the Python tests print, counted, and
their closing line and exit code. Standard library only; imported like corpus.py (the
test puts tests/reference on sys.path)."""
import sys

failures = 0


def report(ok, msg):
    """Print one check's line; a failed check is counted."""
    global failures
    print(("ok   " if ok else "FAIL ") + msg, flush=True)
    failures += 0 if ok else 1


def summary(name=None):
    """Print the closing line ("NAME: all passed" / "NAME: N failed", or without a name
    "all checks passed" / "N check(s) failed") and return the exit code: 1 if any failed."""
    if name:
        print(f"{name}: {'all passed' if not failures else f'{failures} failed'}")
    else:
        print("all checks passed" if not failures else f"{failures} check(s) failed")
    sys.stdout.flush()
    return 1 if failures else 0
