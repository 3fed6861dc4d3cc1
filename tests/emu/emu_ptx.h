// tests/emu/emu_ptx.h: host versions of the PTX helpers of kernels/cuda/attention.cu
// (cp.async, ldmatrix, mma.sync), for the emulation of tests/emu/emu_cuda.h. The
// register layouts are the PTX ISA manual's (sections "warp-level matrix load
// instruction: ldmatrix" and "matrix fragments for mma.m16n8k16 with floating point
// type"), written from the manual, not from the kernel's comments. For lane l,
// g = l / 4 and t = l % 4:
//   ldmatrix .m8n8.x4 .b16: lanes 8i..8i+7 give the row addresses of matrix i; lane l
//     gets, in register i, row g of matrix i, columns 2t and 2t+1 (low half first);
//     with .trans, the same of the transposed matrix: rows 2t and 2t+1, column g.
//   mma .m16n8k16 .row.col, A 16x16 (4 registers of 2 bf16), B 16x8 (2 registers),
//     C/D 16x8 fp32 (4 floats): a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 =
//     A[g][2t+8..], a3 = A[g+8][2t+8..]; b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g];
//     c0, c1 = C[g][2t], C[g][2t+1]; c2, c3 = C[g+8][2t], C[g+8][2t+1].
// The mma layouts agree with CuTe's MMA_Traits<SM80_16x8x16_F32BF16BF16F32_TN>, a
// statement of them independent of the manual's figures: A ((4,8),(2,2,2)) : ((32,1),
// (16,8,128)), B ((4,8),(2,2)) : ((16,1),(8,64)), C ((4,8),(2,2)) : ((32,1),(16,8)),
// (thread, value) -> column-major index, thread = 4 g + t; tests/gpu/test_ptx_layouts.cu
// (ptx_layouts_emulated) checks this file, and the attention helpers on it, against them.
// The products are summed in fp32 in k order (the hardware's order and internal
// precision are unspecified; the difference is far below the tests' bf16 bounds).
// This file is included by the host C++ that tests/emu/cu2emu.py makes of attention.cu,
// after cuda_common.cuh (bf16).
#ifndef ANVIL_TESTS_EMU_EMU_PTX_H
#define ANVIL_TESTS_EMU_EMU_PTX_H

#include <string.h>

// cp.async with cp-size 4 or 16: src_bytes copied, the rest of the cp-size zero-filled,
// at once or at the wait (EMU_CP_ASYNC, emu_cuda.cc). The kernels wait for all groups,
// so a commit marks nothing the emulation needs.
static inline void cp_async16(void *dst, const void *src, int src_bytes) {
    emu::cp_async(dst, src, 16, src_bytes);
}
static inline void cp_async4(void *dst, const void *src, int src_bytes) {
    emu::cp_async(dst, src, 4, src_bytes);
}
static inline void cp_async_commit() {}
static inline void cp_async_wait_all() { emu::cp_async_wait_all(); }

static inline uint32_t emu_pack2(bf16 lo, bf16 hi) {
    return (uint32_t)lo.bits | ((uint32_t)hi.bits << 16);
}
static inline float emu_lo(uint32_t r) { return __bfloat162float(bf16{(uint16_t)(r & 0xffffu)}); }
static inline float emu_hi(uint32_t r) { return __bfloat162float(bf16{(uint16_t)(r >> 16)}); }

// ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16
static inline void emu_ldmatrix(uint32_t r[4], const bf16 *p, int trans) {
    if ((uintptr_t)p & 15u) emu::misaligned("ldmatrix row address", p, 16);
    emu::publish(&p, sizeof p);
    const int l = emu::lane(), g = l >> 2, t = l & 3;
    for (int i = 0; i < 4; i++) {
        const bf16 *rows[8];
        for (int j = 0; j < 8; j++) memcpy(&rows[j], emu::slot(8 * i + j), sizeof rows[j]);
        if (!trans) r[i] = emu_pack2(rows[g][2 * t], rows[g][2 * t + 1]);
        else r[i] = emu_pack2(rows[2 * t][g], rows[2 * t + 1][g]);
    }
    emu::warp_barrier();
}
static inline void ldsm_x4(uint32_t r[4], const bf16 *p) { emu_ldmatrix(r, p, 0); }
static inline void ldsm_x4_t(uint32_t r[4], const bf16 *p) { emu_ldmatrix(r, p, 1); }

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 with D = C (in place)
static inline void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    struct frag {
        uint32_t a[4], b[2];
        float c[4];
    } mine = {{a[0], a[1], a[2], a[3]}, {b0, b1}, {c[0], c[1], c[2], c[3]}};
    emu::publish(&mine, sizeof mine);
    const int l = emu::lane(), g = l >> 2, t = l & 3;
    float A[2][16];                       // rows g and g+8 of A
    float Bc[2][16];                      // columns 2t and 2t+1 of B
    for (int tt = 0; tt < 4; tt++) {
        frag fa;                          // lane of group g holds A's rows g, g+8
        memcpy(&fa, emu::slot(4 * g + tt), sizeof fa);
        A[0][2 * tt] = emu_lo(fa.a[0]);
        A[0][2 * tt + 1] = emu_hi(fa.a[0]);
        A[1][2 * tt] = emu_lo(fa.a[1]);
        A[1][2 * tt + 1] = emu_hi(fa.a[1]);
        A[0][2 * tt + 8] = emu_lo(fa.a[2]);
        A[0][2 * tt + 9] = emu_hi(fa.a[2]);
        A[1][2 * tt + 8] = emu_lo(fa.a[3]);
        A[1][2 * tt + 9] = emu_hi(fa.a[3]);
        for (int n = 0; n < 2; n++) {     // lanes of group 2t+n hold B's column 2t+n
            frag fb;
            memcpy(&fb, emu::slot(4 * (2 * t + n) + tt), sizeof fb);
            Bc[n][2 * tt] = emu_lo(fb.b[0]);
            Bc[n][2 * tt + 1] = emu_hi(fb.b[0]);
            Bc[n][2 * tt + 8] = emu_lo(fb.b[1]);
            Bc[n][2 * tt + 9] = emu_hi(fb.b[1]);
        }
    }
    emu::warp_barrier();
    for (int i = 0; i < 4; i++) {
        const int row = i >> 1, col = i & 1;
        float d = c[i];
        for (int k = 0; k < 16; k++) d += A[row][k] * Bc[col][k];
        c[i] = d;
    }
}

#endif
