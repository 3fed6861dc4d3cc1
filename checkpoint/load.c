// checkpoint/load.c: reading the rectangles a rank needs straight out of the piece
// files, checking each piece's CRC-32C in the same pass.
//
// Why not through HDF5: the virtual datasets of model.h5 can serve any slice, but a
// resume must also verify what it loads, and verifying whole files first (then
// reading them again through HDF5) reads a checkpoint twice. The piece table in
// model.h5 gives, for every piece, its file, the byte address of its contiguous data
// and a CRC-32C of that data, so the loader reads what it needs once, in 1 MiB
// chunks: each chunk is checksummed while it is still in cache and copied to where
// its elements go (or read straight into the destination when the piece is exactly a
// wanted rectangle, the usual case when the layout did not change). A file the rank
// needs most of is read whole and checked against its MANIFEST checksum, so every
// byte of it is verified (load_file); from a file it needs little of (another layout
// wrote it) it reads only those pieces and checks each one's CRC-32C. model.h5 itself
// has been checked against the MANIFEST before (ckpt_verify_quick), so the addresses
// are the ones the writer recorded; they are still checked against each file's size.
//
// Shapes: a piece or rectangle is (len[0], len[1]) at (off[0], off[1]) of its tensor; a
// 1-D one is handled as a single row (1, len[0]) so that it copies in one run.
#include "checkpoint/checkpoint.h"
#include "checkpoint/ckpt_internal.h"
#include "checkpoint/crc32c.h"

#include <errno.h>
#include <fcntl.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOAD_CHUNK ((size_t)2 << 20)   // bytes per read: big for the disk, small for the cache
#define LOAD_READERS 4                  // files read at once, at least
#define LOAD_ALIGN 4096                 // O_DIRECT: offsets, lengths and buffers in 4 KiB blocks

// A rectangle as a 2-D block: rows [r, r + nr), columns [c, c + nc).
typedef struct block {
    int64_t r, c, nr, nc;
} block;

static block as_block(int ndim, const int64_t off[2], const int64_t len[2]) {
    if (ndim == 1) return (block){0, off[0], 1, len[0]};
    return (block){off[0], off[1], len[0], len[1]};
}

static int same_tensor(const ckpt_piece *p, const char *kind, const char *name) {
    return strcmp(p->kind, kind) == 0 && strcmp(p->name, name) == 0;
}

// One piece's data going to one wanted rectangle.
typedef struct use {
    int piece, want;
    block x;       // the overlap, in tensor coordinates
} use;

// A piece to read: its uses are use[first .. first + n_uses).
typedef struct job {
    int piece, first, n_uses;
} job;

// qsort_r comparators (glibc's argument order); ctx is the piece array.
static int cmp_piece_idx(const void *a, const void *b, void *ctx) {
    const ckpt_piece *pieces = ctx;
    const ckpt_piece *x = &pieces[*(const int *)a], *y = &pieces[*(const int *)b];
    int c = strcmp(x->kind, y->kind);
    if (c == 0) c = strcmp(x->name, y->name);
    return c;
}

static int cmp_job(const void *a, const void *b, void *ctx) {
    const ckpt_piece *pieces = ctx;
    const ckpt_piece *x = &pieces[((const job *)a)->piece];
    const ckpt_piece *y = &pieces[((const job *)b)->piece];
    int c = strcmp(x->file, y->file);
    if (c == 0) c = (x->addr > y->addr) - (x->addr < y->addr);
    return c;
}

static int cmp_use(const void *a, const void *b) {
    int x = ((const use *)a)->piece, y = ((const use *)b)->piece;
    return (x > y) - (x < y);
}

// A piece being read and where its bytes go.
typedef struct piece_io {
    const ckpt_piece *q;
    block pb;                   // its rectangle
    int64_t bytes;              // its data: [q->addr, q->addr + bytes) of the file
    int direct;                 // exactly one wanted rectangle: bytes go contiguously
    const use *uses;            // its uses
    int n_uses;
    const ckpt_rect *want;
    uint32_t crc;               // of the bytes delivered so far
} piece_io;

// Deliver the file bytes [f0, f1), held in buf, to where piece io's bytes among them
// go, adding them to io->crc when crc is set. Works in bytes, not elements: a block
// boundary may cut a float in two.
static void deliver(piece_io *io, const char *buf, int64_t f0, int64_t f1, int crc) {
    const int64_t a = io->q->addr;
    const int64_t s = f0 > a ? f0 : a, e = f1 < a + io->bytes ? f1 : a + io->bytes;
    if (s >= e) return;
    const char *src = buf + (s - f0);
    const int64_t b0 = s - a, b1 = e - a;   // piece-relative bytes
    if (crc) io->crc = crc32c_update(io->crc, src, (size_t)(b1 - b0));
    if (io->direct) {
        memcpy((char *)io->want[io->uses[0].want].dst + b0, src, (size_t)(b1 - b0));
        return;
    }
    const block pb = io->pb;
    const int64_t row_bytes = pb.nc * (int64_t)sizeof(float);
    for (int k = 0; k < io->n_uses; k++) {
        const use *u = &io->uses[k];
        const ckpt_rect *w = &io->want[u->want];
        const block wb = as_block(io->q->ndim, w->off, w->len);
        const block x = u->x;
        // piece-relative rows of the overlap that these bytes touch
        int64_t ra = x.r - pb.r, rb = ra + x.nr;
        if (ra < b0 / row_bytes) ra = b0 / row_bytes;
        if (rb > (b1 - 1) / row_bytes + 1) rb = (b1 - 1) / row_bytes + 1;
        for (int64_t r = ra; r < rb; r++) {
            int64_t s0 = r * row_bytes + (x.c - pb.c) * (int64_t)sizeof(float);
            int64_t s1 = s0 + x.nc * (int64_t)sizeof(float);
            const int64_t d0 = ((r + pb.r - wb.r) * wb.nc + (x.c - wb.c)) * (int64_t)sizeof(float);
            const int64_t skip = s0 < b0 ? b0 - s0 : 0;
            if (s1 > b1) s1 = b1;
            if (s0 + skip >= s1) continue;
            memcpy((char *)w->dst + d0 + skip, buf + (a + s0 + skip - f0), (size_t)(s1 - s0 - skip));
        }
    }
}

// Read the file bytes [off, off + n) into buf (LOAD_CHUNK bytes, 4096-aligned; off a
// multiple of 4096 when the file is open with O_DIRECT, which also needs the length
// rounded up to whole blocks: the read simply stops at the end of the file). Returns
// 0, or -1 with errno set (EIO for an unexpected end of file).
static int read_block(int fd, int direct, char *buf, size_t n, int64_t off) {
    size_t got = 0;
    while (got < n) {
        size_t want = n - got;
        if (direct) want = (want + LOAD_ALIGN - 1) / LOAD_ALIGN * LOAD_ALIGN;
        ssize_t r = pread(fd, buf + got, want, (off_t)(off + (int64_t)got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = EIO;
            return -1;
        }
        got += (size_t)r;
        if (direct && got < n && got % LOAD_ALIGN) return errno = EIO, -1;   // cannot go on aligned
    }
    return 0;
}

// Read the jobs [a, b) (all in one file, by address) and fill their uses. When they
// hold most of the file (the usual case: a rank reading back what it wrote) the whole
// file is read front to back, the bytes between pieces included, and checked against
// its MANIFEST checksum, so a resume verifies every byte; otherwise (a new layout
// wanting a few pieces of it) only those pieces are read, each checked against its
// own CRC-32C. The file is opened with O_DIRECT where the filesystem allows: the data
// goes from the disk into the (cache-resident) block buffer, is checksummed there
// and copied once into place, without passing through the page cache (whose pages a
// process holding gigabytes of model state may first have to get from a virtual
// machine's host, slowly). Returns 0, or 2 with why set.
static int load_file(const char *dir, const ckpt_manifest *m, const ckpt_piece *p,
                     const ckpt_rect *want, const job *jobs, int a, int b, const use *uses,
                     char *why, size_t n) {
    const char *file = p[jobs[a].piece].file;
    const ckpt_manifest_entry *e = ckpt_manifest_find(m, file);
    if (!e) return ckpt_why(why, n, "%s: not in MANIFEST", file);
    char path[CKPT_PATH_MAX];
    if (ckpt_join(path, sizeof path, dir, file) != 0) return ckpt_why(why, n, "%s: path too long", file);
    int direct = 1;
    int fd = ckpt_open_direct(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == EINVAL) {   // no O_DIRECT here (tmpfs before Linux 6.6, some FUSE)
        direct = 0;
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) return ckpt_why(why, n, "%s: %s", file, strerror(errno));
    struct stat st;
    char *buf = aligned_alloc(LOAD_ALIGN, LOAD_CHUNK);
    piece_io *io = calloc((size_t)(b - a), sizeof *io);
    int rc = 0;
    if (!buf || !io) {
        rc = ckpt_why(why, n, "out of memory");
        goto done;
    }
    if (fstat(fd, &st) != 0) {
        rc = ckpt_why(why, n, "%s: %s", file, strerror(errno));
        goto done;
    }
    const int64_t size = (int64_t)st.st_size;
    if (e->size != UINT64_MAX && (uint64_t)size != e->size) {
        rc = ckpt_why(why, n, "%s: %lld bytes, MANIFEST says %llu (truncated or changed)", file,
                      (long long)size, (unsigned long long)e->size);
        goto done;
    }
    int64_t wanted = 0, end = 0;
    for (int j = a; j < b; j++) {
        const ckpt_piece *q = &p[jobs[j].piece];
        piece_io *t = &io[j - a];
        const use *u0 = &uses[jobs[j].first];
        const block wb0 = as_block(q->ndim, want[u0->want].off, want[u0->want].len);
        *t = (piece_io){q, as_block(q->ndim, q->off, q->len), q->len[0] * q->len[1] *
                        (int64_t)sizeof(float), 0, u0, jobs[j].n_uses, want, 0};
        t->direct = t->n_uses == 1 && wb0.r == t->pb.r && wb0.c == t->pb.c &&
                    wb0.nr == t->pb.nr && wb0.nc == t->pb.nc;
        if (q->addr < end || q->addr > size || t->bytes > size - q->addr) {
            rc = ckpt_why(why, n, "%s: %s/%s at byte %lld (%lld bytes) overlaps another piece or "
                          "lies past the end of the file (%lld bytes)", file, q->kind, q->name,
                          (long long)q->addr, (long long)t->bytes, (long long)size);
            goto done;
        }
        end = q->addr + t->bytes;
        wanted += t->bytes;
    }
    // test hook (docs/checkpoint.md): ANVIL_TEST_LOAD_PIECES=1 reads piece by piece always
    const char *hook = getenv("ANVIL_TEST_LOAD_PIECES");
    if (2 * wanted >= size && !(hook && hook[0] == '1')) {   // the whole file, against MANIFEST
        ckpt_sum sum;
        ckpt_sum_init(&sum, m->algo);
        int first = 0;   // the first piece not yet wholly delivered
        for (int64_t off = 0; off < size && rc == 0; off += (int64_t)LOAD_CHUNK) {
            const size_t k = (size_t)(size - off) < LOAD_CHUNK ? (size_t)(size - off) : LOAD_CHUNK;
            if (read_block(fd, direct, buf, k, off) != 0) {
                rc = ckpt_why(why, n, "%s: %s", file, strerror(errno));
                break;
            }
            ckpt_sum_update(&sum, buf, k);   // while the block is in cache
            while (first < b - a && io[first].q->addr + io[first].bytes <= off) first++;
            for (int j = first; j < b - a && io[j].q->addr < off + (int64_t)k; j++)
                deliver(&io[j], buf, off, off + (int64_t)k, 0);
        }
        char hex[CKPT_SUM_HEX];
        ckpt_sum_hex(&sum, hex);
        if (rc == 0 && !ckpt_manifest_matches(m, e, hex))
            rc = ckpt_why(why, n, "%s: %s mismatch (file changed or damaged)", file,
                          ckpt_checksum_label(m->algo));
    } else {   // only the pieces wanted, each checked against its CRC-32C
        for (int j = 0; j < b - a && rc == 0; j++) {
            const int64_t lo = io[j].q->addr / LOAD_ALIGN * LOAD_ALIGN, hi = io[j].q->addr + io[j].bytes;
            for (int64_t off = lo; off < hi && rc == 0; off += (int64_t)LOAD_CHUNK) {
                const size_t k = (size_t)(hi - off) < LOAD_CHUNK ? (size_t)(hi - off) : LOAD_CHUNK;
                if (read_block(fd, direct, buf, k, off) != 0)
                    rc = ckpt_why(why, n, "%s: %s", file, strerror(errno));
                else
                    deliver(&io[j], buf, off, off + (int64_t)k, 1);
            }
            if (rc == 0 && io[j].crc != io[j].q->crc)
                rc = ckpt_why(why, n, "%s: %s/%s (rows %lld+%lld, columns %lld+%lld): CRC-32C "
                              "mismatch (file changed or damaged)", file, io[j].q->kind,
                              io[j].q->name, (long long)io[j].pb.r, (long long)io[j].pb.nr,
                              (long long)io[j].pb.c, (long long)io[j].pb.nc);
        }
    }
done:
    free(io);
    free(buf);
    close(fd);
    return rc;
}

// The overlaps of every wanted rectangle with the pieces into *uses (sorted by piece),
// checking that each rectangle is covered in full. Returns 0, 1 (out of memory) or 2
// with why set.
static int plan(const ckpt_piece *p, int n_p, const ckpt_rect *want, int n_want, use **uses_out,
                int *n_uses_out, char *why, size_t n) {
    int *idx = malloc((size_t)(n_p > 0 ? n_p : 1) * sizeof *idx);
    if (!idx) return 1;
    for (int i = 0; i < n_p; i++) idx[i] = i;
    qsort_r(idx, (size_t)n_p, sizeof *idx, cmp_piece_idx, (void *)p);
    use *uses = NULL;
    int n_uses = 0, cap = 0, rc = 0;
    for (int wi = 0; wi < n_want && rc == 0; wi++) {
        const ckpt_rect *w = &want[wi];
        // the first piece of this tensor (binary search over the sorted index)
        int lo = 0, hi = n_p;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            const ckpt_piece *q = &p[idx[mid]];
            int c = strcmp(q->kind, w->kind);
            if (c == 0) c = strcmp(q->name, w->name);
            if (c < 0) lo = mid + 1;
            else hi = mid;
        }
        // a tensor's pieces share its number of dimensions
        const int nd = lo < n_p && same_tensor(&p[idx[lo]], w->kind, w->name) ? p[idx[lo]].ndim : 2;
        const block wb = as_block(nd, w->off, w->len);
        int64_t covered = 0;
        for (int k = lo; k < n_p && same_tensor(&p[idx[k]], w->kind, w->name); k++) {
            const ckpt_piece *q = &p[idx[k]];
            const block pb = as_block(q->ndim, q->off, q->len);
            block x;
            x.r = wb.r > pb.r ? wb.r : pb.r;
            x.c = wb.c > pb.c ? wb.c : pb.c;
            x.nr = (wb.r + wb.nr < pb.r + pb.nr ? wb.r + wb.nr : pb.r + pb.nr) - x.r;
            x.nc = (wb.c + wb.nc < pb.c + pb.nc ? wb.c + wb.nc : pb.c + pb.nc) - x.c;
            if (x.nr <= 0 || x.nc <= 0) continue;
            if (n_uses == cap) {
                cap = cap ? 2 * cap : 256;
                use *nu = realloc(uses, (size_t)cap * sizeof *nu);
                if (!nu) {
                    rc = 1;
                    break;
                }
                uses = nu;
            }
            uses[n_uses++] = (use){idx[k], wi, x};
            covered += x.nr * x.nc;
        }
        if (rc == 0 && covered != wb.nr * wb.nc)
            rc = ckpt_why(why, n, "model.h5: %s/%s: the pieces cover %lld of the %lld elements "
                          "wanted", w->kind, w->name, (long long)covered,
                          (long long)(wb.nr * wb.nc));
    }
    free(idx);
    if (rc) {
        free(uses);
        return rc;
    }
    if (n_uses > 1) qsort(uses, (size_t)n_uses, sizeof *uses, cmp_use);
    *uses_out = uses;
    *n_uses_out = n_uses;
    return 0;
}

int ckpt_load_rects(const char *dir, const ckpt_piece *p, int n_p, const ckpt_rect *want,
                    int n_want, char *why, size_t n) {
    if (why && n > 0) why[0] = '\0';
    use *uses = NULL;
    int n_uses = 0;
    ckpt_manifest m;
    int rc = ckpt_manifest_load(dir, &m, why, n);
    if (rc) return rc;
    if ((rc = plan(p, n_p, want, n_want, &uses, &n_uses, why, n)) != 0) {
        ckpt_manifest_free(&m);
        return rc;
    }
    // one job per piece used, grouped by file and in address order within a file
    job *jobs = malloc((size_t)(n_uses > 0 ? n_uses : 1) * sizeof *jobs);
    int n_jobs = 0;
    if (!jobs) {
        free(uses);
        ckpt_manifest_free(&m);
        return 1;
    }
    for (int i = 0; i < n_uses; i++) {
        if (i > 0 && uses[i].piece == uses[i - 1].piece) {
            jobs[n_jobs - 1].n_uses++;
            continue;
        }
        jobs[n_jobs++] = (job){uses[i].piece, i, 1};
    }
    if (n_jobs > 1) qsort_r(jobs, (size_t)n_jobs, sizeof *jobs, cmp_job, (void *)p);
    // the files: runs of jobs with the same file, read in parallel
    int *file_first = malloc((size_t)(n_jobs + 1) * sizeof *file_first);
    char(*whys)[256] = NULL;
    int n_files = 0;
    if (file_first) {
        for (int j = 0; j < n_jobs; j++)
            if (j == 0 || strcmp(p[jobs[j].piece].file, p[jobs[j - 1].piece].file) != 0)
                file_first[n_files++] = j;
        file_first[n_files] = n_jobs;
        whys = calloc((size_t)(n_files > 0 ? n_files : 1), sizeof *whys);
    }
    int *rcs = whys ? calloc((size_t)(n_files > 0 ? n_files : 1), sizeof *rcs) : NULL;
    if (!rcs) {
        rc = 1;
    } else {
        // I/O-bound: more readers than cores keep more requests in flight
        int readers = omp_get_max_threads() > LOAD_READERS ? omp_get_max_threads() : LOAD_READERS;
        if (readers > n_files) readers = n_files > 0 ? n_files : 1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(readers)
        for (int f = 0; f < n_files; f++)
            rcs[f] = load_file(dir, &m, p, want, jobs, file_first[f], file_first[f + 1], uses,
                               whys[f], sizeof whys[f]);
        for (int f = 0; f < n_files && rc == 0; f++)
            if (rcs[f]) rc = ckpt_why(why, n, "%s", whys[f]);
    }
    free(rcs);
    free(whys);
    free(file_first);
    free(jobs);
    free(uses);
    ckpt_manifest_free(&m);
    return rc;
}
