// trainer/device.c: which device a rank trains on, and whether the run fits it.
//
// train_select_backend picks the backend `device` names (one GPU per rank: the rank's
// index on its node, from the launcher, selects the GPU); train_memory_plan sizes
// everything a rank will allocate before anything is (model_memory), prints it and
// refuses a layout that does not fit the device's free memory. Both are called once
// by train.c at start.
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/fatal.h"
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

// One GPU per rank: NCCL refuses two ranks of one communicator on the same GPU, and the
// memory plan gives each rank the whole device. Every rank on a node tells the others
// the PCI bus id of the GPU it is about to use (dev, of the n it sees; "" if none), so
// that ranks that see different GPUs under one number (CUDA_VISIBLE_DEVICES per rank,
// srun --gpus-per-task) pass and ranks that would share one do not. Returns 0, or 2
// after the node's first rank has said which ranks share which GPU. Collective (MPI).
#define DEVICE_ID_LEN 32               // a PCI bus id is "0000:3b:00.0" (13 bytes)
static int check_one_gpu_per_rank(int dev, int n) {
    typedef struct { int world_rank; char id[DEVICE_ID_LEN]; } rank_gpu;
    rank_gpu me;
    memset(&me, 0, sizeof me);
    MPI_Comm_rank(MPI_COMM_WORLD, &me.world_rank);
    if (dev >= 0 && anv_cuda_device_id(dev, me.id, sizeof me.id) != 0) me.id[0] = '\0';
    MPI_Comm node;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) !=
        MPI_SUCCESS)
        return 0;                      // no node view: NCCL itself will say
    int size = 1, r = 0;
    MPI_Comm_size(node, &size);
    MPI_Comm_rank(node, &r);
    rank_gpu *all = size > 1 ? malloc((size_t)size * sizeof *all) : NULL;
    if (size > 1 && all == NULL)       // the other ranks would wait in the allgather
        anv_fatal(__FILE__, __LINE__, "check_one_gpu_per_rank", "out of memory");
    int rc = 0;
    if (all != NULL &&
        MPI_Allgather(&me, (int)sizeof me, MPI_BYTE, all, (int)sizeof me, MPI_BYTE, node) ==
            MPI_SUCCESS) {
        for (int i = 0; i < size && rc == 0; i++) {
            for (int j = i + 1; j < size && rc == 0; j++) {
                if (all[i].id[0] == '\0' || strcmp(all[i].id, all[j].id) != 0) continue;
                rc = 2;
                if (r == 0)
                    fprintf(stderr,
                            "anvil: device cuda: ranks %d and %d run on the same GPU (%s), "
                            "%d ranks on this node and %d GPU%s visible to each: start one "
                            "rank per GPU (at most %d rank%s per node), or give each rank "
                            "its own (CUDA_VISIBLE_DEVICES, srun --gpus-per-task=1)\n",
                            all[i].world_rank, all[j].world_rank, all[i].id, size, n,
                            n == 1 ? "" : "s", n, n == 1 ? "" : "s");
            }
        }
    }
    free(all);
    MPI_Comm_free(&node);
    return rc;
}

// The backend `device` selects: cpu; cuda on GPU local_rank (modulo the GPUs the node
// has); auto: cuda when a GPU is usable, else cpu. Returns NULL after printing why
// cuda is unavailable (no GPU, a build without CUDA) or may not be used (two ranks of
// a node on one GPU: check_one_gpu_per_rank). Collective (MPI) unless device is cpu.
const anv_backend *train_select_backend(device_kind d) {
    if (d == DEVICE_KIND_CPU) return anv_backend_cpu();
    int n = anv_cuda_device_count();
    int lr = local_rank();
    int dev = n > 0 ? lr % n : -1;
    if (check_one_gpu_per_rank(d == DEVICE_KIND_AUTO && n == 0 ? -1 : dev, n) != 0)
        return NULL;
    if (d == DEVICE_KIND_AUTO && n == 0) return anv_backend_cpu();
    const anv_backend *be = anv_backend_cuda(dev >= 0 ? dev : 0);   // no GPU: it says so
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
    if (lead && !be->host_memory && anv_cuda_describe()[0] != '\0') {
        const int nv = comm_nccl_version();        // the groups talk over NCCL (train.c)
        printf("device (rank 0): %s", anv_cuda_describe());
        if (nv > 0) printf(", NCCL %d.%d.%d", nv / 10000, nv / 100 % 100, nv % 100);
        printf("\n");
    }
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

// ---- between two steps ----------------------------------------------------------------

void train_between_steps(const model *m, const anv_backend *be, const train_config *tc,
                         const char *run_dir, int rank, int lead, int poison, int *tuned) {
    const int timed = tc->matmul_algo == MATMUL_ALGO_TIMED ||
                      (tc->matmul_algo == MATMUL_ALGO_AUTO && !tc->deterministic);
    if (!*tuned && timed && be->matmul_tune != NULL) {
        *tuned = 1;
        watchdog_beat("timing matmul algorithms");
        void *scratch[2] = {NULL, m->grads};
        size_t bytes[2] = {0, m->n_alloc * sizeof(float)};
        model_step_scratch(m, &scratch[0], &bytes[0]);
        char path[4096];
        snprintf(path, sizeof path, "%s/matmul_algos_rank%d.txt", run_dir, rank);
        FILE *table = fopen(path, "w");
        if (!table) fprintf(stderr, "anvil: train.matmul_algo: cannot write '%s'\n", path);
        anv_tune_report r;
        be->matmul_tune(scratch, bytes, 2, table, &r);
        if (table && fclose(table) != 0)
            fprintf(stderr, "anvil: train.matmul_algo: writing '%s' failed\n", path);
        if (lead) {
            const double gain = r.first_ms > 0 ? 100.0 * (1.0 - r.best_ms / r.first_ms) : 0.0;
            printf("anvil: %s: matmul algorithms timed (train.matmul_algo) in %.1f s: %d of "
                   "%d problems faster than cuBLASLt's first choice, one call of each "
                   "%.3f -> %.3f ms (%.1f%% less); %d with one candidate, %d without room "
                   "(per problem: %s)\n", be->name, r.seconds, r.changed, r.problems,
                   r.first_ms, r.best_ms, gain, r.single, r.skipped, path);
        }
    }
    if (poison) {
        void *p;
        size_t n;
        model_step_scratch(m, &p, &n);
        be->scale((float *)p, NAN, n / sizeof(float));
        be->scale(m->grads, NAN, m->n_alloc);
    }
}
