// kernels/no_cuda.c: the cuda backend's entry points in a build without CUDA (meson
// found no nvcc, or -Dcuda=disabled). device=auto then runs on the cpu; device=cuda is
// refused with this one line.
#include <stdio.h>

#include "kernels/ops.h"

const anv_backend *anv_backend_cuda(int device) {
    (void)device;
    fprintf(stderr, "anvil: device cuda: this build has no CUDA backend (meson found no "
            "nvcc; install the CUDA toolkit and rebuild, or configure with -Dcuda=enabled)\n");
    return NULL;
}

int anv_cuda_device_count(void) { return 0; }

int anv_cuda_device_id(int device, char *buf, size_t n) {
    (void)device;
    if (n > 0) buf[0] = '\0';
    return -1;
}

const char *anv_cuda_describe(void) { return ""; }
