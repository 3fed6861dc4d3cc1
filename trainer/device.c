// trainer/device.c: which device a rank trains on, and whether the run fits it.
//
// train_select_backend picks the backend `device` names (one GPU per rank: the rank's
// index on its node, from the launcher, selects the GPU); train_memory_plan sizes
// everything a rank will allocate before anything is (model_memory), prints it and
// refuses a layout that does not fit the device's free memory. Both are called once
// by train.c at start.
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/ops.h"
#include "trainer/train_internal.h"

// This process's index among the ranks on its node: the launcher's word for it
// (Open MPI, MPICH / Intel MPI, SLURM's srun, torchrun-style LOCAL_RANK), else the rank
// within MPI's shared-memory communicator. One GPU per rank: rank i uses GPU i.
static int local_rank(void) {
    static const char *vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                                 "SLURM_LOCALID", "LOCAL_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        char *end;
        long r = v ? strtol(v, &end, 10) : -1;
        if (v && *v && *end == '\0' && r >= 0 && r < 1 << 20) return (int)r;
    }
    MPI_Comm node;
    int r = 0;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) ==
        MPI_SUCCESS) {
        MPI_Comm_rank(node, &r);
        MPI_Comm_free(&node);
    }
    return r;
}

// The backend `device` selects: cpu; cuda on GPU local_rank (modulo the GPUs the node
// has); auto: cuda when a GPU is usable, else cpu. Returns NULL after printing why
// cuda is unavailable (no GPU, a build without CUDA). Collective (MPI) when no
// launcher variable gives the local rank.
const anv_backend *train_select_backend(device_kind d) {
    if (d == DEVICE_KIND_CPU) return anv_backend_cpu();
    int n = anv_cuda_device_count();
    if (d == DEVICE_KIND_AUTO && n == 0) return anv_backend_cpu();
    int lr = local_rank();
    const anv_backend *be = anv_backend_cuda(n > 0 ? lr % n : 0);
    if (!be && d == DEVICE_KIND_AUTO) return anv_backend_cpu();
    return be;
}

// Margin of device memory left out of the plan: the CUDA context, cuBLASLt's
// workspace, NCCL's buffers and the allocator's rounding (measured contexts take
// 0.5-1 GiB on an H100).
#define MEMORY_MARGIN_BYTES ((size_t)1536 << 20)

// "1.23 GiB" or "456.7 MiB" into buf (n bytes).
static const char *size_text(char *buf, size_t n, double bytes) {
    const double mib = 1024.0 * 1024.0;
    if (bytes >= 1024.0 * mib)
        snprintf(buf, n, "%.2f GiB", bytes / (1024.0 * mib));
    else
        snprintf(buf, n, "%.1f MiB", bytes / mib);
    return buf;
}

// Print (lead) the memory each rank will allocate before the first step, and refuse
// (2, on every rank alike) a layout that does not fit the device this rank runs on.
// Collective (the verdict is agreed over the world).
int train_memory_plan(parallel_grid *g, const model_config *mc, const anv_backend *be, int B,
                       int T, const model_shard *sh, int zero, int lead) {
    size_t n = 0, acts = 0;
    int rc = model_memory(mc, be, B, T, sh, &n, &acts);
    if ((rc = train_agree_rc(g, rc)) != 0) return rc;
    const size_t own = zero ? n / (size_t)g->dp : n;         // optimizer range
    const int master = be->act_dtype != ANV_DTYPE_F32;
    const double p = (double)n * be->act_bytes, gr = (double)n * 4.0;
    const double o = (double)own * 4.0 * (2 + master) + (zero ? (double)own * 4.0 : 0.0);
    const double total = p + gr + o + (double)acts;
    size_t dev_free = 0, dev_total = 0;
    if (be->mem_info) be->mem_info(&dev_free, &dev_total);
    // test hook (docs/config.md): a device of this many MiB, so that the refusal is
    // tested on the cpu
    const char *hook = getenv("ANVIL_TEST_DEVICE_MIB");
    if (hook && atol(hook) > 0) dev_free = dev_total = (size_t)atol(hook) << 20;
    char s[6][32];
    if (lead) {
        printf("memory per rank (%s): parameters %s, gradients %s, optimizer %s%s, "
               "activations %s (B=%d, T=%d, %d set%s) = %s", be->name,
               size_text(s[0], 32, p), size_text(s[1], 32, gr), size_text(s[2], 32, o),
               master ? " (incl. fp32 master)" : "", size_text(s[3], 32, (double)acts), B, T,
               sh->n_slots, sh->n_slots == 1 ? "" : "s", size_text(s[4], 32, total));
        if (dev_total > 0)
            printf("; device: %s of %s free", size_text(s[0], 32, (double)dev_free),
                   size_text(s[1], 32, (double)dev_total));
        printf("\n");
        fflush(stdout);
    }
    int fits = dev_total == 0 || total + (double)MEMORY_MARGIN_BYTES <= (double)dev_free;
    if (!fits)
        fprintf(stderr, "anvil: rank %d: the model does not fit the device: it needs %s "
                "(+%s margin), %s are free; lower train.micro_batch or train.seq_len, or "
                "shard it (parallel.tp, parallel.pp, parallel.zero)\n", g->rank,
                size_text(s[0], 32, total), size_text(s[1], 32, (double)MEMORY_MARGIN_BYTES),
                size_text(s[2], 32, (double)dev_free));
    return train_agree_rc(g, fits ? 0 : 2);
}
