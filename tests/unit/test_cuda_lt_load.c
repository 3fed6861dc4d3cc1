// tests/unit/test_cuda_lt_load.c: the cuda backend opens cuBLASLt itself (backend.cu,
// cuda_lt_load) instead of linking it; checked where the toolkit is installed, no GPU
// needed (the real library, not the host emulation's).
//
//   1. this program, like anvil, does not have cuBLASLt loaded: the load below takes
//      the dlopen path, the one a GPU run takes;
//   2. a library that does not exist: exit status 2 and one line naming it, no crash;
//   3. the toolkit's library: status 0 (every function of the table resolved), the
//      library then mapped into the process (/proc/self/maps), and every name the
//      backend calls defined there (dlsym + dladdr, independent of the loader);
//   4. `anvil help` (argv[1]) loads no cuBLASLt at all (the dynamic loader's own trace,
//      LD_DEBUG=libs): the ~80 ms of its initializers are not paid by cpu runs.
// Exit 0 when every check passes, 1 otherwise.
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/cuda/cuda_ops.h"

static int failures;

static void check(int ok, const char *what) {
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    if (!ok) failures++;
}

// The names backend.cu resolves (cuda_common.cuh: CUDA_LT_FNS).
static const char *const lt_names[] = {
    "cublasLtCreate", "cublasLtDestroy", "cublasLtGetVersion", "cublasLtMatmul",
    "cublasLtMatmulAlgoGetHeuristic",
    "cublasLtMatmulDescCreate", "cublasLtMatmulDescDestroy",
    "cublasLtMatmulDescSetAttribute", "cublasLtMatmulPreferenceCreate",
    "cublasLtMatmulPreferenceDestroy", "cublasLtMatmulPreferenceSetAttribute",
    "cublasLtMatrixLayoutCreate", "cublasLtMatrixLayoutDestroy",
};

// Runs cmd with stderr into a temporary file; returns its exit status, its stderr in
// buf (NUL-terminated, truncated to cap - 1).
static int run_capture(const char *cmd, char *buf, size_t cap) {
    char path[] = "/tmp/anvil-lt-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    close(fd);
    char full[4096];
    snprintf(full, sizeof full, "%s 2>%s", cmd, path);
    int st = system(full);
    FILE *f = fopen(path, "r");
    size_t n = f != NULL ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = '\0';
    if (f != NULL) fclose(f);
    unlink(path);
    return st == -1 ? -1 : WEXITSTATUS(st);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s ANVIL\n", argv[0]);
        return 2;
    }
    check(dlsym(RTLD_DEFAULT, "cublasLtCreate") == NULL,
          "cuBLASLt is not in the process before the load (the dlopen path is tested)");

    // 2. a missing library: status 2, one line naming it (stderr into a pipe-free file)
    fflush(stdout);
    FILE *err = tmpfile();
    int saved = dup(2);
    dup2(fileno(err), 2);
    int st = cuda_lt_load("libanvil-no-such-cublasLt.so.13");
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char msg[1024] = "";
    rewind(err);
    size_t n = fread(msg, 1, sizeof msg - 1, err);
    msg[n] = '\0';
    fclose(err);
    check(st == 2, "a missing library: status 2");
    check(strstr(msg, "libanvil-no-such-cublasLt.so.13") != NULL &&
              strchr(msg, '\n') == msg + strlen(msg) - 1,
          "a missing library: one line that names it");
    printf("     (it said: %s", msg);

    // 3. the toolkit's library, found in the process's own memory map afterwards
    check(cuda_lt_load(NULL) == 0, "the toolkit's libcublasLt loads (status 0: every "
                                   "function resolved)");
    char path[4096] = "";
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[8192];
    while (maps != NULL && path[0] == '\0' && fgets(line, sizeof line, maps) != NULL) {
        char *p = strchr(line, '/');
        if (p != NULL && strstr(p, "/libcublasLt.so") != NULL) {
            p[strcspn(p, "\n")] = '\0';
            snprintf(path, sizeof path, "%s", p);
        }
    }
    if (maps != NULL) fclose(maps);
    check(path[0] != '\0', "libcublasLt is mapped into the process now");
    printf("     (%s)\n", path);
    void *lib = path[0] != '\0' ? dlopen(path, RTLD_NOW | RTLD_NOLOAD) : NULL;
    int resolved = 0;
    for (size_t i = 0; i < sizeof lt_names / sizeof *lt_names; i++) {
        void *p = lib != NULL ? dlsym(lib, lt_names[i]) : NULL;
        Dl_info info;
        if (p != NULL && dladdr(p, &info) && info.dli_sname != NULL &&
            strcmp(info.dli_sname, lt_names[i]) == 0 && info.dli_fname != NULL &&
            strstr(info.dli_fname, "libcublasLt") != NULL)
            resolved++;
        else
            printf("     %s: not found in libcublasLt\n", lt_names[i]);
    }
    check(resolved == (int)(sizeof lt_names / sizeof *lt_names),
          "every function the backend calls is defined in that library");

    // 4. anvil help does not load it
    static char trace[1 << 20];
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "LD_DEBUG=libs '%s' help >/dev/null", argv[1]);
    int rc = run_capture(cmd, trace, sizeof trace);
    check(rc == 0 && strstr(trace, "find library=libcudart") != NULL,
          "anvil help runs, and the loader's trace shows its libraries (libcudart)");
    check(strstr(trace, "libcublasLt") == NULL, "anvil help loads no cuBLASLt");

    printf("%d failed\n", failures);
    return failures ? 1 : 0;
}
