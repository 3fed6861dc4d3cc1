// tests/gpu/test_ptx_layouts.cu: the tensor-core fragment layouts the attention kernels
// rely on, against a statement of them that does not come from our own code.
//
// The attention kernels (kernels/cuda/attention.cu) build their mma.sync operands with
// the helpers of kernels/cuda/attention_tile.cuh: ldmatrix (ldsm_x4, ldsm_x4_t) at the
// addresses ldsm_a_addr / ldsm_b_addr give, mma_bf16 (m16n8k16, bf16 in, fp32 out), and
// acc_to_a (an fp32 accumulator tile reused as the next product's A operand). If any of
// those disagreed with the hardware, attention would be wrong in ways the op test can
// only report as a large error. Here each is checked alone, on one warp, with small
// integers whose products and sums are exact in bf16 and fp32, so every result must
// equal the host's integer matrix product exactly:
//   direct  A (16x16) and B (16x8) are put into the lanes' registers by the host, using
//           CuTe's MMA_Traits<SM80_16x8x16_F32BF16BF16F32_TN> layouts (CUTLASS, an
//           independent statement of the PTX manual's fragment figures), one mma_bf16,
//           and the lanes' accumulators read back through CuTe's C layout;
//   tiles   S = X . Y^T (16 x 64, X and Y (., 32) row-major in shared memory) by
//           mma_abt, the scores product (ldsm_x4 on A with ldsm_a_addr, on B with
//           ldsm_b_addr), then O = S . M (16 x 32) by acc_to_a and mma_a_rows, the P.V
//           product (ldsm_x4_t with ldsm_a_addr); S and O read back through CuTe's C
//           layout.
// On a GPU (gpu suite) this checks the helpers' inline PTX against the hardware; under
// tests/emu (ptx_layouts_emulated), where tests/emu/emu_ptx.h stands in for the PTX,
// it checks the emulation's reading of the manual against CuTe's. Exit 0 pass, 1 fail,
// 77 skipped (no GPU, or one older than sm_80).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/attention_tile.cuh"

#define PD 32                      // columns of X, Y, M: two 16-wide k-chunks of S
#define PLD (PD + ATT_PAD)         // shared row length, padded as the kernels pad
#define NS 64                      // rows of Y and M: one key tile (ATT_TILE)

// ---- the kernels (one warp) -------------------------------------------------------------

// c (32 lanes x 4) = a (32 x 4 registers) . b (32 x 2), registers as the host laid them out
__global__ void __launch_bounds__(32) ptx_direct(const uint32_t *a, const uint32_t *b,
                                                 float *c) {
    const int lane = threadIdx.x;
    uint32_t ar[4];
    for (int i = 0; i < 4; i++) ar[i] = a[lane * 4 + i];
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    mma_bf16(acc, ar, b[lane * 2], b[lane * 2 + 1]);
    for (int i = 0; i < 4; i++) c[lane * 4 + i] = acc[i];
}

// x (16, PD), y (NS, PD), m (NS, PD) row-major; s (32 lanes x 8 n-tiles x 4): the lanes'
// accumulators of X . Y^T; o (32 x PD/8 x 4): those of bf16(S) . M
__global__ void __launch_bounds__(32) ptx_tiles(const bf16 *x, const bf16 *y, const bf16 *m,
                                                float *s, float *o) {
    extern __shared__ __align__(16) bf16 sh[];
    bf16 *sx = sh, *sy = sh + 16 * PLD, *sm = sh + (16 + NS) * PLD;
    const int lane = threadIdx.x;
    for (int e = lane; e < 16 * PD; e += 32) sx[(e / PD) * PLD + e % PD] = x[e];
    for (int e = lane; e < NS * PD; e += 32) {
        sy[(e / PD) * PLD + e % PD] = y[e];
        sm[(e / PD) * PLD + e % PD] = m[e];
    }
    __syncthreads();
    float acc[NS / 8][4];
    mma_abt<PD>(acc, sx, sy, 0, lane);
    for (int i = 0; i < NS / 8; i++)
        for (int e = 0; e < 4; e++) s[(lane * (NS / 8) + i) * 4 + e] = acc[i][e];
    float out[PD / 8][4];
    for (int i = 0; i < PD / 8; i++) out[i][0] = out[i][1] = out[i][2] = out[i][3] = 0.0f;
    for (int kc = 0; kc < NS / 16; kc++) {
        uint32_t a[4];
        acc_to_a(a, acc, kc);
        mma_a_rows<PD>(out, a, sm, PLD, kc * 16, lane);
    }
    for (int i = 0; i < PD / 8; i++)
        for (int e = 0; e < 4; e++) o[(lane * (PD / 8) + i) * 4 + e] = out[i][e];
}

// ---- CuTe's layouts (thread, value) -> element ------------------------------------------
// From MMA_Traits<SM80_16x8x16_F32BF16BF16F32_TN> (cute/atom/mma_traits_sm80.hpp): each
// maps (thread, value) to a column-major index of the operand, thread = (4, 8) with
// strides (32, 1) [A, C] or (16, 1) [B], i.e. lane % 4 and lane / 4:
//   A (M16 x K16): values (2, 2, 2) strides (16, 8, 128)  -> m = idx % 16, k = idx / 16
//   B (N8 x K16):  values (2, 2)    strides (8, 64)       -> n = idx % 8,  k = idx / 8
//   C (M16 x N8):  values (2, 2)    strides (16, 8)       -> m = idx % 16, n = idx / 16
// Value v of a thread's fragment is half v % 2 (low half first) of register v / 2.
static void cute_a(int lane, int v, int *mi, int *ki) {
    int idx = 32 * (lane % 4) + lane / 4 + 16 * (v & 1) + 8 * ((v >> 1) & 1) + 128 * (v >> 2);
    *mi = idx % 16;
    *ki = idx / 16;
}
static void cute_b(int lane, int v, int *ni, int *ki) {
    int idx = 16 * (lane % 4) + lane / 4 + 8 * (v & 1) + 64 * (v >> 1);
    *ni = idx % 8;
    *ki = idx / 8;
}
static void cute_c(int lane, int v, int *mi, int *ni) {
    int idx = 32 * (lane % 4) + lane / 4 + 16 * (v & 1) + 8 * (v >> 1);
    *mi = idx % 16;
    *ni = idx / 16;
}

// ---- host -------------------------------------------------------------------------------

static int failed, passed;

static uint16_t bf16_bits(int v) {   // a small integer, exact in bf16
    float f = (float)v;
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

static void check(const char *what, int bad, int total) {
    printf("%s %s: %d of %d elements differ\n", bad ? "FAIL" : "ok  ", what, bad, total);
    if (bad) failed++;
    else passed++;
}

#define CK(call)                                                                          \
    do {                                                                                  \
        cudaError_t e_ = (call);                                                          \
        if (e_ != cudaSuccess) {                                                          \
            fprintf(stderr, "test_ptx_layouts: %s: %s\n", #call, cudaGetErrorString(e_)); \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

static uint32_t lcg = 12345u;
static int small(int r) {            // uniform in [-r, r]
    lcg = lcg * 1664525u + 1013904223u;
    return (int)((lcg >> 16) % (uint32_t)(2 * r + 1)) - r;
}

static void test_direct(void) {
    int A[16][16], B[16][8];        // B as (k, n)
    for (int i = 0; i < 16; i++)
        for (int k = 0; k < 16; k++) A[i][k] = small(3);
    for (int k = 0; k < 16; k++)
        for (int n = 0; n < 8; n++) B[k][n] = small(3);
    uint32_t ha[32 * 4] = {0}, hb[32 * 2] = {0};
    for (int lane = 0; lane < 32; lane++) {
        for (int v = 0; v < 8; v++) {
            int mi, ki;
            cute_a(lane, v, &mi, &ki);
            ha[lane * 4 + v / 2] |= (uint32_t)bf16_bits(A[mi][ki]) << (16 * (v % 2));
        }
        for (int v = 0; v < 4; v++) {
            int ni, ki;
            cute_b(lane, v, &ni, &ki);
            hb[lane * 2 + v / 2] |= (uint32_t)bf16_bits(B[ki][ni]) << (16 * (v % 2));
        }
    }
    uint32_t *da, *db;
    float *dc, hc[32 * 4];
    CK(cudaMalloc((void **)&da, sizeof ha));
    CK(cudaMalloc((void **)&db, sizeof hb));
    CK(cudaMalloc((void **)&dc, sizeof hc));
    CK(cudaMemcpy(da, ha, sizeof ha, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(db, hb, sizeof hb, cudaMemcpyHostToDevice));
    ptx_direct<<<1, 32>>>(da, db, dc);
    CK(cudaGetLastError());
    CK(cudaMemcpy(hc, dc, sizeof hc, cudaMemcpyDeviceToHost));
    int bad = 0, seen[16][8] = {{0}};
    for (int lane = 0; lane < 32; lane++) {
        for (int v = 0; v < 4; v++) {
            int mi, ni, want = 0;
            cute_c(lane, v, &mi, &ni);
            for (int k = 0; k < 16; k++) want += A[mi][k] * B[k][ni];
            seen[mi][ni]++;
            if (hc[lane * 4 + v] != (float)want) bad++;
        }
    }
    for (int i = 0; i < 16; i++)
        for (int n = 0; n < 8; n++) bad += seen[i][n] != 1;   // C's layout covers D once
    check("mma_bf16 m16n8k16 with CuTe's A, B and C layouts", bad, 16 * 8);
    CK(cudaFree(da));
    CK(cudaFree(db));
    CK(cudaFree(dc));
}

// Elements of a warp's accumulators (32 lanes x nt n-tiles x 4, n-tile t holding columns
// 8t..8t+7) that differ from want (16, ld) row-major, read through CuTe's C layout.
static int tile_mismatches(const float *got, int nt, const int *want, int ld) {
    int bad = 0;
    for (int lane = 0; lane < 32; lane++)
        for (int t = 0; t < nt; t++)
            for (int v = 0; v < 4; v++) {
                int mi, ni;
                cute_c(lane, v, &mi, &ni);
                if (got[(lane * nt + t) * 4 + v] != (float)want[mi * ld + 8 * t + ni]) bad++;
            }
    return bad;
}

static void test_tiles(void) {
    static int X[16][PD], Y[NS][PD], M[NS][PD];
    static uint16_t hx[16 * PD], hy[NS * PD], hm[NS * PD];
    for (int i = 0; i < 16; i++)
        for (int d = 0; d < PD; d++) hx[i * PD + d] = bf16_bits(X[i][d] = small(2));
    for (int j = 0; j < NS; j++)
        for (int d = 0; d < PD; d++) {
            hy[j * PD + d] = bf16_bits(Y[j][d] = small(2));
            hm[j * PD + d] = bf16_bits(M[j][d] = small(2));
        }
    // S = X . Y^T: |S| <= 4 PD = 128, an integer exact in bf16 (8 bits), so acc_to_a's
    // rounding keeps it; O = S . M: |O| <= 256 NS, exact in fp32
    static int S[16][NS], O[16][PD];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < NS; j++) {
            S[i][j] = 0;
            for (int d = 0; d < PD; d++) S[i][j] += X[i][d] * Y[j][d];
        }
    for (int i = 0; i < 16; i++)
        for (int d = 0; d < PD; d++) {
            O[i][d] = 0;
            for (int j = 0; j < NS; j++) O[i][d] += S[i][j] * M[j][d];
        }
    bf16 *dx, *dy, *dm;
    float *ds, *dout;
    static float hs[32 * (NS / 8) * 4], ho[32 * (PD / 8) * 4];
    CK(cudaMalloc((void **)&dx, sizeof hx));
    CK(cudaMalloc((void **)&dy, sizeof hy));
    CK(cudaMalloc((void **)&dm, sizeof hm));
    CK(cudaMalloc((void **)&ds, sizeof hs));
    CK(cudaMalloc((void **)&dout, sizeof ho));
    CK(cudaMemcpy(dx, hx, sizeof hx, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dy, hy, sizeof hy, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dm, hm, sizeof hm, cudaMemcpyHostToDevice));
    const size_t smem = (size_t)(16 + 2 * NS) * PLD * sizeof(bf16);
    ptx_tiles<<<1, 32, smem>>>(dx, dy, dm, ds, dout);
    CK(cudaGetLastError());
    CK(cudaMemcpy(hs, ds, sizeof hs, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(ho, dout, sizeof ho, cudaMemcpyDeviceToHost));
    check("mma_abt (ldsm_x4, ldsm_a_addr, ldsm_b_addr): S = X Y^T",
          tile_mismatches(hs, NS / 8, &S[0][0], NS), 16 * NS);
    check("acc_to_a + mma_a_rows (ldsm_x4_t, ldsm_a_addr): O = S M",
          tile_mismatches(ho, PD / 8, &O[0][0], PD), 16 * PD);
    CK(cudaFree(dx));
    CK(cudaFree(dy));
    CK(cudaFree(dm));
    CK(cudaFree(ds));
    CK(cudaFree(dout));
}

int main(void) {
    int n = 0, major = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("test_ptx_layouts: skipped: the CUDA runtime sees no GPU\n");
        return 77;
    }
    CK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
    if (major < 8) {
        printf("test_ptx_layouts: skipped: bf16 mma.sync needs sm_80 or newer\n");
        return 77;
    }
    test_direct();
    test_tiles();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
