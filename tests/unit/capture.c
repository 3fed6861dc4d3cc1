// tests/unit/capture.c: stderr capture through a temporary file (capture.h).
#include "tests/unit/capture.h"

#include <stdio.h>
#include <unistd.h>

static int saved_fd = -1;
static FILE *tmp;
static char captured[8192];

void capture_begin(void) {
    fflush(stderr);
    tmp = tmpfile();
    saved_fd = dup(2);
    if (tmp) dup2(fileno(tmp), 2);
}

const char *capture_end(void) {
    fflush(stderr);
    dup2(saved_fd, 2);
    close(saved_fd);
    size_t n = 0;
    if (tmp) {
        rewind(tmp);
        n = fread(captured, 1, sizeof captured - 1, tmp);
        fclose(tmp);
        tmp = NULL;
    }
    captured[n] = '\0';
    return captured;
}
