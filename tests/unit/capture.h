// tests/unit/capture.h: capture what a call prints on stderr, for the tests that check
// error messages (test_loader.c, test_ckpt_commit.c).
#ifndef ANVIL_TESTS_UNIT_CAPTURE_H
#define ANVIL_TESTS_UNIT_CAPTURE_H

// Redirect stderr to a temporary file until capture_end.
void capture_begin(void);
// Restore stderr; return what was written meanwhile (NUL-terminated, at most 8 KiB;
// valid until the next capture_end).
const char *capture_end(void);

#endif
