// trainer/checkpointing.c: saving and loading the training state as a checkpoint
// (checkpoint/checkpoint.h) from whatever layout this run has.
//
// Every element of every global tensor is written exactly once, as pieces (rectangles
// in global coordinates) cut from the model's tensor table (model.h: split_dim,
// split_off, counted): the parameters by dp replica 0, each counted tensor's slice;
// the AdamW moments by the ranks that own them: dp replica 0 without ZeRO, every dp
// rank its own flat range under ZeRO-1, where a range that starts or ends inside a
// row becomes up to three rectangles (a partial row, whole rows, a partial row). The
// vocabulary padding rows that tensor parallelism adds are never written (they hold
// nothing: no probability mass, no gradient) and load as zero, so a checkpoint is the
// same whatever tp wrote it.
//
// Loading is the mirror image: each rank reads the pieces that overlap the rectangles
// its own layout needs (ckpt_load_rects, which checks each piece's CRC-32C as it
// reads), so a checkpoint written under one dp x tp x pp (ZeRO on or off) resumes
// under any other. A checkpoint found damaged while loading is reported and the next
// older one is tried; with none left, the run starts afresh (or, in a rollback, stops).
#include "trainer/train_internal.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <config.h>   // ANVIL_VERSION

#include "checkpoint/checkpoint.h"

// ---- pieces ---------------------------------------------------------------------------

// A piece and where its data lives in this rank's host copy.
typedef struct piece_list {
    int64_t vocab;      // V: the global rows of vocabulary tensors (padding never stored)
    ckpt_piece *p;
    size_t *src;        // float offset of each piece's data in the host buffer
    int n, cap;
} piece_list;

static int push(piece_list *l, const param_tensor *t, const char *kind, const char *file,
                int64_t r0, int64_t c0, int64_t rows, int64_t cols, size_t src) {
    if (rows <= 0 || cols <= 0) return 0;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 256;
        ckpt_piece *p = realloc(l->p, (size_t)cap * sizeof *p);
        size_t *s = p ? realloc(l->src, (size_t)cap * sizeof *s) : NULL;
        if (p) l->p = p;
        if (!p || !s) return 1;
        l->src = s;
        l->cap = cap;
    }
    ckpt_piece *q = &l->p[l->n];
    memset(q, 0, sizeof *q);
    snprintf(q->kind, sizeof q->kind, "%s", kind);
    snprintf(q->name, sizeof q->name, "%s", t->name);
    snprintf(q->file, sizeof q->file, "%s", file);
    q->ndim = t->ndim;
    q->gshape[0] = t->is_vocab ? l->vocab : t->gshape[0];
    q->gshape[1] = t->ndim == 2 ? t->gshape[1] : 0;
    // local -> global coordinates
    if (t->split_dim == 0) r0 += t->split_off;
    if (t->split_dim == 1) c0 += t->split_off;
    q->off[0] = r0;
    q->off[1] = t->ndim == 2 ? c0 : 0;
    q->len[0] = rows;
    q->len[1] = t->ndim == 2 ? cols : 1;
    l->src[l->n++] = src;
    return 0;
}

// The rectangles of elements [a, b) (row-major, relative to the tensor's start) of
// local tensor t, without vocabulary padding rows (rows >= vrows). src0 is the host
// offset of element a. Returns 0, or 1 out of memory.
static int push_range(piece_list *l, const param_tensor *t, const char *kind,
                      const char *file, size_t a, size_t b, size_t src0, int64_t vrows) {
    const size_t cols = t->ndim == 2 ? (size_t)t->shape[1] : 1;
    size_t src = src0;
    if (t->ndim == 1) {
        // 1-D: one range; the global shape is the tensor's (vocab tensors are 2-D)
        return push(l, t, kind, file, (int64_t)a, 0, (int64_t)(b - a), 1, src);
    }
    while (a < b) {
        size_t row = a / cols, col = a % cols;
        size_t rows, ncols;
        if (col != 0 || b - a < cols) {          // a partial row
            ncols = cols - col < b - a ? cols - col : b - a;
            rows = 1;
        } else {                                  // whole rows
            rows = (b - a) / cols;
            ncols = cols;
        }
        int64_t keep = (int64_t)rows;
        if ((int64_t)row + keep > vrows) keep = vrows - (int64_t)row;   // drop padding
        if (keep > 0 && push(l, t, kind, file, (int64_t)row, (int64_t)col, keep,
                             (int64_t)ncols, src))
            return 1;
        a += rows * ncols;
        src += rows * ncols;
    }
    return 0;
}

// Rows of t that hold real data: all of them, except vocabulary tensors (Vv of Vp).
static int64_t real_rows(const model *m, const param_tensor *t) {
    return t->is_vocab ? m->Vv : t->shape[0];
}

// This rank's pieces of kind "param" (src: offsets into a copy of m->params, or with
// ranged_params into a copy of the master weights o->master, relative to o->lo like
// the moments and cut to [lo, hi) like them) and of the moments (src: offsets into a
// copy of o->m / o->v, relative to o->lo). With all_tensors, non-counted tensors too
// (what a rank must read, not write).
static int build_pieces(piece_list *l, const model *m, const optimizer *o, int params,
                        int moments, int all_tensors, int ranged_params, const char *file) {
    l->vocab = m->V;
    for (int i = 0; i < m->n_tensors; i++) {
        const param_tensor *t = &m->tensors[i];
        if (!t->counted && !all_tensors) continue;
        if (params && !ranged_params &&
            push_range(l, t, "param", file, 0, t->numel, t->offset, real_rows(m, t)))
            return 1;
        if (!o || !(moments || (params && ranged_params))) continue;
        size_t a = t->offset > o->lo ? t->offset : o->lo;
        size_t b = t->offset + t->numel < o->hi ? t->offset + t->numel : o->hi;
        if (a >= b) continue;
        if (params && ranged_params &&
            push_range(l, t, "param", file, a - t->offset, b - t->offset, a - o->lo,
                       real_rows(m, t)))
            return 1;
        for (int k = 0; moments && k < 2; k++)
            if (push_range(l, t, k ? "adam_v" : "adam_m", file, a - t->offset, b - t->offset,
                           a - o->lo, real_rows(m, t)))
                return 1;
    }
    return 0;
}

// ---- save -----------------------------------------------------------------------------
//
// A save has three phases. (1) Collective, on the training thread: rank 0 creates the
// tmp directory; every rank builds its piece list and copies what it writes (its
// parameters and moments) to host memory. (2) Local: the rank writes its piece file,
// hashes and fsyncs it. (3) Collective, on the training thread: every rank's piece
// list and file hash go to rank 0, which writes model.h5 (the index), the MANIFEST
// and commits. A synchronous save runs them in a row; with checkpoint.async, phase 2
// runs on a background thread while training continues, and phase 3 runs at the
// first step boundary at which every rank's write has finished (or before the next
// save, or at the end).

// Where piece p's data lives in a host copy of the parameters and moments.
static const float *piece_data(const ckpt_piece *p, size_t src, const float *params,
                               const float *mom_m, const float *mom_v) {
    if (strcmp(p->kind, "param") == 0) return params + src;
    return (strcmp(p->kind, "adam_m") == 0 ? mom_m : mom_v) + src;
}

// A rank's pieces go into files of about this size, so that hashing one (for the
// MANIFEST) overlaps writing the next, and only the last one's hash is not hidden.
#define CKPT_PART_BYTES ((size_t)256 << 20)
#define CKPT_MAX_PARTS 4096

struct train_save {
    piece_list l;
    float *host, *hm, *hv;      // a host copy this save owns (async or a device backend
                                // without c->staging); NULL when the pieces point at the
                                // state or at c->staging
    const float **data;         // (l.n) each piece's data
    char tmp[CKPT_PATH_MAX], root[CKPT_PATH_MAX];
    train_state ts;
    int n_parts;                // files this rank writes
    int *part_first;            // (n_parts + 1) first piece of each file
    ckpt_file_hash *hash;       // (n_parts) each file's hash
    int rc;                     // rc of phase 2 on this rank
    atomic_int done;            // phase 2 finished
    int thread;                 // phase 2 runs on `th`
    pthread_t th;
    double t_begin, blocked_s;  // when the save began; training time it has blocked
    double write_s;             // phase 2's duration
    ckpt_checksum algo;         // checkpoint.checksum
};

static double mono_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void save_free(train_save *sv) {
    if (!sv) return;
    free(sv->l.p);
    free(sv->l.src);
    free(sv->host);
    free(sv->hm);
    free(sv->hv);
    free(sv->data);
    free(sv->part_first);
    free(sv->hash);
    free(sv);
}

typedef struct hash_job {
    char path[CKPT_PATH_MAX + 40];
    ckpt_checksum algo;
    ckpt_file_hash *out;
    int rc;
} hash_job;

static void *hash_part(void *arg) {
    hash_job *j = arg;
    j->rc = ckpt_hash_file(j->path, j->algo, j->out);
    return NULL;
}

// Phase 2: this rank's part files. Each one's CRC-32C comes from the writer itself
// (ckpt_h5_write_pieces: from the pieces' CRCs, nothing read back); for SHA-256
// MANIFESTs each part is read back and hashed on a second thread while the next one
// is written.
static void *save_write(void *arg) {
    train_save *sv = arg;
    double t0 = mono_s();
    hash_job job[2];
    pthread_t th;
    int hashing = 0;
    for (int p = 0; p < sv->n_parts && sv->rc == 0; p++) {
        hash_job *j = &job[p % 2];
        const char *name = sv->l.p[sv->part_first[p]].file;
        snprintf(j->path, sizeof j->path, "%s/%s", sv->tmp, name);
        j->out = &sv->hash[p];
        j->algo = sv->algo;
        j->rc = 0;
        const int a = sv->part_first[p], b = sv->part_first[p + 1];
        uint32_t crc = 0;
        uint64_t size = 0;
        sv->rc = ckpt_h5_write_pieces(j->path, sv->l.p + a, sv->data + a, b - a, &crc, &size);
        if (sv->rc == 0 && sv->algo == CKPT_CHECKSUM_CRC32C) {
            ckpt_file_hash *h = &sv->hash[p];
            snprintf(h->name, sizeof h->name, "%s", name);
            snprintf(h->hex, sizeof h->hex, "%08x", crc);
            h->algo = CKPT_CHECKSUM_CRC32C;
            h->size = size;
            continue;
        }
        if (hashing) {
            pthread_join(th, NULL);
            hashing = 0;
            if (job[(p + 1) % 2].rc) sv->rc = job[(p + 1) % 2].rc;
        }
        if (sv->rc) break;
        if (pthread_create(&th, NULL, hash_part, j) == 0) hashing = 1;
        else hash_part(j), sv->rc = j->rc;
    }
    if (hashing) {
        pthread_join(th, NULL);
        if (job[(sv->n_parts - 1) % 2].rc && sv->rc == 0) sv->rc = job[(sv->n_parts - 1) % 2].rc;
    }
    sv->write_s = mono_s() - t0;
    atomic_store(&sv->done, 1);
    return NULL;
}

// Cut the piece list into part files of about CKPT_PART_BYTES (in order; a piece is
// never split). Returns 0, or 1 out of memory.
static int assign_parts(train_save *sv, int rank) {
    sv->part_first = malloc((size_t)(sv->l.n + 2) * sizeof *sv->part_first);
    if (!sv->part_first) return 1;
    size_t bytes = 0;
    sv->n_parts = 0;
    for (int i = 0; i < sv->l.n; i++) {
        size_t b = (size_t)sv->l.p[i].len[0] * (size_t)sv->l.p[i].len[1] * sizeof(float);
        if (i == 0 || (bytes + b > CKPT_PART_BYTES && bytes > 0 && sv->n_parts < CKPT_MAX_PARTS)) {
            sv->part_first[sv->n_parts++] = i;
            bytes = 0;
        }
        bytes += b;
        snprintf(sv->l.p[i].file, sizeof sv->l.p[i].file, "rank_%05d_%03d.h5", rank,
                 sv->n_parts - 1);
    }
    sv->part_first[sv->n_parts] = sv->l.n;
    sv->hash = calloc((size_t)(sv->n_parts > 0 ? sv->n_parts : 1), sizeof *sv->hash);
    return sv->hash ? 0 : 1;
}

// Phase 1. Returns the agreed exit code; on 0, *out is the save in progress.
static int save_begin(const train_ckpt *c, const train_state *ts, int async, train_save **out) {
    const model *m = c->m;
    const optimizer *o = c->opt;
    parallel_grid *g = c->grid;
    double t0 = mono_s();
    train_save *sv = calloc(1, sizeof *sv);
    int rc = sv ? 0 : 1;
    if (sv) {
        snprintf(sv->root, sizeof sv->root, "%s/checkpoints", c->cfg->run.dir);
        sv->ts = *ts;
        sv->ts.opt_t = o->t;
        sv->t_begin = t0;
        sv->algo = (ckpt_checksum)c->cfg->checkpoint.checksum;
        if (g->rank == 0) rc = ckpt_begin(sv->root, ts->step, sv->tmp, sizeof sv->tmp);
    }
    if ((rc = train_agree_rc(g, rc)) != 0) {
        save_free(sv);
        return rc;
    }
    ckpt_tmp_dir(sv->root, ts->step, sv->tmp, sizeof sv->tmp);
    // The fp32 parameters: m->params on the cpu; the master weights where the
    // backend's weights are bf16, cut like the moments (each dp rank its own range
    // under ZeRO-1, since that is all the master it holds).
    const int master = o->master != NULL;
    const int write_moments = c->zero || g->dp_rank == 0;
    const int write_params = master ? write_moments : g->dp_rank == 0;
    if (build_pieces(&sv->l, m, o, write_params, write_moments, 0, master, "")) rc = 1;
    if (rc == 0 && assign_parts(sv, g->rank)) rc = 1;
    const size_t nm = o->hi - o->lo;
    // A synchronous save of host memory writes straight from the training state; an
    // async one (training goes on changing it) or a device backend needs a copy.
    const int copy = async || !m->be->host_memory;
    float *stage[3] = {NULL, NULL, NULL};   // the host copy, when one is needed
    if (rc == 0 && sv->l.n > 0) {
        if (copy && c->staging) {
            // kept from one save to the next: no page faults on 3 x the state each time
            if (!c->staging[0]) c->staging[0] = malloc(m->n_alloc * sizeof(float) + 1);
            if (!c->staging[1]) c->staging[1] = malloc(nm * sizeof(float) + 1);
            if (!c->staging[2]) c->staging[2] = malloc(nm * sizeof(float) + 1);
            for (int k = 0; k < 3; k++) stage[k] = c->staging[k];
        } else if (copy) {
            stage[0] = sv->host = malloc(m->n_alloc * sizeof(float) + 1);
            stage[1] = sv->hm = malloc(nm * sizeof(float) + 1);
            stage[2] = sv->hv = malloc(nm * sizeof(float) + 1);
        }
        sv->data = malloc((size_t)sv->l.n * sizeof *sv->data);
        if ((copy && (!stage[0] || !stage[1] || !stage[2])) || !sv->data) rc = 1;
    }
    if (rc == 0 && sv->l.n > 0) {
        const float *P = master ? o->master : (const float *)m->params, *M = o->m, *Vv = o->v;
        if (copy) {
            m->be->copy_to_host(stage[0], P, (master ? nm : m->n_alloc) * sizeof(float));
            m->be->copy_to_host(stage[1], o->m, nm * sizeof(float));
            m->be->copy_to_host(stage[2], o->v, nm * sizeof(float));
            P = stage[0], M = stage[1], Vv = stage[2];
        }
        for (int i = 0; i < sv->l.n; i++)
            sv->data[i] = piece_data(&sv->l.p[i], sv->l.src[i], P, M, Vv);
    }
    if (rc == 1) fprintf(stderr, "anvil: checkpoint: out of memory on rank %d\n", g->rank);
    if ((rc = train_agree_rc(g, rc)) != 0) {
        save_free(sv);
        return rc;
    }
    if (async) {
        sv->thread = pthread_create(&sv->th, NULL, save_write, sv) == 0;
        if (!sv->thread) save_write(sv);   // no thread: write now
    } else {
        save_write(sv);
    }
    sv->blocked_s = mono_s() - t0;
    *out = sv;
    return 0;
}

// Phase 3 (waits for phase 2 first). Returns the agreed exit code; frees sv.
static int save_finish(const train_ckpt *c, train_save *sv) {
    parallel_grid *g = c->grid;
    comm_group *w = g->world_g;
    double t0 = mono_s();
    if (sv->thread) pthread_join(sv->th, NULL);
    int rc = train_agree_rc(g, sv->rc);
    if (rc != 0) goto out;

    // A test hook: a window in which every piece is on disk and nothing is committed,
    // so the kill -9 test can hit the middle of a save deterministically.
    const char *pause = getenv("ANVIL_TEST_CKPT_PAUSE");
    if (pause && g->rank == 0) {
        fprintf(stderr, "anvil: test hook: checkpoint %s paused\n", sv->tmp);
        sleep((unsigned)atoi(pause));
    }

    // every rank's piece list and file hash to rank 0, which writes the index, the
    // MANIFEST, and commits
    const size_t words = sizeof(ckpt_piece) / sizeof(int32_t);
    const size_t hwords = sizeof(ckpt_file_hash) / sizeof(int32_t);
    if (g->rank != 0) {
        int32_t n[2] = {sv->l.n, sv->n_parts};
        rc = w->be->send(w, n, 2, COMM_DTYPE_I32, 0) ||
             (n[0] > 0 && (w->be->send(w, sv->l.p, words * (size_t)n[0], COMM_DTYPE_I32, 0) ||
                           w->be->send(w, sv->hash, hwords * (size_t)n[1], COMM_DTYPE_I32, 0)));
        rc = rc ? 1 : 0;
    } else {
        ckpt_piece *all = malloc((size_t)(sv->l.n > 0 ? sv->l.n : 1) * sizeof *all);
        ckpt_file_hash *hashes = malloc((size_t)(sv->n_parts > 0 ? sv->n_parts : 1) *
                                        sizeof *hashes);
        int n_all = sv->l.n, n_hash = sv->n_parts;
        if (!all || !hashes) rc = 1;
        if (rc == 0 && sv->l.n) {
            memcpy(all, sv->l.p, (size_t)sv->l.n * sizeof *all);
            memcpy(hashes, sv->hash, (size_t)sv->n_parts * sizeof *hashes);
        }
        for (int r = 1; r < g->world && rc == 0; r++) {
            int32_t n[2] = {0, 0};
            if (w->be->recv(w, n, 2, COMM_DTYPE_I32, r)) {
                rc = 1;
                break;
            }
            if (n[0] == 0) continue;
            ckpt_piece *p = realloc(all, (size_t)(n_all + n[0]) * sizeof *p);
            if (p) all = p;
            ckpt_file_hash *h = p ? realloc(hashes, (size_t)(n_hash + n[1]) * sizeof *h) : NULL;
            if (h) hashes = h;
            if (!p || !h) {
                rc = 1;
                break;
            }
            if (w->be->recv(w, all + n_all, words * (size_t)n[0], COMM_DTYPE_I32, r) ||
                w->be->recv(w, hashes + n_hash, hwords * (size_t)n[1], COMM_DTYPE_I32, r))
                rc = 1;
            n_all += n[0];
            n_hash += n[1];
        }
        ckpt_state st = {.step = sv->ts.step, .tokens = sv->ts.tokens,
                         .samples = sv->ts.samples, .opt_t = sv->ts.opt_t,
                         .sample_rng = sv->ts.sample_rng, .skipped = sv->ts.skipped,
                         .dp = g->dp, .tp = g->tp, .pp = g->pp, .zero = c->zero,
                         .format = CKPT_FORMAT};
        snprintf(st.anvil_version, sizeof st.anvil_version, "%s", ANVIL_VERSION);
        char path[CKPT_PATH_MAX + 16];
        snprintf(path, sizeof path, "%s/model.h5", sv->tmp);
        if (rc == 0) rc = ckpt_h5_write_index(path, all, n_all, &st, c->config_yaml);
        if (rc == 0) rc = ckpt_manifest_write_known(sv->tmp, sv->algo, hashes, n_hash);
        if (rc == 0)
            rc = ckpt_commit(sv->root, sv->tmp, sv->ts.step, c->cfg->checkpoint.keep,
                             c->cfg->checkpoint.keep_every);
        free(all);
        free(hashes);
    }
    rc = train_agree_rc(g, rc);
    if (rc == 0 && g->rank == 0) {
        const double blocked = sv->blocked_s + (mono_s() - t0);
        printf("checkpoint step %ld saved: %.2f s in all, training blocked %.2f s%s\n",
               sv->ts.step, mono_s() - sv->t_begin, blocked, sv->thread ? " (async)" : "");
        fflush(stdout);
        FILE *mf = c->metrics ? *c->metrics : NULL;
        if (mf) {
            fprintf(mf, "{\"step\": %ld, \"checkpoint_s\": %.6g, \"checkpoint_blocked_s\": "
                    "%.6g}\n", sv->ts.step, mono_s() - sv->t_begin, blocked);
            fflush(mf);
        }
    }
out:
    save_free(sv);
    return rc;
}

int train_checkpoint_save(const train_ckpt *c, const train_state *ts, int async) {
    int rc = 0;
    if (*c->pending) {   // the next save waits for the previous one
        rc = save_finish(c, *c->pending);
        *c->pending = NULL;
        if (rc) return rc;
    }
    train_save *sv = NULL;
    if ((rc = save_begin(c, ts, async, &sv)) != 0) return rc;
    if (async) {
        *c->pending = sv;
        return 0;
    }
    return save_finish(c, sv);
}

int train_checkpoint_poll(const train_ckpt *c, int all_done, int wait) {
    train_save *sv = *c->pending;
    if (!sv || (!all_done && !wait)) return 0;
    *c->pending = NULL;
    return save_finish(c, sv);
}

void train_checkpoint_abandon(const train_ckpt *c) {
    train_save *sv = *c->pending;
    if (!sv) return;
    if (sv->thread) pthread_join(sv->th, NULL);
    save_free(sv);
    *c->pending = NULL;
}

int train_checkpoint_write_done(const train_ckpt *c) {
    return !*c->pending || atomic_load(&(*c->pending)->done);
}

// ---- resume ---------------------------------------------------------------------------

// Decide what to resume from (checkpoint.resume mode r, among the steps below `below`):
// rank 0 looks, every rank learns the answer. Returns 0 with dir and *step set, 1 for
// nothing to resume, 2 (a given path that does not verify: printed).
static int find(const anvil_config *cfg, const char *r, long below, parallel_grid *g,
                char *dir, size_t n, long *step) {
    // the answer travels as int32 words: status, step, then the path
    int32_t msg[2 + CKPT_PATH_MAX / 4];
    memset(msg, 0, sizeof msg);
    char *path = (char *)(msg + 2);
    if (g->rank == 0) {
        long s = -1;
        if (strcmp(r, "none") == 0) {
            msg[0] = 1;
        } else if (strcmp(r, "auto") == 0) {
            char root[CKPT_PATH_MAX];
            snprintf(root, sizeof root, "%s/checkpoints", cfg->run.dir);
            msg[0] = ckpt_find_latest_below(root, below, 1, path, CKPT_PATH_MAX - 1, &s);
        } else {
            char why[512];
            snprintf(path, CKPT_PATH_MAX - 1, "%s", r);
            if (ckpt_verify_quick(path, why, sizeof why) != 0) {
                fprintf(stderr, "anvil: checkpoint.resume '%s': %s\n", r, why);
                msg[0] = 2;
            }
        }
        msg[1] = (int32_t)s;
    }
    if (g->world_g->be->broadcast(g->world_g, msg, sizeof msg / 4, COMM_DTYPE_I32, 0)) return 1;
    snprintf(dir, n, "%s", path);
    *step = msg[1];
    return msg[0];
}

int train_checkpoint_load(const train_ckpt *c, const char *dir, train_state *ts, char *why,
                          size_t why_n) {
    model *m = c->m;
    optimizer *o = c->opt;
    parallel_grid *g = c->grid;
    ckpt_reader *r = NULL;
    ckpt_state st;
    piece_list l = {0};
    ckpt_piece *stored = NULL;
    ckpt_rect *want = NULL;
    int n_stored = 0;
    float *host = NULL, *hm = NULL, *hv = NULL;
    int rc = ckpt_h5_open(&r, dir, &st);
    // the model must be the one that was saved: every tensor this rank holds exists
    // with the same global shape (vocabulary rows: V)
    for (int i = 0; rc == 0 && i < m->n_tensors; i++) {
        const param_tensor *t = &m->tensors[i];
        int nd;
        int64_t gs[2], want0 = t->is_vocab ? m->V : t->gshape[0];
        if (ckpt_h5_shape(r, "param", t->name, &nd, gs) != 0) {
            fprintf(stderr, "anvil: checkpoint '%s' has no tensor '%s': it was written for "
                    "another model (compare its config with model.*)\n", dir, t->name);
            rc = 2;
        } else if (nd != t->ndim || gs[0] != want0 || (nd == 2 && gs[1] != t->gshape[1])) {
            fprintf(stderr, "anvil: checkpoint '%s': tensor '%s' is %lldx%lld, this model's "
                    "is %lldx%lld (model.* differs from the run that wrote it)\n", dir,
                    t->name, (long long)gs[0], (long long)(nd == 2 ? gs[1] : 1),
                    (long long)want0, (long long)(t->ndim == 2 ? t->gshape[1] : 1));
            rc = 2;
        }
    }
    if (rc == 0) rc = ckpt_h5_pieces(r, &stored, &n_stored);
    if (rc == 0 && build_pieces(&l, m, o, 1, o != NULL, 1, 0, "")) rc = 1;
    const size_t nm = o ? o->hi - o->lo : 0;
    // Host-memory fp32 backends read straight into the model and optimizer; others, and
    // any run with master weights, through a host copy (so the test hook
    // ANVIL_TEST_MASTER runs the GPU's way on the cpu). Either way padding rows and gaps
    // end up zero.
    const int direct = m->be->host_memory && m->be->act_dtype == ANV_DTYPE_F32 &&
                       !(o && o->master);
    if (rc == 0 && direct) {
        m->be->zero(m->params, m->n_alloc * sizeof(float));
        if (o) m->be->zero(o->m, nm * sizeof(float)), m->be->zero(o->v, nm * sizeof(float));
        host = m->params;
        hm = o ? o->m : NULL;
        hv = o ? o->v : NULL;
    } else if (rc == 0) {
        host = calloc(m->n_alloc, sizeof(float));
        hm = calloc(nm + 1, sizeof(float));
        hv = calloc(nm + 1, sizeof(float));
        if (!host || !hm || !hv) rc = 1;
    }
    if (rc == 0 && !(want = malloc((size_t)(l.n > 0 ? l.n : 1) * sizeof *want))) rc = 1;
    for (int i = 0; rc == 0 && i < l.n; i++) {
        const ckpt_piece *p = &l.p[i];
        want[i] = (ckpt_rect){p->kind, p->name, {p->off[0], p->off[1]}, {p->len[0], p->len[1]},
                              (float *)piece_data(p, l.src[i], host, hm, hv)};
    }
    if (why_n > 0) why[0] = '\0';
    if (rc == 0 && (rc = ckpt_load_rects(dir, stored, n_stored, want, l.n, why, why_n)) == 2)
        rc = 3;
    if (rc == 0) {
        // fp32 from the file: the working weights (rounded to the backend's type) and,
        // where the backend has them, the master weights of [lo, hi) unrounded
        if (!direct) m->be->act_from_host_f32(m->params, host, m->n_alloc);
        if (o) optimizer_load_master(o, m, host + o->lo);
        if (o && !direct) {
            m->be->copy_from_host(o->m, hm, nm * sizeof(float));
            m->be->copy_from_host(o->v, hv, nm * sizeof(float));
        }
    }
    if (rc == 1) fprintf(stderr, "anvil: checkpoint: out of memory loading '%s'\n", dir);
    if (!direct) {
        free(host);
        free(hm);
        free(hv);
    }
    free(want);
    free(stored);
    free(l.p);
    free(l.src);
    ckpt_h5_close(r);
    rc = train_agree_rc(g, rc);
    if (rc == 0) {
        if (o) o->t = st.opt_t;
        ts->step = st.step;
        ts->tokens = st.tokens;
        ts->samples = st.samples;
        ts->skipped = st.skipped;
        ts->sample_rng = st.sample_rng;
        if (g->rank == 0 && o)
            printf("resumed from %s: step %ld, %lld tokens, data position %lld samples "
                   "(written by dp=%d tp=%d pp=%d zero=%d)\n", dir, st.step, st.tokens,
                   st.samples, st.dp, st.tp, st.pp, st.zero);
    }
    return rc;
}

int train_checkpoint_resume(const train_ckpt *c, const char *mode, int rollback,
                            train_state *ts, long *resumed) {
    parallel_grid *g = c->grid;
    long below = LONG_MAX;
    int clobbered = 0;   // a failed load has overwritten the state
    *resumed = -1;
    for (;;) {
        char dir[CKPT_PATH_MAX];
        long step = -1;
        const double t0 = mono_s();
        int rc = find(c->cfg, mode, below, g, dir, sizeof dir, &step);
        if (rc == 1 && clobbered && rollback) {
            if (g->rank == 0)
                fprintf(stderr, "anvil: no valid checkpoint left to roll back to in %s/checkpoints\n",
                        c->cfg->run.dir);
            return 2;
        }
        if (rc == 1 && clobbered) {   // nothing left: start afresh, as if none had existed
            if (g->rank == 0)
                fprintf(stderr, "anvil: no valid checkpoint left; starting from scratch\n");
            if (model_init_weights(c->m, c->cfg->train.seed) != 0) return train_agree_rc(g, 1);
            if (c->opt) {
                const size_t nm = c->opt->hi - c->opt->lo;
                c->m->be->zero(c->opt->m, nm * sizeof(float));
                c->m->be->zero(c->opt->v, nm * sizeof(float));
                c->opt->t = 0;
            }
            return train_agree_rc(g, 0);
        }
        if (rc) return rc == 1 ? 0 : rc;   // 1: a fresh start
        watchdog_beat("loading a checkpoint");
        const double t1 = mono_s();
        char why[CKPT_PATH_MAX];
        rc = train_checkpoint_load(c, dir, ts, why, sizeof why);
        // the ranks that found the damage say what it is
        const int fallback = strcmp(mode, "auto") == 0;
        if (rc == 3 && why[0] && fallback) fprintf(stderr, "anvil: checkpoint %s: %s; skipped\n", dir, why);
        if (rc == 3 && why[0] && !fallback) fprintf(stderr, "anvil: checkpoint.resume '%s': %s\n", mode, why);
        if (rc == 0) {
            *resumed = ts->step;
            if (g->rank == 0 && !rollback)
                printf("checkpoint loaded in %.2f s (finding it %.2f s, reading and checking "
                       "the tensors %.2f s)\n", mono_s() - t0, t1 - t0, mono_s() - t1);
            return 0;
        }
        if (rc != 3) return rc;
        if (!fallback) return 2;   // a given path: nothing to fall back to
        clobbered = 1;
        below = step;
    }
}
