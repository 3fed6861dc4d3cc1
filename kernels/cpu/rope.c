// kernels/cpu/rope.c: rotary position embeddings (Llama), fp32 cpu, used by attention.c.
//
// RoPE is not an op of its own: attention_forward / _backward take the cos/sin tables
// and rotate q and k on their way into the scores (kernels/ops.h), so on the GPU no
// rotated copy goes through memory. The cpu reference keeps its rotated copies in the
// attention state instead; these are the rotations it uses.
//
// Hugging Face "rotate_half" layout: within each head, element i (i < HS/2) and element
// i + HS/2 form a pair rotated by the angle t * inv_freq[i], whose cos/sin come from the
// tables of rope_tables_fill (kernels/rope_tables.c):
//   forward:  y1 = x1 cos - x2 sin,   y2 = x2 cos + x1 sin
// The rotation is orthogonal, so the backward is its transpose, a rotation by -angle:
//   backward: d1 = dy1 cos + dy2 sin, d2 = dy2 cos - dy1 sin
#include "kernels/cpu/cpu_ops.h"

void cpu_rope_rotate(float *dst, const float *src, size_t src_ld, const float *cos_tab,
                     const float *sin_tab, int B, int T, int H, int HS, float sign) {
    // dst (B,T,H,HS); src: H heads of HS at each position, positions src_ld apart;
    // cos_tab, sin_tab (maxT, HS/2)
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const size_t bt = (size_t)b * T + t;
            for (int h = 0; h < H; h++)
                cpu_rope_row(dst + (bt * H + h) * HS, src + bt * src_ld + (size_t)h * HS,
                             cos_tab, sin_tab, t, HS, sign);
        }
    }
}

void cpu_rope_row(float *dst, const float *src, const float *cos_tab, const float *sin_tab,
                  int t, int HS, float sign) {
    // dst, src (HS), may alias; the row sits at position t
    int half = HS / 2;
    const float *cos_t = cos_tab + (size_t)t * half;      // (HS/2)
    const float *sin_t = sin_tab + (size_t)t * half;      // (HS/2)
    for (int i = 0; i < half; i++) {
        float c = cos_t[i], s = sign * sin_t[i];
        float a = src[i], d = src[i + half];
        dst[i] = a * c - d * s;
        dst[i + half] = d * c + a * s;
    }
}
